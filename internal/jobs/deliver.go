package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nix8s/nix8s/internal/provision"
	"github.com/nix8s/nix8s/internal/remote"
	"github.com/nix8s/nix8s/internal/store"
)

// KindDeliverSecrets is the kind of the jobs that deliver a network-installed member's token files and extra
// files over ssh: the netboot installer carries no secrets, so they reach the node after its install, the way
// nixos-anywhere --extra-files delivers them to a node installed over ssh.
const KindDeliverSecrets = "deliver-secrets"

// DeliverParams are a deliver-secrets job's parameters; the job's cluster and member name the member.
type DeliverParams struct {
	// MAC is the machine that reported its install done.
	MAC string `json:"mac"`
	// HostKey is the installed system's public ssh host key as the installer reported it (`<type> <base64>`);
	// the only key the job's ssh connection accepts.
	HostKey string `json:"hostKey,omitempty"`
}

// DeliverResult is what a deliver-secrets job records (provision.Delivery).
type DeliverResult = provision.DeliverResult

// QueueDeliverSecrets queues the delivery of member's files over ssh after the machine mac reported its
// network install done with hostKey (storeboot.Adapter.OnInstalled), and wakes the runner.
func (r *Runner) QueueDeliverSecrets(ctx context.Context, cluster, member, mac, hostKey string) (*store.Job, error) {
	params, err := json.Marshal(DeliverParams{MAC: mac, HostKey: hostKey})
	if err != nil {
		return nil, err
	}
	j, err := r.Store.NewJob(ctx, KindDeliverSecrets, &cluster, &member, params)
	if err != nil {
		return nil, err
	}
	r.Wake()
	return j, nil
}

// deliverSecrets is the handler of deliver-secrets jobs: the member's token files and extra files
// (Config.ExtraFiles) written on the node over ssh, each with mode 0600 in a root-owned directory, with the
// host key pinned to the one the installer reported; then k3s.service restarted. A server gets the cluster's
// tokens (Config.SecretsDir). An agent never does: it gets a join token of its own, made for it on a ready
// server (provision.JoinTokens, time to live Config.JoinTokenTTL), which is deleted once its node is Ready.
// A config that brings its own token files gets none.
func (r *Runner) deliverSecrets(ctx context.Context, j *store.Job, log io.Writer) (any, error) {
	var p DeliverParams
	if err := json.Unmarshal(j.Params, &p); err != nil {
		return nil, fmt.Errorf("reading the job's parameters: %w", err)
	}
	if j.Cluster == nil || j.Member == nil {
		return nil, errors.New("a deliver-secrets job needs a cluster and a member")
	}
	c, err := r.Planner.ClusterPlan(ctx, *j.Cluster)
	if err != nil {
		return nil, err
	}
	mem, ok := c.Members[*j.Member]
	if !ok {
		return nil, fmt.Errorf("cluster %q has no member %q any more; nothing delivered", c.Name, *j.Member)
	}
	if p.MAC != "" {
		if err := r.checkMachine(ctx, p.MAC, c.Name, mem.Name); err != nil {
			return nil, err
		}
	}
	cfg := r.Config
	delivery := provision.Delivery{
		SecretsDir: cfg.SecretsDir, Sops: cfg.Sops, ExtraFiles: cfg.ExtraFiles, JoinTokenTTL: cfg.joinTokenTTL(),
		WaitTimeout: cfg.waitTimeout(), WaitInterval: cfg.waitInterval(),
		SSH: &remote.SSH{ConfigFile: cfg.SSHConfigFile, ConnectTimeout: cfg.ConnectTimeout},
		// The servers are reached with --known-hosts and the keys their own deliveries pinned (configFor).
		Servers: func(ctx context.Context) (remote.Runner, func(), error) {
			cfg, done, err := r.configFor(ctx, c)
			if err != nil {
				return nil, nil, err
			}
			return cfg.SSH(), done, nil
		},
		Log: log,
	}
	return delivery.Deliver(ctx, c, mem.Name, p.HostKey)
}

// checkMachine refuses a delivery for a machine that is no longer the member's.
func (r *Runner) checkMachine(ctx context.Context, mac, cluster, member string) error {
	m, err := r.Store.Machine(ctx, mac)
	if err != nil {
		return fmt.Errorf("machine %s: %w", mac, err)
	}
	if m.Cluster == nil || m.Member == nil || *m.Cluster != cluster || *m.Member != member {
		return fmt.Errorf("machine %s is no longer assigned to %s.%s; nothing delivered (queue the delivery for the member's new machine)", mac, cluster, member)
	}
	return nil
}

func (c Config) joinTokenTTL() time.Duration {
	if c.JoinTokenTTL > 0 {
		return c.JoinTokenTTL
	}
	return provision.DefaultJoinTokenTTL
}
