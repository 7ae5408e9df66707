package provision

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nix8s/nix8s/internal/progress"
	"github.com/nix8s/nix8s/internal/remote"
	"github.com/nix8s/nix8s/internal/toolrun"
)

// Step is one member to install.
type Step struct {
	Cluster  string
	Member   string
	HostName string // <c>-<m>, the nixosConfigurations attribute
	Role     string
	Host     remote.Host
	Flake    string // the flake; the attribute is HostName
	// Files go with the install (--extra-files): the installed system's host key and the extra files. The
	// token files are not among them: they follow over ssh pinned to that host key (Deliverer).
	Files []File
}

// Installer installs one member.
type Installer interface {
	Install(ctx context.Context, s Step) error
}

// NixosAnywhere is the Installer that runs nixos-anywhere with its host keys checked.
//
// nixos-anywhere (src/nixos-anywhere.sh) starts every ssh with `-o UserKnownHostsFile=/dev/null -o
// StrictHostKeyChecking=no` and appends --ssh-option after those, and OpenSSH takes the first value of each
// option, so no option given to nixos-anywhere turns checking back on (nix-community/nixos-anywhere#552).
// It runs `ssh` from PATH, the system's before its own (its package appends openssh to PATH, issue #62), and
// so does the Nix it copies the system with. NixosAnywhere therefore puts an ssh first on its PATH that
// runs the real ssh with SSH's host key options (remote.SSH.HostKeyOptions: StrictHostKeyChecking=yes, the
// known_hosts files) before nixos-anywhere's own: every connection it makes, to the existing system and
// to the kexec installer, must present a key those files hold. The options also go as --ssh-option, for a
// nixos-anywhere that puts them first. An install whose nixos-anywhere never ran that ssh is an error.
type NixosAnywhere struct {
	// Program is the nixos-anywhere binary; default "nixos-anywhere" on PATH.
	Program string
	// SSH says how host keys are checked: its KnownHostsFile (empty: the user's known_hosts files, as ssh -G
	// names them) and ConfigFile. nil means remote.SSH{}.
	SSH *remote.SSH
	// Progress gets each line of nixos-anywhere's output as an event (progress.Output); nil discards them.
	Progress progress.Reporter
	// Timeout bounds one install; 0 means no bound besides the context.
	Timeout time.Duration
}

// NixosAnywhereArgs is the argument list for step, with the extra files in dir and hostKeyOpts
// (remote.SSH.HostKeyOptions) as --ssh-option.
func NixosAnywhereArgs(s Step, dir string, hostKeyOpts []string) []string {
	args := []string{"--flake", s.Flake + "#" + s.HostName}
	if len(s.Files) > 0 {
		args = append(args, "--extra-files", dir)
	}
	args = append(args, "--target-host", s.Host.Target())
	if s.Host.Port != 0 && s.Host.Port != 22 {
		args = append(args, "-p", fmt.Sprint(s.Host.Port))
	}
	if s.Host.KeyFile != "" {
		args = append(args, "-i", s.Host.KeyFile)
	}
	for i := 0; i+1 < len(hostKeyOpts); i++ {
		if hostKeyOpts[i] == "-o" {
			args = append(args, "--ssh-option", hostKeyOpts[i+1])
			i++
		}
	}
	return args
}

// hostKeyFailure is what OpenSSH prints, last, when it refuses a host key (unknown, or changed, under
// StrictHostKeyChecking=yes).
const hostKeyFailure = "Host key verification failed."

