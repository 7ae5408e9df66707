package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"text/tabwriter"

	"github.com/nix8s/nix8s/internal/status"
)

type statusOptions struct {
	cluster clusterOptions
	flake   string
	json    bool
}

func newStatusCommand(a *app) *command {
	var o statusOptions
	fs := newFlagSet("status")
	fs.StringVar(&o.flake, "flake", "", "compare each member's system with the one the flake `REF` builds (evaluates it with nix)")
	fs.BoolVar(&o.json, "json", false, "print the status as JSON")
	a.clusterFlags(fs, &o.cluster)
	return &command{
		name:    "status",
		summary: "Show per member: reachable, current (and desired) system, k3s node Ready and version.",
		usage:   "status --config FILE [--flake REF] [--json] CLUSTER",
		example: "  $ nix8s status --config cluster.yaml --flake . prod",
		flags:   fs,
		args:    1,
		run:     func(ctx context.Context, args []string) error { return a.status(ctx, o, args[0]) },
	}
}

func (a *app) status(ctx context.Context, o statusOptions, name string) error {
	c, err := a.loadCluster(ctx, o.cluster, name)
	if err != nil {
		return err
	}
	var desired status.Desired
	if o.flake != "" {
		desired = nixToplevel(o.flake)
	}
	rep := status.Get(ctx, o.cluster.ssh(), c, desired)
	if o.json {
		out, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "%s\n", out)
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "MEMBER\tROLE\tIP\tREACHABLE\tSYSTEM\tREADY\tK3S\n")
	for _, m := range rep.Members {
		sys := short(m.Current)
		if m.UpToDate != nil && !*m.UpToDate {
			sys += " (want " + short(m.Desired) + ")"
		} else if m.UpToDate != nil {
			sys += " (up to date)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.HostName, m.Role, m.IP, yesNo(m.Reachable), orDash(sys), orDash(m.Ready), orDash(m.Version))
	}
	tw.Flush()
	fmt.Fprintf(a.stderr, "nix8s: nodes: %s\n", rep.Nodes)
	for _, m := range rep.Members {
		if m.Error != "" {
			fmt.Fprintf(a.stderr, "nix8s: %s: %s\n", m.HostName, m.Error)
		}
	}
	return nil
}

// nixToplevel evaluates the toplevel of nixosConfigurations.<host> in flake with nix (flakes enabled).
func nixToplevel(flake string) status.Desired {
	return func(ctx context.Context, host string) (string, error) {
		attr := flake + "#nixosConfigurations." + host + ".config.system.build.toplevel.outPath"
		cmd := exec.CommandContext(ctx, "nix", "--extra-experimental-features", "nix-command flakes", "eval", "--raw", attr)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				return "", fmt.Errorf("nix eval %s: %s", attr, strings.TrimSpace(stderr.String()))
			}
			return "", err
		}
		return strings.TrimSpace(stdout.String()), nil
	}
}

// short is a store path without its hash: /nix/store/<hash>-nixos-system-x -> nixos-system-x.
func short(p string) string {
	base := p[strings.LastIndex(p, "/")+1:]
	if len(base) > 33 && base[32] == '-' {
		return base[33:]
	}
	return base
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
