package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/cozystack"
	"github.com/nix8s/nix8s/internal/kubeconfig"
	"github.com/nix8s/nix8s/internal/provision"
)

type cozystackOptions struct {
	cluster    clusterOptions
	kubeconfig string
	crds       string
	operator   string
	wait       time.Duration
	json       bool
}

func newCozystackCommand(a *app) *command {
	var o cozystackOptions
	fs := newFlagSet("cozystack")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "reach the API with `FILE` instead of fetching the admin kubeconfig from a server over ssh")
	fs.StringVar(&o.crds, "crds", "", "read cozystack-crds.yaml from `FILE` (it must have the pinned hash) instead of downloading it")
	fs.StringVar(&o.operator, "operator", "", "read cozystack-operator-generic.yaml from `FILE` (it must have the pinned hash) instead of downloading it")
	fs.DurationVar(&o.wait, "wait", 0, "bootstrap: give up after `DURATION` (default clusters.<c>.cozystack.bootstrapTimeout)")
	fs.BoolVar(&o.json, "json", false, "print the steps (bootstrap) or the report (status) as JSON")
	a.clusterFlags(fs, &o.cluster)
	return &command{
		name:    "cozystack",
		summary: "Install Cozystack on a cluster (bootstrap), or show whether its platform is ready (status).",
		usage:   "cozystack --config FILE [--kubeconfig FILE] [--crds FILE] [--operator FILE] [--wait DURATION] [--json] bootstrap|status CLUSTER",
		example: "  $ nix8s cozystack --config cluster.yaml bootstrap prod\n  $ nix8s cozystack --config cluster.yaml status prod",
		flags:   fs,
		args:    2,
		run:     func(ctx context.Context, args []string) error { return a.cozystack(ctx, o, args[0], args[1]) },
	}
}

func (a *app) cozystack(ctx context.Context, o cozystackOptions, action, name string) error {
	if action != "bootstrap" && action != "status" {
		return usageError{cmd: "cozystack", msg: fmt.Sprintf("cozystack: %q is not an action; use bootstrap or status", action)}
	}
	c, err := a.loadCluster(ctx, o.cluster, name)
	if err != nil {
		return err
	}
	if c.Cozystack == nil {
		return fmt.Errorf("cluster %q has no Cozystack: set clusters.%s.cozystack.enable = true", name, name)
	}
	cfg, err := a.restConfig(ctx, o, c)
	if err != nil {
		return err
	}
	if action == "status" {
		r, err := cozystack.Status(ctx, cfg, c)
		if err != nil {
			return err
		}
		if o.json {
			out, _ := json.MarshalIndent(r, "", "  ")
			fmt.Fprintf(a.stdout, "%s\n", out)
		} else {
			fmt.Fprintf(a.stdout, "%s: %d nodes, %d packages, %d helmreleases; ready: %s\n", r.Cluster, len(r.Nodes), len(r.Packages), len(r.HelmReleases), yesNo(r.Ready))
			for _, n := range r.NotReady {
				fmt.Fprintf(a.stdout, "  %s\n", n)
			}
		}
		if !r.Ready {
			return exitError{code: 1}
		}
		return nil
	}
	steps, err := cozystack.Bootstrap(ctx, cozystack.Options{
		Cluster: c, Config: cfg, Timeout: o.wait,
		CRDs: cozystack.Source{File: o.crds}, Operator: cozystack.Source{File: o.operator},
		Report: func(s cozystack.Step) {
			if s.OK {
				fmt.Fprintf(a.stderr, "nix8s: cozystack %s: %s\n", s.Step, s.Detail)
			}
		},
	})
	if o.json {
		out, _ := json.MarshalIndent(steps, "", "  ")
		fmt.Fprintf(a.stdout, "%s\n", out)
	}
	return err
}

// restConfig reaches the cluster: --kubeconfig, else the admin kubeconfig fetched from a ready server.
func (a *app) restConfig(ctx context.Context, o cozystackOptions, c core.Cluster) (*rest.Config, error) {
	var data []byte
	if o.kubeconfig != "" {
		b, err := os.ReadFile(o.kubeconfig)
		if err != nil {
			return nil, err
		}
		data = b
	} else {
		ssh := o.cluster.ssh()
		b, _, err := kubeconfig.Fetch(ctx, ssh, provision.SSHReadiness{Runner: ssh}, c)
		if err != nil {
			return nil, err
		}
		data = b
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(data)
	if err != nil {
		return nil, fmt.Errorf("reading the kubeconfig: %w", err)
	}
	return cfg, nil
}
