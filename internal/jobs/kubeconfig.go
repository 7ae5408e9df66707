package jobs

import (
	"context"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/kubeconfig"
	"github.com/nix8s/nix8s/internal/provision"
)

// Kubeconfig fetches cluster c's admin kubeconfig from a ready server, pointed at the plan's API endpoint:
// the same kubeconfig.Fetch as nix8s kubeconfig. It runs at once, not as a job: it is quick, and its answer
// (credentials) must not be stored in a job's log or result. The servers' host keys are checked against
// --known-hosts and the keys the database holds for them (configFor).
func (r *Runner) Kubeconfig(ctx context.Context, c core.Cluster) ([]byte, string, error) {
	cfg, done, err := r.configFor(ctx, c)
	if err != nil {
		return nil, "", err
	}
	defer done()
	ssh := cfg.SSH()
	return kubeconfig.Fetch(ctx, ssh, provision.SSHReadiness{Runner: ssh}, c)
}
