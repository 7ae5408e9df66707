package rollout

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/nix8s/nix8s/internal/progress"
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
	// Progress gets each line of nixos-rebuild's output as an event (progress.Output); nil discards them.
	Progress progress.Reporter
	// Timeout bounds one switch or rollback; 0 means no bound besides the context.
	Timeout time.Duration
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
	// In a process group of its own, ended with the switch (toolrun): its nix copies and ssh go with it.
	cmd := exec.Command(n.program(), n.Args(t, rollback)...)
	cmd.Env = append(os.Environ(), "NIX_SSHOPTS="+n.sshOpts(t))
	phase := PhaseSwitch
	if rollback {
		phase = PhaseRollback
	}
	report := n.Progress
	if report == nil {
		report = progress.Discard
	}
	return toolrun.Exec(ctx, toolrun.Tool{
		Name:    "nixos-rebuild",
		Cmd:     cmd,
		Timeout: n.Timeout,
		Install: "nix run nixpkgs#nixos-rebuild, or pass --nixos-rebuild",
		Line: func(line string) {
			report.Report(progress.Event{Time: time.Now(), Cluster: t.Cluster, Member: t.Member, Node: t.HostName,
				Phase: string(phase), Status: progress.Output, Message: line})
		},
	})
}
