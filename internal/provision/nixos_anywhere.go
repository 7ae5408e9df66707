package provision

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nix8s/nix8s/internal/remote"
)

// Step is one member to install.
type Step struct {
	Member   string
	HostName string // <c>-<m>, the nixosConfigurations attribute
	Role     string
	Host     remote.Host
	Flake    string // the flake; the attribute is HostName
	Files    []File // delivered with --extra-files
}

// Installer installs one member.
type Installer interface {
	Install(ctx context.Context, s Step) error
}

// NixosAnywhere is the Installer that runs nixos-anywhere.
type NixosAnywhere struct {
	// Program is the nixos-anywhere binary; default "nixos-anywhere" on PATH.
	Program string
	// Output receives nixos-anywhere's output, each line prefixed with `[<c>-<m>] ` (stderr).
	Output io.Writer
	// Timeout bounds one install; 0 means no bound besides the context.
	Timeout time.Duration

	mu sync.Mutex // serialises lines of concurrent installs
}

// NixosAnywhereArgs is the argument list for step, with the extra files in dir.
func NixosAnywhereArgs(s Step, dir string) []string {
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
	return args
}

// Install implements Installer.
func (n *NixosAnywhere) Install(ctx context.Context, s Step) error {
	dir, err := ExtraFiles(s.Files)
	if err != nil {
		return err
	}
	if dir != "" {
		defer os.RemoveAll(dir)
	}
	if n.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.Timeout)
		defer cancel()
	}
	prog := n.Program
	if prog == "" {
		prog = "nixos-anywhere"
	}
	cmd := exec.CommandContext(ctx, prog, NixosAnywhereArgs(s, dir)...)
	cmd.WaitDelay = 5 * time.Second
	out := &prefixWriter{n: n, prefix: "[" + s.HostName + "] "}
	var tail bytes.Buffer
	cmd.Stdout = out
	cmd.Stderr = io.MultiWriter(out, &tail)
	err = cmd.Run()
	out.flush()
	if err == nil {
		return nil
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && n.Timeout > 0 {
		return fmt.Errorf("nixos-anywhere timed out after %s", n.Timeout)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if msg := lastLine(tail.String()); msg != "" {
			return fmt.Errorf("nixos-anywhere exited with code %d: %s", exit.ExitCode(), msg)
		}
		return fmt.Errorf("nixos-anywhere exited with code %d", exit.ExitCode())
	}
	if errors.Is(err, exec.ErrNotFound) {
		return fmt.Errorf("%s not found on PATH (nix run github:nix-community/nixos-anywhere, or pass --nixos-anywhere)", prog)
	}
	return err
}

// ExtraFiles writes files into a new directory laid out as the node's root, for --extra-files. nixos-anywhere
// copies the directory tree onto the new system's /, modes included, so the root and the directories leading
// to a file get 0755 (like / and /var/lib), the file's own directory 0700 and the file 0600. With no files
// the result is "".
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
			if err := os.Mkdir(filepath.Join(dir, parent), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
				return fail(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, rel), []byte(f.Value), 0o600); err != nil {
			return fail(err)
		}
	}
	return dir, nil
}

// prefixWriter writes whole lines with a prefix, so that concurrent installs do not interleave mid-line.
// It is nixos-anywhere's stdout and stderr at once, which exec copies from two goroutines.
type prefixWriter struct {
	n      *NixosAnywhere
	prefix string
	mu     sync.Mutex // guards buf
	buf    []byte
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.emit(w.buf[:i+1])
		w.buf = w.buf[i+1:]
	}
}

func (w *prefixWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit(append(w.buf, '\n'))
		w.buf = nil
	}
}

func (w *prefixWriter) emit(line []byte) {
	if w.n.Output == nil {
		return
	}
	w.n.mu.Lock()
	defer w.n.mu.Unlock()
	io.WriteString(w.n.Output, w.prefix)
	w.n.Output.Write(line)
}

func lastLine(s string) string {
	sc := bufio.NewScanner(strings.NewReader(s))
	var last string
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			last = l
		}
	}
	return last
}
