package main

import (
	"context"
	"fmt"

	"github.com/nix8s/nix8s/internal/kubeconfig"
	"github.com/nix8s/nix8s/internal/provision"
)

type kubeconfigOptions struct {
	cluster clusterOptions
	output  string
	merge   bool
}

func newKubeconfigCommand(a *app) *command {
	var o kubeconfigOptions
	fs := newFlagSet("kubeconfig")
	fs.StringVar(&o.output, "o", "", "write the kubeconfig to `FILE` (mode 0600) instead of stdout")
	fs.BoolVar(&o.merge, "merge", false, "merge into $KUBECONFIG or ~/.kube/config, keeping its other entries")
	a.clusterFlags(fs, &o.cluster)
	return &command{
		name:    "kubeconfig",
		summary: "Fetch a cluster's admin kubeconfig from a ready server, pointed at the API endpoint.",
		usage:   "kubeconfig --config FILE [-o FILE | --merge] CLUSTER",
		example: "  $ nix8s kubeconfig --config cluster.yaml --merge prod\n  $ kubectl --context prod get nodes",
		flags:   fs,
		args:    1,
		run:     func(ctx context.Context, args []string) error { return a.kubeconfig(ctx, o, args[0]) },
	}
}

func (a *app) kubeconfig(ctx context.Context, o kubeconfigOptions, name string) error {
	if o.output != "" && o.merge {
		return usageError{cmd: "kubeconfig", msg: "kubeconfig: -o and --merge exclude each other"}
	}
	c, err := a.loadCluster(ctx, o.cluster, name)
	if err != nil {
		return err
	}
	ssh := o.cluster.ssh()
	data, from, err := kubeconfig.Fetch(ctx, ssh, provision.SSHReadiness{Runner: ssh}, c)
	if err != nil {
		return err
	}
	switch {
	case o.merge:
		path, err := kubeconfig.DefaultPath(a.getenv)
		if err != nil {
			return err
		}
		if err := kubeconfig.MergeInto(path, data); err != nil {
			return err
		}
		fmt.Fprintf(a.stderr, "nix8s: merged context %q (from %s) into %s and made it current\n", c.Name, from, path)
	case o.output != "":
		if err := kubeconfig.Write(o.output, data); err != nil {
			return err
		}
		fmt.Fprintf(a.stderr, "nix8s: wrote the kubeconfig of %q (from %s) to %s\n", c.Name, from, o.output)
	default:
		_, err = a.stdout.Write(data)
		return err
	}
	return nil
}
