package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/provision"
	"github.com/nix8s/nix8s/internal/remote"
	"github.com/nix8s/nix8s/internal/secrets"
)

// clusterOptions are the flags of every command that acts on a cluster's machines: where the config is and
// how ssh reaches the members.
type clusterOptions struct {
	config     string
	knownHosts string
	sshConfig  string
	connect    time.Duration
}

func (a *app) clusterFlags(fs *flag.FlagSet, o *clusterOptions) {
	fs.StringVar(&o.config, "config", "", "the cluster config `FILE` (YAML or JSON; default $NIX8S_CONFIG)")
	fs.StringVar(&o.knownHosts, "known-hosts", "", "check host keys against `FILE` instead of ~/.ssh/known_hosts (install records the new systems' keys there)")
	fs.StringVar(&o.sshConfig, "ssh-config", "", "pass `FILE` to ssh -F instead of ~/.ssh/config (\"none\": no config)")
	fs.DurationVar(&o.connect, "connect-timeout", remote.DefaultConnectTimeout, "give up connecting over ssh after `DURATION`")
	a.evalFlags(fs)
}

// configFile is the config every command reads: --config FILE, else $NIX8S_CONFIG. validate and plan also take
// it as their one argument (pos), as they always did; naming it twice, differently, is a mistake.
func (a *app) configFile(cmd, flagValue string, pos []string) (string, error) {
	file := flagValue
	if len(pos) == 1 {
		if file != "" && file != pos[0] {
			return "", usageError{cmd: cmd, msg: fmt.Sprintf("two configs given: --config %s and %s; pass one", file, pos[0])}
		}
		file = pos[0]
	}
	if file == "" {
		file = a.getenv("NIX8S_CONFIG")
	}
	if file == "" {
		return "", &core.HintError{
			Err:  errors.New("no config given"),
			Hint: "pass --config FILE (the cluster config as YAML or JSON) or set NIX8S_CONFIG",
		}
	}
	return file, nil
}

func (o clusterOptions) ssh() *remote.SSH {
	return &remote.SSH{KnownHostsFile: o.knownHosts, ConfigFile: o.sshConfig, ConnectTimeout: o.connect}
}

// loadCluster evaluates the config through the core and returns the plan of one cluster (each member with
// its ssh endpoint).
func (a *app) loadCluster(ctx context.Context, o clusterOptions, name string) (core.Cluster, error) {
	file, err := a.configFile("", o.config, nil)
	if err != nil {
		return core.Cluster{}, err
	}
	cfg, err := core.LoadFile(file)
	if err != nil {
		return core.Cluster{}, err
	}
	ev, err := a.evaluator()
	if err != nil {
		return core.Cluster{}, err
	}
	p, err := ev.Plan(ctx, cfg)
	var inv *core.InvalidError
	if errors.As(err, &inv) {
		printProblems(a.stderr, "error", inv.Report.Errors)
		return core.Cluster{}, &core.HintError{
			Err:  fmt.Errorf("%s: %s", file, count(len(inv.Report.Errors), "error")),
			Hint: "fix the errors above; 'nix8s validate --config " + file + "' lists them again",
		}
	}
	if err != nil {
		return core.Cluster{}, err
	}
	c, ok := p.Plan.Clusters[name]
	if !ok {
		return core.Cluster{}, fmt.Errorf("%s: no cluster named %q; clusters: %s", file, name, clusterNames(p.Plan))
	}
	// Lima members are reached on ports of 127.0.0.1 their VMs were given (lima.go).
	if err := a.limaEndpoints(ctx, &c); err != nil {
		return core.Cluster{}, err
	}
	return c, nil
}

type installOptions struct {
	cluster       clusterOptions
	all           bool
	dryRun        bool
	parallel      int
	reinstall     bool
	flake         string
	json          bool
	secretsDir    string
	noSecrets     bool
	extraFiles    string
	waitTimeout   time.Duration
	installTime   time.Duration
	nixosAnywhere string
}

func newInstallCommand(a *app) *command {
	var o installOptions
	fs := newFlagSet("install")
	fs.BoolVar(&o.all, "all", false, "install every member of the cluster")
	fs.BoolVar(&o.dryRun, "dry-run", false, "print the steps, touch no machine")
	fs.IntVar(&o.parallel, "parallel", provision.DefaultParallel, "install at most `N` agents at once")
	fs.BoolVar(&o.reinstall, "reinstall", false, "install members that already run NixOS as themselves (wipes them)")
	fs.StringVar(&o.flake, "flake", ".", "the flake `REF` with nixosConfigurations.<cluster>-<member>")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON")
	fs.StringVar(&o.secretsDir, "secrets", "secrets", "read the tokens from `DIR`/<cluster>.yaml (nix8s gen-secrets)")
	fs.BoolVar(&o.noSecrets, "no-secrets", false, "deliver no token files (they reach the nodes another way, such as sops-nix)")
	fs.StringVar(&o.extraFiles, "extra-files", "", "also deliver `DIR`/<cluster>-<member>/ onto each member's / (an age key, ...)")
	fs.DurationVar(&o.waitTimeout, "wait-timeout", provision.DefaultWaitTimeout, "give up waiting for a server to be ready after `DURATION`")
	fs.DurationVar(&o.installTime, "install-timeout", time.Hour, "give up on one member's nixos-anywhere after `DURATION`")
	fs.StringVar(&o.nixosAnywhere, "nixos-anywhere", "nixos-anywhere", "the nixos-anywhere `PROGRAM`")
	a.clusterFlags(fs, &o.cluster)
	return &command{
		name:    "install",
		summary: "Install cluster members with nixos-anywhere, in the plan's provision waves.",
		usage:   "install --config FILE [flags] CLUSTER (MEMBER...|--all)",
		example: "  $ nix8s gen-secrets prod\n  $ nix8s install --config cluster.yaml prod --all --dry-run\n  $ nix8s install --config cluster.yaml prod --all --parallel 5\n  $ nix8s install --config cluster.yaml prod agent-gpu-3",
		flags:   fs,
		args:    -1,
		run:     func(ctx context.Context, args []string) error { return a.install(ctx, o, args) },
	}
}

