package jobs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/kubernetes"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/remote"
)

// configFor is r.Config for an operation on cluster c: its ssh (Config.SSH) trusts, besides --known-hosts,
// the host key the database holds for each member's machine (store.MemberHostKeys: the one the member's
// deliver-secrets job pinned and the member answered with), at the member's ssh endpoint in the plan. So a
// member installed over the network, whose key no known_hosts file records, is reachable by every later
// job (join tokens, rollout, kubeconfig, node status); a host presenting any other key at that address is
// still refused, and no key is trusted on first use. The keys go to an ssh KnownHostsCommand in the
// daemon's temporary directory (TMPDIR); done removes it: call it when the operation's ssh is over.
func (r *Runner) configFor(ctx context.Context, c core.Cluster) (cfg Config, done func(), err error) {
	cfg, done = r.Config, func() {}
	if r.Store == nil {
		return cfg, done, nil
	}
	keys, err := r.Store.MemberHostKeys(ctx, c.Name)
	if err != nil {
		return cfg, done, fmt.Errorf("reading the host keys of cluster %q's members: %w", c.Name, err)
	}
	var known []remote.KnownHost
	for _, k := range keys {
		if mem, ok := c.Members[k.Member]; ok && mem.SSH.Host != "" {
			known = append(known, remote.KnownHost{Host: remote.HostOf(mem), Key: k.HostKey})
		}
	}
	if len(known) == 0 {
		return cfg, done, nil
	}
	dir, err := filepath.Abs(os.TempDir())
	if err != nil {
		return cfg, done, err
	}
	f, err := os.CreateTemp(dir, "nix8s-member-keys-*")
	if err != nil {
		return cfg, done, err
	}
	f.Close()
	name := f.Name()
	if err := remote.WriteKnownHostsCommand(name, known); err != nil {
		os.Remove(name)
		return cfg, done, fmt.Errorf("the host keys of cluster %q's members: %w", c.Name, err)
	}
	cfg.knownHostsCommand = name
	return cfg, func() { os.Remove(name) }, nil
}

// ClusterClient is Config.ClusterClient with the members' host keys of the database trusted (configFor), for
// the daemon's own uses of a cluster's API server (node status).
func (r *Runner) ClusterClient(ctx context.Context, c core.Cluster) (client kubernetes.Interface, host, from string, err error) {
	cfg, done, err := r.configFor(ctx, c)
	if err != nil {
		return nil, "", "", err
	}
	defer done()
	return cfg.ClusterClient(ctx, c)
}
