package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/nix8s/nix8s/internal/kubeconfig"
	"github.com/nix8s/nix8s/internal/provision"
	"github.com/nix8s/nix8s/internal/rollout"
	"github.com/nix8s/nix8s/internal/store"
)

// RolloutParams are a rollout job's parameters (the body of POST /v1/clusters/{c}/rollout).
type RolloutParams struct {
	// Members to roll out; empty with All for every member.
	Members []string `json:"members,omitempty"`
	All     bool     `json:"all,omitempty"`
	// MaxUnavailable is how many agents may be out of service at once; 0 means 1.
	MaxUnavailable int `json:"maxUnavailable,omitempty"`
	// DryRun reports the steps, touching nothing.
	DryRun bool `json:"dryRun,omitempty"`
}

// Check refuses parameters that say neither or both of members and all.
func (p RolloutParams) Check() error {
	return checkSelection(p.Members, p.All, p.MaxUnavailable, "maxUnavailable")
}

// rollout is the handler of rollout jobs: rollout.Rollout on the job's cluster, reaching its API server with
// the admin kubeconfig fetched from a ready server (as nix8s kubeconfig does).
func (r *Runner) rollout(ctx context.Context, j *store.Job, log io.Writer) (any, error) {
	var p RolloutParams
	if err := json.Unmarshal(j.Params, &p); err != nil {
		return nil, fmt.Errorf("reading the job's parameters: %w", err)
	}
	if j.Cluster == nil {
		return nil, errors.New("a rollout job needs a cluster")
	}
	c, settings, err := r.Planner.ClusterPlan(ctx, *j.Cluster)
	if err != nil {
		return nil, err
	}
	if err := rollout.CheckMembers(c, p.Members); err != nil {
		return nil, err
	}
	cfg := r.Config
	ssh := cfg.SSH()
	o := rollout.Options{
		Members:        p.Members,
		MaxUnavailable: p.MaxUnavailable,
		DryRun:         p.DryRun,
		ReadyTimeout:   cfg.waitTimeout(),
		PollInterval:   cfg.waitInterval(),
		Switcher: &rollout.NixosRebuild{Program: cfg.NixosRebuild, Flake: cfg.Flake, SSH: ssh, Settings: settings,
			Output: log, Timeout: cfg.InstallTimeout},
		Progress: log,
	}
	if !p.DryRun {
		data, from, err := kubeconfig.Fetch(ctx, ssh, provision.SSHReadiness{Runner: ssh}, c, settings)
		if err != nil {
			return nil, err
		}
		rc, err := clientcmd.RESTConfigFromKubeConfig(data)
		if err != nil {
			return nil, fmt.Errorf("the kubeconfig of %s: %w", from, err)
		}
		client, host, err := rollout.ClientFor(rc, 0)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(log, "nix8s: %s: API server %s (credentials from %s)\n", c.Name, host, from)
		o.Client = client
	}
	report, err := rollout.Rollout(ctx, c, o)
	if report == nil {
		return nil, err
	}
	fmt.Fprintf(log, "nix8s: %s: %s\n", c.Name, report.Counts())
	if err != nil {
		return report, fmt.Errorf("rollout of cluster %q stopped: %w", c.Name, err)
	}
	return report, nil
}
