package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/nix8s/nix8s/internal/rollout"
)

type rolloutOptions struct {
	cluster        clusterOptions
	all            bool
	dryRun         bool
	maxUnavailable int
	rollback       bool
	force          bool
	kubeconfig     string
	context        string
	fromVersion    string
	flake          string
	json           bool
	drainTimeout   time.Duration
	readyTimeout   time.Duration
	switchTimeout  time.Duration
	nixosRebuild   string
}

func newRolloutCommand(a *app) *command {
	var o rolloutOptions
	fs := newFlagSet("rollout")
	fs.BoolVar(&o.all, "all", false, "roll out every member of the cluster")
	fs.BoolVar(&o.dryRun, "dry-run", false, "print the steps, touch no machine and no node")
	fs.IntVar(&o.maxUnavailable, "max-unavailable", 1, "take at most `N` agents out of service at once (servers always go one at a time)")
	fs.BoolVar(&o.rollback, "rollback", false, "switch a member that failed after its switch back to its previous generation")
	fs.BoolVar(&o.force, "force", false, "allow downgrading k3s")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "reach the API server with kubeconfig `FILE` (default $KUBECONFIG or ~/.kube/config)")
	fs.StringVar(&o.context, "context", "", "use kubeconfig context `NAME` (default: the one named after the cluster, else the current one)")
	fs.StringVar(&o.fromVersion, "from-version", "", "the k3s `VERSION` the cluster runs now (default: the nodes' kubelet versions)")
	fs.StringVar(&o.flake, "flake", ".", "the flake `REF` with nixosConfigurations.<cluster>-<member>")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", rollout.DefaultDrainTimeout, "give up draining one node after `DURATION`")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", rollout.DefaultReadyTimeout, "give up waiting for a switched node to be Ready after `DURATION`")
	fs.DurationVar(&o.switchTimeout, "switch-timeout", time.Hour, "give up on one member's nixos-rebuild after `DURATION`")
	fs.StringVar(&o.nixosRebuild, "nixos-rebuild", "nixos-rebuild", "the nixos-rebuild `PROGRAM`")
	a.clusterFlags(fs, &o.cluster)
	return &command{
		name:    "rollout",
		summary: "Switch cluster members to their configurations node by node: cordon, drain, switch, wait Ready, uncordon.",
		usage:   "rollout --config FILE [flags] CLUSTER (MEMBER...|--all)",
		example: "  $ nix8s rollout --config cluster.yaml prod --all --dry-run\n  $ nix8s rollout --config cluster.yaml prod --all --max-unavailable 3 --rollback\n  $ nix8s rollout --config cluster.yaml prod agent-gpu-3 --json",
		flags:   fs,
		args:    -1,
		run:     func(ctx context.Context, args []string) error { return a.rollout(ctx, o, args) },
	}
}

func (a *app) rollout(ctx context.Context, o rolloutOptions, args []string) error {
	if err := memberArgs("rollout", "roll out", o.all, args); err != nil {
		return err
	}
	switch {
	case o.maxUnavailable < 1:
		return usageError{cmd: "rollout", msg: fmt.Sprintf("rollout: --max-unavailable must be at least 1, got %d", o.maxUnavailable)}
	}
	c, err := a.loadCluster(ctx, o.cluster, args[0])
	if err != nil {
		return err
	}
	if err := c.CheckMembers(args[1:]); err != nil {
		return err
	}
	events := a.progress()
	ro := rollout.Options{
		Members:        args[1:],
		MaxUnavailable: o.maxUnavailable,
		FromVersion:    o.fromVersion,
		Force:          o.force,
		Rollback:       o.rollback,
		DryRun:         o.dryRun,
		DrainTimeout:   o.drainTimeout,
		ReadyTimeout:   o.readyTimeout,
		Switcher: &rollout.NixosRebuild{Program: o.nixosRebuild, Flake: o.flake, SSH: o.cluster.ssh(),
			Progress: events, Timeout: o.switchTimeout},
		Progress: events,
	}
	if !o.dryRun {
		client, _, err := rollout.NewClient(c.Name, rollout.ClientOptions{Kubeconfig: o.kubeconfig, Context: o.context})
		if err != nil {
			return err
		}
		ro.Client = client
	}
	report, err := rollout.Rollout(ctx, c, ro)
	if report == nil {
		return err
	}
	return a.finish("rollout", c.Name, o.json, report, func() { writeRolloutReport(a, report) }, err)
}

func writeRolloutReport(a *app, r *rollout.Report) {
	if r.DryRun {
		for i, m := range r.Members {
			fmt.Fprintf(a.stdout, "%d. %s (%s, %s)\n", i+1, m.HostName, m.Role, m.IP)
			for _, s := range m.Steps {
				fmt.Fprintf(a.stdout, "  %s\n", s)
			}
		}
		return
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "MEMBER\tROLE\tSTATUS\tPHASE\tCORDONED\tROLLBACK\tTIME\n")
	for _, m := range r.Members {
		t := "-"
		if m.Seconds > 0 {
			t = (time.Duration(m.Seconds*10) * time.Second / 10).String()
		}
		cordoned := "-"
		if m.Cordoned {
			cordoned = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.HostName, m.Role, m.Status, dash(string(m.Phase)), cordoned, dash(m.Rollback), t)
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
