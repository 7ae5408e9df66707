package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/nix8s/nix8s/internal/core"
)

type planOptions struct {
	json    bool
	cluster string
	config  string
}

func newPlanCommand(a *app) *command {
	var o planOptions
	fs := newFlagSet("plan")
	fs.BoolVar(&o.json, "json", false, "print the core's plan as JSON instead of a summary")
	fs.StringVar(&o.cluster, "cluster", "", "show only `CLUSTER` (with --json: that cluster's plan)")
	fs.StringVar(&o.config, "config", "", "the config `FILE` (YAML or JSON; default $NIX8S_CONFIG; a lone FILE argument works too)")
	a.evalFlags(fs)
	return &command{
		name:    "plan",
		summary: "Show what nix8s would build: endpoints, members, join waves and rollout order.",
		usage:   "plan [--json] [--cluster CLUSTER] --config FILE",
		example: "  $ nix8s plan --config cluster.yaml --cluster prod\n  $ nix8s plan --json --config cluster.yaml | jq '.clusters.prod.provision'",
		flags:   fs,
		args:    -1,
		run:     func(ctx context.Context, args []string) error { return a.plan(ctx, o, args) },
	}
}

func (a *app) plan(ctx context.Context, o planOptions, args []string) error {
	file, cfg, ev, err := a.loadConfig("plan", o.config, args)
	if err != nil {
		return err
	}
	p, err := ev.Plan(ctx, cfg)
	var inv *core.InvalidError
	if errors.As(err, &inv) {
		// stdout is for the plan; the problems go with the error.
		printProblems(a.stderr, "error", inv.Report.Errors)
		printProblems(a.stderr, "warning", inv.Report.Warnings)
		return &core.HintError{
			Err:  fmt.Errorf("%s: %s, nothing planned", file, count(len(inv.Report.Errors), "error")),
			Hint: "fix the errors above; 'nix8s validate --config " + file + "' lists them again",
		}
	}
	if err != nil {
		return err
	}
	printProblems(a.stderr, "warning", p.Warnings)

	var clusters []string
	if o.cluster != "" {
		if _, ok := p.Plan.Clusters[o.cluster]; !ok {
			return fmt.Errorf("%s: no cluster named %q; clusters: %s", file, o.cluster, clusterNames(p.Plan))
		}
		clusters = []string{o.cluster}
	}
	if !o.json {
		return core.WriteSummary(a.stdout, p.Plan, clusters)
	}
	raw := []byte(p.JSON)
	if o.cluster != "" {
		// Cut the cluster out of the core's JSON rather than re-encoding the typed plan, so that every field
		// the core emits survives.
		var whole struct {
			Clusters map[string]json.RawMessage `json:"clusters"`
		}
		if err := json.Unmarshal(p.JSON, &whole); err != nil {
			return err
		}
		raw = whole.Clusters[o.cluster]
	}
	out, err := indentJSON(raw)
	if err != nil {
		return err
	}
	_, err = a.stdout.Write(out)
	return err
}

func clusterNames(p core.Plan) string {
	var names []string
	for n := range p.Clusters {
		names = append(names, fmt.Sprintf("%q", n))
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "(none)"
	}
	return strings.Join(names, ", ")
}
