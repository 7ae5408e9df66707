package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/lima"
	"github.com/nix8s/nix8s/internal/provision"
	"github.com/nix8s/nix8s/internal/secrets"
	"github.com/nix8s/nix8s/internal/toolrun"
)

type limaOptions struct {
	cluster     clusterOptions
	flake       string
	limactl     string
	stateDir    string
	images      imageFlags
	secretsDir  string
	noSecrets   bool
	waitTimeout time.Duration
	delete      bool
	json        bool
}

// imageFlags is --image MEMBER=PATH, repeatable: a prebuilt image instead of building it from the flake.
type imageFlags map[string]string

func (f imageFlags) String() string { return "" }
func (f imageFlags) Set(v string) error {
	m, p, ok := strings.Cut(v, "=")
	if !ok || m == "" || p == "" {
		return fmt.Errorf("want MEMBER=PATH, got %q", v)
	}
	f[m] = p
	return nil
}

func newLimaCommand(a *app) *command {
	o := limaOptions{images: imageFlags{}}
	fs := newFlagSet("lima")
	fs.StringVar(&o.flake, "flake", ".", "up: build each member's image from nixosConfigurations.<cluster>-<member> of the flake `REF`")
	fs.Var(o.images, "image", "up: use the qcow2 image `MEMBER=PATH` instead of building it (repeatable)")
	fs.StringVar(&o.limactl, "limactl", "limactl", "the limactl `PROGRAM` (its LIMA_HOME is nix8s's too)")
	fs.StringVar(&o.stateDir, "state-dir", "", "write the instance files into `DIR` (default $XDG_STATE_HOME/nix8s/lima)")
	fs.StringVar(&o.secretsDir, "secrets", "secrets", "up: read the tokens from `DIR`/<cluster>.yaml (nix8s gen-secrets)")
	fs.BoolVar(&o.noSecrets, "no-secrets", false, "up: deliver no token files (they reach the VMs another way, such as sops-nix)")
	fs.DurationVar(&o.waitTimeout, "wait-timeout", provision.DefaultWaitTimeout, "up: give up waiting for a member after `DURATION`")
	fs.BoolVar(&o.delete, "delete", false, "down: delete the VMs and the cluster's Lima network too")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON")
	a.clusterFlags(fs, &o.cluster)
	return &command{
		name:    "lima",
		summary: "Run a cluster as local Lima VMs, one per member: up (in join order), down, status.",
		usage:   "lima (up|down|status) --config FILE [flags] CLUSTER",
		example: "  $ nix8s gen-secrets dev\n  $ nix8s lima up --config cluster.yaml --flake . dev\n  $ nix8s lima status --config cluster.yaml dev\n  $ nix8s lima down --config cluster.yaml --delete dev",
		flags:   fs,
		args:    -1,
		run:     func(ctx context.Context, args []string) error { return a.lima(ctx, o, args) },
	}
}

