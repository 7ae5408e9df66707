package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/provision"
	"github.com/nix8s/nix8s/internal/remote"
	"github.com/nix8s/nix8s/internal/secrets"
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

// DeliverResult is what a deliver-secrets job records.
type DeliverResult struct {
	Cluster  string `json:"cluster"`
	Member   string `json:"member"`
	HostName string `json:"hostName"`
	// Files are the delivered files (paths and which secret, never the values).
	Files []provision.File `json:"files"`
	// K3sRestarted says whether k3s.service existed and was restarted.
	K3sRestarted bool `json:"k3sRestarted"`
	// JoinToken is the agent's own bootstrap token (its id, description, server and expiry; never its value),
	// nil for servers and where nix8s delivers no token.
	JoinToken *provision.JoinToken `json:"joinToken,omitempty"`
	// JoinTokenRevoked says whether JoinToken was deleted once the agent's node was Ready.
	JoinTokenRevoked bool `json:"joinTokenRevoked,omitempty"`
	// HostKey is the host key the member answered the delivery's ssh with (the reported one, pinned); empty
	// when it never answered. Later jobs trust it for the member (store.MemberHostKeys, configFor).
	HostKey string `json:"hostKey,omitempty"`
}

// The token files the core plans when the config names none (lib/plan.nix): only then does nix8s manage the
// cluster's tokens and deliver them.
const (
	managedTokenFile      = "/var/lib/nix8s/secrets/k3s-token"
	managedAgentTokenFile = "/var/lib/nix8s/secrets/k3s-agent-token"
)

// managedTokens says whether the plan's token files are nix8s's own: a config with secrets.tokenFile,
// secrets.agentTokenFile or secrets.token brings its own tokens (sops-nix, agenix, ...), and nix8s then
// writes none of them.
func managedTokens(c core.Cluster) bool {
	for _, m := range c.Servers {
		k := c.Members[m].K3s
		if k.TokenFile != managedTokenFile || k.AgentTokenFile == nil || *k.AgentTokenFile != managedAgentTokenFile {
			return false
		}
	}
	for _, m := range c.Agents {
		if c.Members[m].K3s.TokenFile != managedAgentTokenFile {
			return false
		}
	}
	return true
}

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
	name := mem.HostName
	if p.MAC != "" {
		if err := r.checkMachine(ctx, p.MAC, c.Name, mem.Name); err != nil {
			return nil, err
		}
	}
	res := &DeliverResult{Cluster: c.Name, Member: mem.Name, HostName: name}

	cfg := r.Config
	var files []provision.File
	join := false // the member is an agent that gets a join token of its own
	switch {
	case cfg.SecretsDir == "":
		fmt.Fprintf(log, "nix8s: %s: no secrets directory: no token files (they reach the node another way)\n", name)
	case !managedTokens(c):
		fmt.Fprintf(log, "nix8s: %s: the config brings its own token files (secrets.tokenFile, agentTokenFile or token): nix8s delivers none\n", name)
	case mem.Role != "server":
		join = true
	default:
		t, err := secrets.Load(ctx, cfg.SecretsDir, c.Name, cfg.Sops)
		if err != nil {
			return nil, err
		}
		tf, err := provision.TokenFiles(c, mem.Name, provision.Tokens{Token: t.Token, AgentToken: t.AgentToken})
		if err != nil {
			return nil, err
		}
		files = append(files, tf...)
	}
	extra, err := provision.MemberExtraFiles(cfg.ExtraFiles, name)
	if err != nil {
		return nil, err
	}
	files = append(files, extra...)
	if len(files) == 0 && !join {
		fmt.Fprintf(log, "nix8s: %s: nothing to deliver (no token files, no extra files)\n", name)
		return res, nil
	}

	if p.HostKey == "" {
		var paths []string
		if join {
			paths = append(paths, fmt.Sprintf("%s (a join token: 'k3s token create --ttl %s --description %s' on a server)",
				mem.K3s.TokenFile, cfg.joinTokenTTL(), provision.JoinTokenDescription(c.Name, mem.Name)))
		}
		for _, f := range files {
			paths = append(paths, f.Path)
		}
		return res, &core.HintError{
			Err: fmt.Errorf("%s: the installer reported no ssh host key, so the installed system cannot be told from an impostor and nix8sd does not trust a key on first use; nothing delivered", name),
			Hint: fmt.Sprintf("deliver %s by hand (mode 0600, owned by root), or reinstall with an installer that reports its host key",
				strings.Join(paths, ", ")),
		}
	}
	if mem.SSH.Host == "" {
		return res, fmt.Errorf("%s: the member has no ssh host in the plan, so nix8sd cannot reach it to deliver its files; deliver them by hand", name)
	}
	pinned := &provision.Pinned{SSH: &remote.SSH{ConfigFile: cfg.SSHConfigFile, ConnectTimeout: cfg.ConnectTimeout},
		WaitTimeout: cfg.waitTimeout(), WaitInterval: cfg.waitInterval(), KeyFrom: "the installer reported", Log: log}
	host := remote.HostOf(mem)
	if !join {
		d, err := pinned.Deliver(ctx, host, p.HostKey, files)
		res.Files, res.K3sRestarted, res.HostKey = d.Files, d.K3sRestarted, d.HostKey
		return res, err
	}
	// The servers are reached with --known-hosts and the keys their own deliveries pinned (configFor).
	cfg, done, err := r.configFor(ctx, c)
	if err != nil {
		return res, fmt.Errorf("%s: %w; nothing delivered", name, err)
	}
	defer done()
	jt := provision.JoinTokens{Runner: cfg.SSH(), TTL: cfg.joinTokenTTL(), WaitTimeout: cfg.waitTimeout(), WaitInterval: cfg.waitInterval(), Log: log}
	d, tok, err := jt.DeliverJoinToken(ctx, c, mem.Name, pinned, host, p.HostKey, files)
	res.Files, res.K3sRestarted, res.HostKey = d.Files, d.K3sRestarted, d.HostKey
	if err != nil {
		return res, err
	}
	res.JoinToken = &tok
	fmt.Fprintf(log, "nix8s: %s: waiting for node %s to be Ready, to delete its join token %s\n", name, name, tok.ID)
	if err := jt.RevokeWhenReady(ctx, tok, name, cfg.waitTimeout(), cfg.waitInterval()); err != nil {
		return res, fmt.Errorf("%s: files delivered, but %w", name, err)
	}
	res.JoinTokenRevoked = true
	fmt.Fprintf(log, "nix8s: %s: node Ready; deleted its join token %s on %s (k3s goes on with its kubelet client certificate)\n", name, tok.ID, tok.Server)
	return res, nil
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
