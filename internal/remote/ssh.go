package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// Default timeouts of SSH.
const (
	DefaultConnectTimeout = 10 * time.Second
	DefaultCommandTimeout = 2 * time.Minute
)

// SSH is the Runner of the system ssh and scp binaries. Host keys are always checked
// (StrictHostKeyChecking=yes): an unknown or changed key is an error, never a prompt.
type SSH struct {
	// SSH and SCP are the binaries; default "ssh" and "scp" on PATH.
	SSH, SCP string
	// KnownHostsFile replaces the user's known_hosts (UserKnownHostsFile); empty keeps ssh's default.
	KnownHostsFile string
	// OnlyKnownHostsFile makes KnownHostsFile the only source of host keys: no global known_hosts, no
	// KnownHostsCommand, and the host looked up under its address whatever its port or the ssh config's
	// HostKeyAlias (a key pinned for one connection, such as the one an installer reported).
	OnlyKnownHostsFile bool
	// KnownHostsCommand is a program printing known_hosts lines that ssh accepts as well as its known_hosts
	// files (ssh_config KnownHostsCommand, OpenSSH 8.5 or later; WriteKnownHostsCommand makes one): nix8sd's
	// members' host keys from its database. Unlike another UserKnownHostsFile it adds keys without replacing
	// the files an ssh config names, and it is one word, so it survives NIX_SSHOPTS's split on spaces. New keys
	// are then never recorded (UpdateHostKeys=no). Ignored with OnlyKnownHostsFile.
	KnownHostsCommand string
	// ConfigFile is passed as ssh -F; empty keeps ~/.ssh/config, "none" ignores every config file.
	ConfigFile string
	// ConnectTimeout bounds connecting; default DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// CommandTimeout bounds each Run and Copy; default DefaultCommandTimeout.
	CommandTimeout time.Duration
}

// Options are the ssh -o options and flags every connection to host gets, without the destination.
// Interactive uses (nix8s ssh) leave out BatchMode.
func (s *SSH) Options(host Host, batch bool) []string {
	ct := s.ConnectTimeout
	if ct <= 0 {
		ct = DefaultConnectTimeout
	}
	var args []string
	if s.ConfigFile != "" {
		args = append(args, "-F", s.ConfigFile)
	}
	if batch {
		args = append(args, "-o", "BatchMode=yes")
	}
	args = append(args,
		"-o", "StrictHostKeyChecking=yes",
		"-o", fmt.Sprintf("ConnectTimeout=%d", int((ct+time.Second-1)/time.Second)),
		"-o", "User="+host.user(),
		"-o", "Port="+itoa(host.port()),
	)
	if s.KnownHostsFile != "" {
		args = append(args, "-o", "UserKnownHostsFile="+s.KnownHostsFile)
		if s.OnlyKnownHostsFile {
			args = append(args, "-o", "GlobalKnownHostsFile=/dev/null", "-o", "KnownHostsCommand=none",
				"-o", "HostKeyAlias="+host.Addr, "-o", "UpdateHostKeys=no")
		}
	}
	if s.KnownHostsCommand != "" && !(s.KnownHostsFile != "" && s.OnlyKnownHostsFile) {
		args = append(args, "-o", "KnownHostsCommand="+s.KnownHostsCommand, "-o", "UpdateHostKeys=no")
	}
	if host.KeyFile != "" {
		args = append(args, "-o", "IdentitiesOnly=yes", "-i", host.KeyFile)
	}
	return args
}

// HostKeyOptions are the ssh options that decide how host keys are checked, for a program that runs ssh
// itself (nixos-anywhere): the config file, StrictHostKeyChecking=yes, the known_hosts files (KnownHostsFile,
// else userFiles: the user's own, from UserKnownHostsFiles), KnownHostsCommand and, with OnlyKnownHostsFile,
// no other source of keys. UpdateHostKeys=no: the program's connections add no keys to the files.
func (s *SSH) HostKeyOptions(host Host, userFiles []string) []string {
	var args []string
	if s.ConfigFile != "" {
		args = append(args, "-F", s.ConfigFile)
	}
	args = append(args, "-o", "StrictHostKeyChecking=yes")
	files := userFiles
	if s.KnownHostsFile != "" {
		files = []string{s.KnownHostsFile}
	}
	if len(files) > 0 {
		args = append(args, "-o", "UserKnownHostsFile="+strings.Join(files, " "))
	}
	if s.KnownHostsFile != "" && s.OnlyKnownHostsFile {
		args = append(args, "-o", "GlobalKnownHostsFile=/dev/null", "-o", "KnownHostsCommand=none", "-o", "HostKeyAlias="+host.Addr)
	} else if s.KnownHostsCommand != "" {
		args = append(args, "-o", "KnownHostsCommand="+s.KnownHostsCommand)
	}
	return append(args, "-o", "UpdateHostKeys=no")
}