func (a *app) lima(ctx context.Context, o limaOptions, args []string) error {
	if len(args) != 2 || (args[0] != "up" && args[0] != "down" && args[0] != "status") {
		return usageError{cmd: "lima", msg: "lima takes an action (up, down or status) and a cluster, such as `nix8s lima up dev`"}
	}
	action, name := args[0], args[1]
	file, err := a.configFile("", o.cluster.config, nil)
	if err != nil {
		return err
	}
	cfg, err := core.LoadFile(file)
	if err != nil {
		return err
	}
	ev, err := a.evaluator()
	if err != nil {
		return err
	}
	// The view first: its errors include validate's and say when the cluster does not run in Lima.
	view, err := lima.Load(ctx, ev, cfg, name)
	var inv *core.InvalidError
	if errors.As(err, &inv) {
		printProblems(a.stderr, "error", inv.Report.Errors)
		return fmt.Errorf("%s: cluster %q cannot run in Lima", file, name)
	}
	if err != nil {
		return err
	}
	// The plan as it is, not loadCluster's: up makes the VMs whose ports loadCluster would look up.
	p, err := ev.Plan(ctx, cfg)
	if err != nil {
		return err
	}
	plan := p.Plan.Clusters[name]
	home, err := lima.Home(a.getenv)
	if err != nil {
		return err
	}
	state := o.stateDir
	if state == "" {
		base := a.getenv("XDG_STATE_HOME")
		if base == "" {
			h, err := os.UserHomeDir()
			if err != nil {
				return err
			}
			base = filepath.Join(h, ".local", "state")
		}
		state = filepath.Join(base, "nix8s", "lima")
	}
	c := &lima.Cluster{
		View: view, Plan: plan, Home: home, MachineID: lima.MachineID(ctx), Dir: state, Progress: a.stderr,
		Limactl: &lima.Limactl{Program: o.limactl, Stderr: a.stderr},
	}
	ssh := o.cluster.ssh()
	switch action {
	case "down":
		return c.Down(ctx, o.delete)
	case "status":
		st, nodes, err := c.Status(ctx, ssh)
		if err != nil {
			return err
		}
		if o.json {
			out, err := json.MarshalIndent(map[string]any{"cluster": name, "members": st, "nodes": nodes}, "", "  ")
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%s\n", out)
			return nil
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "MEMBER\tROLE\tVM\tIP\tSSH\tREADY\tK3S\n")
		for _, m := range st {
			port, ready, version := "-", "-", "-"
			if m.SSHPort > 0 {
				port = fmt.Sprintf("127.0.0.1:%d", m.SSHPort)
			}
			if m.Node != nil {
				ready, version = orDash(m.Node.Ready), orDash(m.Node.Version)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.HostName, m.Role, m.VM, m.IP, port, ready, version)
		}
		tw.Flush()
		fmt.Fprintf(a.stderr, "nix8s: nodes: %s\n", nodes)
		return nil
	}
	var tokens *provision.Tokens
	if !o.noSecrets {
		t, err := secrets.Load(ctx, o.secretsDir, name, "")
		if err != nil {
			return err
		}
		tokens = &t
	}
	events := a.progress()
	report, err := c.Up(ctx, lima.UpOptions{
		Image: func(ctx context.Context, m lima.Member) (string, error) { return a.limaImage(ctx, o, m) },
		Install: provision.Options{
			Flake:       o.flake,
			Tokens:      tokens,
			JoinTokens:  &provision.JoinTokens{Runner: ssh, TTL: provision.DefaultJoinTokenTTL},
			WaitTimeout: o.waitTimeout,
			Runner:      ssh,
			Readiness:   provision.SSHReadiness{Runner: ssh},
			// Lima checks no host key: the VM must answer with the one its instance file gave it, which is then
			// recorded for the later operations.
			Deliverer: &provision.Pinned{SSH: ssh, WaitTimeout: o.waitTimeout, KeyFrom: "its Lima instance was given", Record: true, Log: provision.Log(events)},
			Progress:  events,
		},
	})
	if report == nil {
		return err
	}
	return a.finish("lima up", name, o.json, report, func() { writeInstallReport(a, report) }, err)
}

// limaImage is the member's qcow2: --image, else disko's image of its own configuration
// (system.build.diskoImages, modules/nixos/lima-guest.nix sets qcow2), built with nix; the path is read from
// nix's stdout only.
func (a *app) limaImage(ctx context.Context, o limaOptions, m lima.Member) (string, error) {
	if p, ok := o.images[m.Name]; ok {
		return filepath.Abs(p)
	}
	attr := o.flake + "#nixosConfigurations." + m.HostName + ".config.system.build.diskoImages"
	cmd := exec.Command("nix", "--extra-experimental-features", "nix-command flakes", "build", "--no-link", "--print-out-paths", attr)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	fmt.Fprintf(a.stderr, "nix8s: %s: building its image %s\n", m.HostName, attr)
	// nix's messages go to stderr as it prints them; the error carries the last of them.
	if err := toolrun.Exec(ctx, toolrun.Tool{Name: "nix build", Cmd: cmd, Line: func(l string) { fmt.Fprintln(a.stderr, l) },
		Install: "nix8s lima up builds each member's image with nix; or pass --image"}); err != nil {
		return "", fmt.Errorf("%s: building its image (nix build %s): %w", m.HostName, attr, err)
	}
	out := strings.TrimSpace(stdout.String())
	matches, _ := filepath.Glob(filepath.Join(out, "*.qcow2"))
	if len(matches) != 1 {
		return "", fmt.Errorf("%s: %s holds %d qcow2 images, want one (the member's disk); pass --image %s=PATH", m.HostName, out, len(matches), m.Name)
	}
	return matches[0], nil
}

// limaEndpoints completes a Lima cluster's plan for the operations that reach its members from here (ssh,
// rebuild, status, kubeconfig): the ports of their VMs and Lima's key (lima.ResolveEndpoints). limactl is
// $NIX8S_LIMACTL, else the one on PATH; it is run only for a cluster in Lima.
func (a *app) limaEndpoints(ctx context.Context, c *core.Cluster) error {
	prog := a.getenv("NIX8S_LIMACTL")
	if prog == "" {
		prog = "limactl"
	}
	return lima.ResolveEndpoints(ctx, &lima.Limactl{Program: prog, Stderr: a.stderr},
		func() (string, error) { return lima.Home(a.getenv) }, c, a.stderr)
}