// Install implements Installer.
func (n *NixosAnywhere) Install(ctx context.Context, s Step) error {
	ssh := n.SSH
	if ssh == nil {
		ssh = &remote.SSH{}
	}
	realSSH, err := exec.LookPath(ssh.Binary())
	if err != nil {
		return fmt.Errorf("%s not found on PATH: nix8s checks nixos-anywhere's host keys through the system ssh", ssh.Binary())
	}
	files, err := ssh.UserKnownHostsFiles(ctx, s.Host)
	if err != nil {
		return err
	}
	opts := ssh.HostKeyOptions(s.Host, files)
	dir, err := ExtraFiles(s.Files)
	if err != nil {
		return err
	}
	if dir != "" {
		defer os.RemoveAll(dir)
	}
	bin, err := os.MkdirTemp("", "nix8s-ssh-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(bin)
	used := filepath.Join(bin, "used")
	wrapper := "#!/bin/sh\n# nix8s: the host key options come first, so that nixos-anywhere's own (StrictHostKeyChecking=no) lose.\n" +
		": >>" + remote.Quote(used) + "\nexec " + remote.QuoteArgs(append([]string{realSSH}, opts...)...) + " \"$@\"\n"
	if err := writeExecutable(ctx, filepath.Join(bin, "ssh"), wrapper); err != nil {
		return err
	}

	// A refused host key stops nixos-anywhere at once: it would retry the connection forever (its
	// ssh-copy-id and post-kexec loops). After its reboot step it only waits for the machine to go away,
	// and the installed system answering with its new key is expected.
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var mu sync.Mutex // guards refused, kexec, rebooting: stdout and stderr are copied by two goroutines
	var refused, kexec string
	rebooting := false
	report := n.Progress
	if report == nil {
		report = progress.Discard
	}
	onLine := func(line string) {
		mu.Lock()
		switch {
		case strings.HasPrefix(line, "### Switching system into kexec"):
			kexec = line
		case strings.HasPrefix(line, "### Rebooting"):
			rebooting = true
		case !rebooting && refused == "" && strings.Contains(line, hostKeyFailure):
			refused = line
			stop()
		}
		mu.Unlock()
		report.Report(progress.Event{Time: time.Now(), Cluster: s.Cluster, Member: s.Member, Node: s.HostName,
			Phase: string(PhaseInstall), Status: progress.Output, Message: line})
	}
	prog := n.Program
	if prog == "" {
		prog = "nixos-anywhere"
	}
	// In a process group of its own, ended with the install (toolrun): no ssh or nix of an install that
	// stopped, or of a daemon that died, keeps working on the machine.
	cmd := exec.Command(prog, NixosAnywhereArgs(s, dir, opts)...)
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	err = toolrun.Exec(runCtx, toolrun.Tool{Name: "nixos-anywhere", Cmd: cmd, Timeout: n.Timeout, Line: onLine,
		Install: "nix run github:nix-community/nixos-anywhere, or pass --nixos-anywhere"})
	mu.Lock()
	refusedLine, kexecLine := refused, kexec
	mu.Unlock()
	if refusedLine != "" {
		where := "the existing system"
		after := "nothing was installed"
		if kexecLine != "" {
			where = "the kexec installer"
			after = "the machine runs the installer from RAM, its disks untouched (a reboot returns it to its old system); nixos-anywhere's kexec image keeps the old system's /etc/ssh/ssh_host_* keys, so another key means it had none there, or another machine answers"
		}
		return fmt.Errorf("ssh refused the host key of %s at %s (%s); nixos-anywhere stopped, nothing more was sent: %s; known hosts: %s",
			where, s.Host.Addr, hostKeyFailure, after, strings.Join(knownFiles(ssh, files), " "))
	}
	if err == nil {
		if _, serr := os.Stat(used); serr != nil {
			return fmt.Errorf("%s ran no ssh through nix8s's host key check (its ssh is not the first ssh on PATH), so its connections may not have been checked; the token files are not delivered", prog)
		}
		return nil
	}
	return err
}

func knownFiles(ssh *remote.SSH, user []string) []string {
	if ssh.KnownHostsFile != "" {
		return []string{ssh.KnownHostsFile}
	}
	return user
}

// ExtraFiles writes files into a new directory laid out as the node's root, for --extra-files. nixos-anywhere
// copies the directory tree onto the new system's /, modes included, so the root and the directories leading
// to a file get 0755 (like / and /var/lib), the file's own directory 0700 (0755 for /etc/ssh, sshd's, which
// also holds the system's ssh_config) and the file its Mode (0600 unless set). With no files the result is "".
func ExtraFiles(files []File) (string, error) {
	if len(files) == 0 {
		return "", nil
	}
	dir, err := os.MkdirTemp("", "nix8s-extra-files-*")
	if err != nil {
		return "", err
	}
	fail := func(err error) (string, error) {
		os.RemoveAll(dir)
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fail(err)
	}
	for _, f := range files {
		rel := strings.TrimPrefix(f.Path, "/")
		parent := filepath.Dir(rel)
		var walked string
		for _, part := range strings.Split(filepath.Dir(parent), string(filepath.Separator)) {
			if part == "." {
				continue
			}
			walked = filepath.Join(walked, part)
			if err := os.Mkdir(filepath.Join(dir, walked), 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return fail(err)
			}
		}
		if parent != "." {
			if err := os.Mkdir(filepath.Join(dir, parent), ownDirMode(parent)); err != nil && !errors.Is(err, os.ErrExist) {
				return fail(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, rel), []byte(f.Value), f.mode()); err != nil {
			return fail(err)
		}
		// WriteFile's mode passes through the umask.
		if err := os.Chmod(filepath.Join(dir, rel), f.mode()); err != nil {
			return fail(err)
		}
	}
	return dir, nil
}

// ownDirMode is the mode of the directory that holds a delivered file (rel: relative to /).
func ownDirMode(rel string) os.FileMode {
	if rel == "etc/ssh" {
		return 0o755
	}
	return 0o700
}

// writeExecutable writes a script that another program will find on PATH and run. A child process writes it:
// had this process opened it for writing, a child forked meanwhile by another goroutine (installs run in
// parallel) would hold that descriptor until its own exec, and an exec of the script in that window fails
// with ETXTBSY (golang/go#22315), which the shell's PATH search takes for "not here" and runs the next ssh on
// PATH: the unchecked one.
func writeExecutable(ctx context.Context, path, content string) error {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", `umask 077 && cat >"$1" && chmod 0755 "$1"`, "sh", path)
	cmd.Stdin = strings.NewReader(content)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("writing %s: %w: %s", path, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
}