// UserKnownHostsFiles are the known_hosts files ssh checks host's key against besides the global ones:
// KnownHostsFile, or the UserKnownHostsFile that the ssh config gives for host (ssh -G; by default
// ~/.ssh/known_hosts and ~/.ssh/known_hosts2). The first is where new keys of host are recorded.
func (s *SSH) UserKnownHostsFiles(ctx context.Context, host Host) ([]string, error) {
	if s.KnownHostsFile != "" {
		return []string{s.KnownHostsFile}, nil
	}
	var args []string
	if s.ConfigFile != "" {
		args = append(args, "-F", s.ConfigFile)
	}
	args = append(args, "-G", "-o", "User="+host.user(), "-o", "Port="+itoa(host.port()), "--", host.Addr)
	cmd := exec.CommandContext(ctx, s.Binary(), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("asking ssh -G for the known_hosts files of %s: %v: %s", host, err, lastLine(stderr.String()))
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "userknownhostsfile "); ok {
			if f := strings.Fields(v); len(f) > 0 && f[0] != "none" {
				return f, nil
			}
		}
	}
	return nil, fmt.Errorf("ssh -G names no known_hosts file for %s (UserKnownHostsFile none); pass --known-hosts FILE", host)
}

// Command is the ssh argv (without the binary) that runs cmd on host; with an empty cmd, a login shell.
func (s *SSH) Command(host Host, batch bool, cmd string) []string {
	args := s.Options(host, batch)
	args = append(args, "-o", "LogLevel=ERROR", "--", host.Addr)
	if cmd != "" {
		args = append(args, cmd)
	}
	return args
}

// Binary is the ssh binary to run.
func (s *SSH) Binary() string {
	if s.SSH == "" {
		return "ssh"
	}
	return s.SSH
}

func (s *SSH) timeout() time.Duration {
	if s.CommandTimeout <= 0 {
		return DefaultCommandTimeout
	}
	return s.CommandTimeout
}

// Run implements Runner.
func (s *SSH) Run(parent context.Context, host Host, cmd string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(parent, s.timeout())
	defer cancel()
	c := exec.CommandContext(ctx, s.Binary(), s.Command(host, true, cmd)...)
	c.WaitDelay = 2 * time.Second
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	if err := s.classify(parent, ctx, host, cmd, err, stderr.String()); err != nil {
		return stdout.Bytes(), err
	}
	return stdout.Bytes(), nil
}

// Copy implements Runner with scp.
func (s *SSH) Copy(parent context.Context, host Host, src, dst string) error {
	ctx, cancel := context.WithTimeout(parent, s.timeout())
	defer cancel()
	scp := s.SCP
	if scp == "" {
		scp = "scp"
	}
	args := append(s.Options(host, true), "-q", "--", src, host.Addr+":"+dst)
	if strings.Contains(host.Addr, ":") {
		args[len(args)-1] = "[" + host.Addr + "]:" + dst
	}
	c := exec.CommandContext(ctx, scp, args...)
	c.WaitDelay = 2 * time.Second
	var stderr bytes.Buffer
	c.Stderr = &stderr
	return s.classify(parent, ctx, host, "scp "+src+" "+dst, c.Run(), stderr.String())
}

// classify turns how ssh ended into nix8s's errors: a timeout, an unreachable host or a failed command.
// parent is the caller's context, ctx the one bounded by CommandTimeout.
func (s *SSH) classify(parent, ctx context.Context, host Host, cmd string, err error, stderr string) error {
	if err == nil {
		return nil
	}
	if parent.Err() != nil {
		return fmt.Errorf("%s: %q: %w", host, cmd, parent.Err())
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%s: %q timed out after %s", host, cmd, s.timeout())
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %q: %w", host, cmd, ctx.Err())
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return fmt.Errorf("running ssh for %s: %w", host, err)
	}
	// ssh exits 255 for its own failures (connecting, host key, authentication); a remote command exiting 255
	// is rare enough to be reported the same way.
	if exit.ExitCode() == 255 {
		detail := lastLine(stderr)
		if detail == "" {
			detail = "ssh exited with code 255"
		}
		return &UnreachableError{Host: host.String(), Addr: host.Addr, Detail: detail}
	}
	return &ExitError{Host: host.String(), Cmd: cmd, Code: exit.ExitCode(), Stderr: stderr}
}
