package provision

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/remote"
	"github.com/nix8s/nix8s/internal/secrets"
)

// DeliverResult is what a delivery records (the result of nix8sd's deliver-secrets jobs).
type DeliverResult struct {
	Cluster  string `json:"cluster"`
	Member   string `json:"member"`
	HostName string `json:"hostName"`
	// Files are the delivered files (paths and which secret, never the values).
	Files []File `json:"files"`
	// K3sRestarted says whether k3s.service existed and was restarted.
	K3sRestarted bool `json:"k3sRestarted"`
	// JoinToken is the agent's own bootstrap token (its id, description, server and expiry; never its value),
	// nil for servers and where nix8s delivers no token.
	JoinToken *JoinToken `json:"joinToken,omitempty"`
	// JoinTokenRevoked says whether JoinToken was deleted once the agent's node was Ready.
	JoinTokenRevoked bool `json:"joinTokenRevoked,omitempty"`
	// HostKey is the host key the member answered the delivery's ssh with (the reported one, pinned); empty
	// when it never answered. Later jobs trust it for the member (store.MemberHostKeys, configFor).
	HostKey string `json:"hostKey,omitempty"`
}

// Delivery writes a network-installed member's token files and extra files on the node over ssh, with the
// host key pinned to the one its installer reported (nix8sd's deliver-secrets jobs): the netboot installer
// carries no secrets, so they reach the node after its install, the way nixos-anywhere --extra-files delivers
// them to a node installed over ssh.
type Delivery struct {
	// SecretsDir holds the clusters' tokens (secrets.Load); empty delivers no token files.
	SecretsDir string
	// Sops decrypts encrypted secrets; empty means "sops" on PATH.
	Sops string
	// ExtraFiles is delivered per member as in nix8s install --extra-files; empty means none.
	ExtraFiles string
	// JoinTokenTTL is the time to live of an agent's join token.
	JoinTokenTTL time.Duration
	// WaitTimeout and WaitInterval bound the waits for ssh and for the agent's node to be Ready.
	WaitTimeout, WaitInterval time.Duration
	// SSH gives the ssh config file and the timeouts of the pinned connection to the member.
	SSH *remote.SSH
	// Servers reaches the cluster's servers (an agent's join token is made there), with release to call once
	// done; asked only for an agent.
	Servers func(ctx context.Context) (r remote.Runner, release func(), err error)
	// Log receives progress lines.
	Log io.Writer
}

// Deliver delivers member's files to the node that answers ssh with hostKey. A server gets the cluster's
// tokens (SecretsDir). An agent never does: it gets a join token of its own, made for it on a ready server
// (JoinTokens, time to live JoinTokenTTL), which is deleted once its node is Ready. A config that brings its
// own token files gets none.
func (d Delivery) Deliver(ctx context.Context, c core.Cluster, member, hostKey string) (*DeliverResult, error) {
	log := d.Log
	if log == nil {
		log = io.Discard
	}
	mem := c.Members[member]
	name := mem.HostName
	res := &DeliverResult{Cluster: c.Name, Member: mem.Name, HostName: name}

	var files []File
	join := false // the member is an agent that gets a join token of its own
	switch {
	case d.SecretsDir == "":
		fmt.Fprintf(log, "nix8s: %s: no secrets directory: no token files (they reach the node another way)\n", name)
	case !c.ManagedTokens:
		fmt.Fprintf(log, "nix8s: %s: the config brings its own token files (secrets.tokenFile, agentTokenFile or token): nix8s delivers none\n", name)
	case mem.Role != "server":
		join = true
	default:
		t, err := secrets.Load(ctx, d.SecretsDir, c.Name, d.Sops)
		if err != nil {
			return nil, err
		}
		tf, err := TokenFiles(c, mem.Name, t)
		if err != nil {
			return nil, err
		}
		files = append(files, tf...)
	}
	extra, err := MemberExtraFiles(d.ExtraFiles, name)
	if err != nil {
		return nil, err
	}
	files = append(files, extra...)
	if len(files) == 0 && !join {
		fmt.Fprintf(log, "nix8s: %s: nothing to deliver (no token files, no extra files)\n", name)
		return res, nil
	}

	if hostKey == "" {
		var paths []string
		if join {
			paths = append(paths, fmt.Sprintf("%s (a join token: 'k3s token create --ttl %s --description %s' on a server)",
				mem.K3s.TokenFile, d.JoinTokenTTL, JoinTokenDescription(c.Name, mem.Name)))
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
	pinned := &Pinned{SSH: d.SSH,
		WaitTimeout: d.WaitTimeout, WaitInterval: d.WaitInterval, KeyFrom: "the installer reported", Log: log}
	host := remote.HostOf(mem)
	if !join {
		done, err := pinned.Deliver(ctx, host, hostKey, files)
		res.Files, res.K3sRestarted, res.HostKey = done.Files, done.K3sRestarted, done.HostKey
		return res, err
	}
	servers, release, err := d.Servers(ctx)
	if err != nil {
		return res, fmt.Errorf("%s: %w; nothing delivered", name, err)
	}
	defer release()
	jt := JoinTokens{Runner: servers, TTL: d.JoinTokenTTL, WaitTimeout: d.WaitTimeout, WaitInterval: d.WaitInterval, Log: log}
	done, tok, err := jt.DeliverJoinToken(ctx, c, mem.Name, pinned, host, hostKey, files)
	res.Files, res.K3sRestarted, res.HostKey = done.Files, done.K3sRestarted, done.HostKey
	if err != nil {
		return res, err
	}
	res.JoinToken = &tok
	fmt.Fprintf(log, "nix8s: %s: waiting for node %s to be Ready, to delete its join token %s\n", name, name, tok.ID)
	if err := jt.RevokeWhenReady(ctx, tok, name, d.WaitTimeout, d.WaitInterval); err != nil {
		return res, fmt.Errorf("%s: files delivered, but %w", name, err)
	}
	res.JoinTokenRevoked = true
	fmt.Fprintf(log, "nix8s: %s: node Ready; deleted its join token %s on %s (k3s goes on with its kubelet client certificate)\n", name, tok.ID, tok.Server)
	return res, nil
}
