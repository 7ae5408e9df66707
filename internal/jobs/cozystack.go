package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/cozystack"
	"github.com/nix8s/nix8s/internal/kubeconfig"
	"github.com/nix8s/nix8s/internal/provision"
	"github.com/nix8s/nix8s/internal/store"
)

// KindCozystackBootstrap installs Cozystack on a cluster (internal/cozystack, as nix8s cozystack bootstrap).
const KindCozystackBootstrap = "cozystack-bootstrap"

// CozystackParams are a cozystack-bootstrap job's parameters.
type CozystackParams struct {
	// Timeout bounds the bootstrap (a Go duration); empty: the plan's cozystack.bootstrapTimeout.
	Timeout string `json:"timeout,omitempty"`
}

// Check implements the API's parameter check: the timeout must be a positive Go duration.
func (p CozystackParams) Check() error {
	if p.Timeout == "" {
		return nil
	}
	if d, err := time.ParseDuration(p.Timeout); err != nil || d <= 0 {
		return &ParamError{Path: "timeout", Msg: fmt.Sprintf("timeout must be a positive duration such as \"45m\", got %q", p.Timeout)}
	}
	return nil
}

// CozystackStatus reads cluster c's Cozystack platform once (cozystack.Status, as nix8s cozystack status),
// reaching its API server as ClusterClient does.
func (r *Runner) CozystackStatus(ctx context.Context, c core.Cluster) (*cozystack.Report, error) {
	rc, done, err := r.cozystackAPI(ctx, c)
	if err != nil {
		return nil, err
	}
	defer done()
	return cozystack.Status(ctx, rc, c)
}

// cozystackAPI is how the Cozystack operations reach cluster c's API server (as ClusterClient does); done
// ends what reaching it needed (the members' host keys written for ssh).
func (r *Runner) cozystackAPI(ctx context.Context, c core.Cluster) (*rest.Config, func(), error) {
	if c.Cozystack == nil {
		return nil, nil, fmt.Errorf("cluster %q has no Cozystack: set clusters.%s.cozystack.enable = true", c.Name, c.Name)
	}
	cfg, done, err := r.configFor(ctx, c)
	if err != nil {
		return nil, nil, err
	}
	rc, err := cfg.restConfig(ctx, c)
	if err != nil {
		done()
		return nil, nil, err
	}
	return rc, done, nil
}

// cozystackBootstrap is the handler of cozystack-bootstrap jobs: the manifests are downloaded from the plan's
// pinned URLs and checked against their hashes; each step goes to the job's log, the steps are its result
// (CozystackResult).
func (r *Runner) cozystackBootstrap(ctx context.Context, j *store.Job, log io.Writer) (any, error) {
	var p CozystackParams
	if len(j.Params) > 0 {
		if err := json.Unmarshal(j.Params, &p); err != nil {
			return nil, fmt.Errorf("reading the job's parameters: %w", err)
		}
	}
	var timeout time.Duration
	if p.Timeout != "" {
		d, err := time.ParseDuration(p.Timeout)
		if err != nil {
			return nil, fmt.Errorf("the job's timeout: %w", err)
		}
		timeout = d
	}
	if j.Cluster == nil {
		return nil, errors.New("a cozystack-bootstrap job needs a cluster")
	}
	c, err := r.Planner.ClusterPlan(ctx, *j.Cluster)
	if err != nil {
		return nil, err
	}
	rc, done, err := r.cozystackAPI(ctx, c)
	if err != nil {
		return nil, err
	}
	defer done()
	steps, err := cozystack.Bootstrap(ctx, cozystack.Options{Cluster: c, Config: rc, Timeout: timeout,
		Report: func(s cozystack.Step) {
			state := "done"
			if !s.OK {
				state = "failed"
			}
			fmt.Fprintf(log, "nix8s: cozystack %s %s: %s\n", s.Step, state, s.Detail)
		}})
	if len(steps) == 0 {
		return nil, err // refused before the first step: nothing to record
	}
	return CozystackResult{Cluster: c.Name, Steps: steps}, err
}

// CozystackResult is what a cozystack-bootstrap job records: the steps it finished, the last one failed when
// the job did.
type CozystackResult struct {
	Cluster string           `json:"cluster"`
	Steps   []cozystack.Step `json:"steps"`
}

// restConfig is ClusterClient's way to the API server, as a rest.Config.
func (c Config) restConfig(ctx context.Context, cl core.Cluster) (*rest.Config, error) {
	if c.APIServer != nil {
		return c.APIServer, nil
	}
	ssh := c.SSH()
	data, from, err := kubeconfig.Fetch(ctx, ssh, provision.SSHReadiness{Runner: ssh}, cl)
	if err != nil {
		return nil, err
	}
	rc, err := clientcmd.RESTConfigFromKubeConfig(data)
	if err != nil {
		return nil, fmt.Errorf("the kubeconfig of %s: %w", from, err)
	}
	return rc, nil
}
