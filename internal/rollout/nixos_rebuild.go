package rollout

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/nix8s/nix8s/internal/remote"
	"github.com/nix8s/nix8s/internal/toolrun"
)

// NixosRebuild is the Switcher that runs `nixos-rebuild switch --flake <flake>#<c>-<m> --target-host
// <user>@<ip>` on this machine: it builds here and activates on the member over the system ssh, with the
// same options as every other nix8s ssh connection (passed in NIX_SSHOPTS: host keys checked, the user's
// config and agent).
type NixosRebuild struct {
	// Program is the nixos-rebuild binary; default "nixos-rebuild" on PATH.
	Program string
	// Flake holds nixosConfigurations.<c>-<m>; default ".".
	Flake string
	// SSH gives the ssh options (known hosts, config file, connect timeout).
	SSH *remote.SSH
	// Output receives nixos-rebuild's output, each line prefixed with `[<c>-<m>] ` (stderr).
	Output io.Writer
	// Timeout bounds one switch or rollback; 0 means no bound besides the context.
	Timeout time.Duration

	mu sync.Mutex // serialises lines of concurrent switches
}

// Args is nixos-rebuild's argument list for switching t (or rolling it back).
func (n *NixosRebuild) Args(t Target, rollback bool) []string {
	flake := n.Flake
	if flake == "" {
		flake = "."
	}
	args := []string{"switch", "--flake", flake + "#" + t.HostName}
	if rollback {
		args = append(args, "--rollback")
	}
	host := t.Host
	args = append(args, "--target-host", host.Target())
	if host.User != "" && host.User != "root" {
		args = append(args, "--use-remote-sudo")
	}
	return args
}

// sshOpts is NIX_SSHOPTS: nixos-rebuild splits it on spaces and hands it to every ssh it runs.
func (n *NixosRebuild) sshOpts(t Target) string {
	s := n.SSH
	if s == nil {
		s = &remote.SSH{}
	}
	return strings.Join(s.Options(t.Host, true), " ")
}

// Describe implements Describer.
func (n *NixosRebuild) Describe(t Target) string {
	return n.program() + " " + strings.Join(n.Args(t, false), " ")
}

func (n *NixosRebuild) program() string {
	if n.Program == "" {
		return "nixos-rebuild"
	}
	return n.Program
}

// Switch implements Switcher.
func (n *NixosRebuild) Switch(ctx context.Context, t Target) error {
	return n.run(ctx, t, false)
}

// Rollback implements Switcher: the member's previous system generation.
func (n *NixosRebuild) Rollback(ctx context.Context, t Target) error {
	return n.run(ctx, t, true)
}

func (n *NixosRebuild) run(ctx context.Context, t Target, rollback bool) error {
	if n.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.Timeout)
		defer cancel()
	}
	// In a process group of its own, ended with the switch (toolrun): its nix copies and ssh go with it.
	cmd := exec.Command(n.program(), n.Args(t, rollback)...)
	cmd.Env = append(os.Environ(), "NIX_SSHOPTS="+n.sshOpts(t))
	output := n.Output
	if output == nil {
		output = io.Discard
	}
	out := &lineWriter{emit: func(line string) {
		n.mu.Lock()
		defer n.mu.Unlock()
		fmt.Fprintf(output, "[%s] %s\n", t.HostName, line)
	}}
	var tail bytes.Buffer
	cmd.Stdout = out
	cmd.Stderr = io.MultiWriter(out, &tail)
	err := toolrun.Run(ctx, cmd, toolrun.DefaultGrace)
	out.flush()
	if err == nil {
		return nil
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && n.Timeout > 0 {
		return fmt.Errorf("nixos-rebuild timed out after %s", n.Timeout)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		lines := strings.Split(strings.TrimSpace(tail.String()), "\n")
		if msg := strings.TrimSpace(lines[len(lines)-1]); msg != "" {
			return fmt.Errorf("nixos-rebuild exited with code %d: %s", exit.ExitCode(), msg)
		}
		return fmt.Errorf("nixos-rebuild exited with code %d", exit.ExitCode())
	}
	if errors.Is(err, exec.ErrNotFound) {
		return fmt.Errorf("%s not found on PATH (nix run nixpkgs#nixos-rebuild, or pass --nixos-rebuild)", n.program())
	}
	return err
}
