package provision

import (
	"context"
	"strings"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/cozystack"
	"github.com/nix8s/nix8s/internal/remote"
)

// ClusterReadiness is r as the install waves of cluster c need it. In a Cozystack cluster whose platform is not
// bootstrapped yet there is no CNI (k3s runs with --flannel-backend=none until Cozystack installs one), so
// no node becomes Ready: there a member counts once its node is registered. Once bootstrap has passed (its
// marker, cozystack.Bootstrapped) a member must be a Ready node again. docs/cozystack.md, "Readiness before
// and after bootstrap". Other clusters, or no runner to ask with, get r unchanged.
func ClusterReadiness(c core.Cluster, r Readiness, run remote.Runner) Readiness {
	if _, ok := r.(cozystackReadiness); ok || c.Cozystack == nil || r == nil || run == nil {
		return r
	}
	return cozystackReadiness{inner: r, run: run}
}

// cozystackInstall is o with its readiness waits (the servers', and the agents' before their join tokens are
// deleted) made ClusterReadiness for c.
func cozystackInstall(c core.Cluster, o Options) Options {
	if c.Cozystack == nil {
		return o
	}
	o.Readiness = ClusterReadiness(c, o.Readiness, o.Runner)
	if o.JoinTokens != nil {
		jt := *o.JoinTokens
		base := jt.Readiness
		if base == nil {
			base = SSHReadiness{Runner: jt.Runner}
		}
		jt.Readiness = ClusterReadiness(c, base, jt.Runner)
		o.JoinTokens = &jt
	}
	return o
}

type cozystackReadiness struct {
	inner Readiness
	run   remote.Runner
}

func (r cozystackReadiness) APIReady(ctx context.Context, host remote.Host) error {
	return r.inner.APIReady(ctx, host)
}

// NodeReady is nil when the node is Ready, or registered while Cozystack is not bootstrapped; else the inner
// answer (why it is not Ready).
func (r cozystackReadiness) NodeReady(ctx context.Context, host remote.Host, node string) error {
	notReady := r.inner.NodeReady(ctx, host, node)
	if notReady == nil {
		return nil
	}
	if _, err := r.run.Run(ctx, host, "k3s kubectl get node "+remote.Quote(node)+" -o name"); err != nil {
		return notReady // not registered (or not answering): keep waiting
	}
	out, err := r.run.Run(ctx, host, "k3s kubectl get configmap --namespace "+cozystack.MarkerNamespace+" "+cozystack.MarkerName+" -o name --ignore-not-found")
	if err != nil {
		return notReady
	}
	if strings.TrimSpace(string(out)) != "" {
		return notReady // bootstrapped: it must be Ready
	}
	return nil
}
