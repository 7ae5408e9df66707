package main

import (
	"context"
	"flag"
	"fmt"
	"strings"

	"github.com/nix8s/nix8s/internal/secrets"
)

type genSecretsOptions struct {
	dir    string
	force  bool
	age    stringList
	config string
}

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

var _ flag.Value = (*stringList)(nil)

func newGenSecretsCommand(a *app) *command {
	var o genSecretsOptions
	fs := newFlagSet("gen-secrets")
	fs.StringVar(&o.dir, "dir", "secrets", "the secrets `DIR`")
	fs.BoolVar(&o.force, "force", false, "replace existing tokens (members installed with the old ones no longer join)")
	fs.Var(&o.age, "age", "age `RECIPIENT` for a new .sops.yaml (repeatable); an existing .sops.yaml is kept")
	fs.StringVar(&o.config, "config", "", "check that CLUSTER is in the config `FILE` (default $NIX8S_CONFIG, if set)")
	a.evalFlags(fs)
	return &command{
		name:    "gen-secrets",
		summary: "Generate a cluster's k3s token and agent token under secrets/, encrypted with sops/age when configured.",
		usage:   "gen-secrets [--dir DIR] [--force] [--age RECIPIENT] CLUSTER",
		example: "  $ nix8s gen-secrets --age $(age-keygen -y ~/.config/sops/age/keys.txt) prod\n  $ git add --force secrets/prod.yaml",
		flags:   fs,
		args:    1,
		run:     func(ctx context.Context, args []string) error { return a.genSecrets(ctx, o, args[0]) },
	}
}

func (a *app) genSecrets(ctx context.Context, o genSecretsOptions, cluster string) error {
	if o.config != "" || a.getenv("NIX8S_CONFIG") != "" {
		if _, err := a.loadCluster(ctx, clusterOptions{config: o.config}, cluster); err != nil {
			return err
		}
	}
	res, err := secrets.Generate(ctx, secrets.Options{Dir: o.dir, Cluster: cluster, Force: o.force, AgeRecipients: o.age})
	if err != nil {
		return err
	}
	for _, p := range res.Created {
		fmt.Fprintf(a.stderr, "nix8s: created %s\n", p)
	}
	if res.Encrypted {
		fmt.Fprintf(a.stderr, "nix8s: wrote %s, encrypted with sops; commit it with: git add --force %s\n", res.Path, res.Path)
	} else {
		fmt.Fprintf(a.stderr, "nix8s: wrote %s unencrypted (no age recipients in %s/.sops.yaml); .gitignore keeps it out of git\n", res.Path, o.dir)
	}
	fmt.Fprintln(a.stdout, res.Path)
	return nil
}