func (a *app) install(ctx context.Context, o installOptions, args []string) error {
	if err := memberArgs("install", "install", o.all, args); err != nil {
		return err
	}
	if o.parallel < 1 {
		return usageError{cmd: "install", msg: fmt.Sprintf("install: --parallel must be at least 1, got %d", o.parallel)}
	}
	c, err := a.loadCluster(ctx, o.cluster, args[0])
	if err != nil {
		return err
	}
	if err := c.CheckMembers(args[1:]); err != nil {
		return err
	}
	var tokens *provision.Tokens
	if !o.noSecrets && !o.dryRun {
		t, err := secrets.Load(ctx, o.secretsDir, c.Name, "")
		if err != nil {
			return err
		}
		tokens = &t
	} else if !o.noSecrets {
		// A dry run shows which files would go where without reading (or decrypting) the secrets.
		tokens = &provision.Tokens{Token: "(token)", AgentToken: "(agentToken)"}
	}
	ssh := o.cluster.ssh()
	// The token files follow the install over ssh that accepts the installed system's new host key alone.
	events := a.progress()
	deliverer := &provision.Pinned{SSH: ssh, WaitTimeout: o.waitTimeout, KeyFrom: provision.InstalledKeyFrom, Record: true, Log: provision.Log(events)}
	report, err := provision.Install(ctx, c, provision.Options{
		Flake:       o.flake,
		Members:     args[1:],
		Parallel:    o.parallel,
		Reinstall:   o.reinstall,
		DryRun:      o.dryRun,
		Tokens:      tokens,
		JoinTokens:  &provision.JoinTokens{Runner: ssh, TTL: provision.DefaultJoinTokenTTL}, // agents: never the agent token
		ExtraFiles:  o.extraFiles,
		WaitTimeout: o.waitTimeout,
		Runner:      ssh,
		Installer:   &provision.NixosAnywhere{Program: o.nixosAnywhere, SSH: ssh, Progress: events, Timeout: o.installTime},
		Readiness:   provision.SSHReadiness{Runner: ssh},
		Deliverer:   deliverer,
		Progress:    events,
	})
	if report == nil {
		return err
	}
	return a.finish("install", c.Name, o.json, report, func() { writeInstallReport(a, report) }, err)
}

// finish prints an operation's report, as JSON or as the table write prints, and turns the operation's error
// into the command's.
func (a *app) finish(op, cluster string, asJSON bool, report any, write func(), err error) error {
	if asJSON {
		out, jerr := json.MarshalIndent(report, "", "  ")
		if jerr != nil {
			return jerr
		}
		fmt.Fprintf(a.stdout, "%s\n", out)
	} else {
		write()
	}
	if err != nil {
		return fmt.Errorf("%s of cluster %q stopped: %w", op, cluster, err)
	}
	return nil
}

func writeInstallReport(a *app, r *provision.Report) {
	if r.DryRun {
		for _, m := range r.Members {
			fmt.Fprintf(a.stdout, "wave %d: %s (%s)\n", m.Wave, m.HostName, m.Role)
			for _, s := range m.Steps {
				fmt.Fprintf(a.stdout, "  %s\n", s)
			}
		}
		return
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "MEMBER\tROLE\tWAVE\tSTATUS\tTIME\n")
	for _, m := range r.Members {
		t := "-"
		if m.Seconds > 0 {
			t = (time.Duration(m.Seconds*10) * time.Second / 10).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", m.HostName, m.Role, m.Wave, m.Status, t)
	}
	tw.Flush()
}

// memberArgs checks the CLUSTER (MEMBER...|--all) arguments that install and rollout share.
func memberArgs(cmd, verb string, all bool, args []string) error {
	switch {
	case len(args) == 0:
		return usageError{cmd: cmd, msg: cmd + ": missing CLUSTER"}
	case len(args) == 1 && !all:
		return usageError{cmd: cmd, msg: fmt.Sprintf("%s: name the members to %s, or pass --all", cmd, verb)}
	case len(args) > 1 && all:
		return usageError{cmd: cmd, msg: cmd + ": --all and member names exclude each other"}
	}
	return nil
}
