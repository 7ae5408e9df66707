package main

import (
	"context"
	"encoding/json"
	"fmt"
)

type validateOptions struct {
	json   bool
	config string
}

func newValidateCommand(a *app) *command {
	var o validateOptions
	fs := newFlagSet("validate")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON ({\"errors\": [...], \"warnings\": [...]})")
	fs.StringVar(&o.config, "config", "", "the config `FILE` (YAML or JSON; default $NIX8S_CONFIG; a lone FILE argument works too)")
	a.evalFlags(fs)
	return &command{
		name:    "validate",
		summary: "Check a config and print every error and warning with its config path.",
		usage:   "validate [--json] --config FILE",
		example: "  $ nix8s validate --config cluster.yaml\n  error: clusters.prod.members.agent1.node: no node named \"agent-gpu\"; known nodes: \"server-nvme\"\n  nix8s: error: cluster.yaml: 1 error, 0 warnings",
		flags:   fs,
		args:    -1,
		run:     func(ctx context.Context, args []string) error { return a.validate(ctx, o, args) },
	}
}

// validate exits 1 when the config has errors; warnings alone do not fail it.
func (a *app) validate(ctx context.Context, o validateOptions, args []string) error {
	file, cfg, ev, err := a.loadConfig("validate", o.config, args)
	if err != nil {
		return err
	}
	r, err := ev.Validate(ctx, cfg)
	if err != nil {
		return err
	}
	if o.json {
		out, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "%s\n", out)
	} else {
		printProblems(a.stdout, "error", r.Errors)
		printProblems(a.stdout, "warning", r.Warnings)
	}
	summary := fmt.Sprintf("%s, %s", count(len(r.Errors), "error"), count(len(r.Warnings), "warning"))
	if !r.OK() {
		return fmt.Errorf("%s: %s", file, summary)
	}
	fmt.Fprintf(a.stderr, "nix8s: %s: valid (%s)\n", file, summary)
	return nil
}
