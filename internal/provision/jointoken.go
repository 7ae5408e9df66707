package provision

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/remote"
	"github.com/nix8s/nix8s/internal/wait"
)

// An agent joins with a per-node k3s bootstrap token that a ready server makes (`k3s token create`), never
// with the cluster's long-lived token or agent token: a stolen join token expires, names its node and can be
// deleted. k3s accepts bootstrap tokens from agents only, never from servers (docs/security.md, "Join
// tokens", has the sources).

// DefaultJoinTokenTTL is how long an agent's join token lives when nobody deletes it first. The agent uses
// it within seconds of its delivery; nix8s deletes it once the agent's node is Ready, so the TTL only bounds
// a token whose deletion did not happen.
const DefaultJoinTokenTTL = time.Hour

// joinTokenRe is the secure token format k3s token create prints: K10, the sha256 of the cluster CA, "::",
// then the bootstrap token <id>.<secret> (k8s.io/cluster-bootstrap's [a-z0-9]{6}.[a-z0-9]{16}).
var joinTokenRe = regexp.MustCompile(`^K10[0-9a-f]{64}::([a-z0-9]{6})\.[a-z0-9]{16}$`)

// JoinToken is one agent's bootstrap token.
type JoinToken struct {
	// Value is the token in k3s's secure format, K10<ca-hash>::<id>.<secret>; it goes to the agent's token
	// file and nowhere else (never a log, a result or an error).
	Value string `json:"-"`
	// ID is the token's public <id>: `k3s token list` shows it, `k3s token delete ID` revokes it.
	ID string `json:"id"`
	// Description names the node it was made for: nix8s:<cluster>/<member>.
	Description string `json:"description"`
	// Server is the host name of the server that made it, where it is deleted.
	Server string `json:"server"`
	// Expires is when k3s's token cleaner deletes it at the latest.
	Expires time.Time `json:"expires"`

	host remote.Host
}

// JoinTokenDescription is the description of member's join tokens, so `k3s token list` says whose a token is.
func JoinTokenDescription(cluster, member string) string {
	return "nix8s:" + cluster + "/" + member
}

// JoinTokens makes and deletes agents' join tokens on a cluster's servers over ssh, as root: k3s token reads
// the admin kubeconfig /etc/rancher/k3s/k3s.yaml, so a server whose API is not up makes none.
type JoinTokens struct {
	// Runner reaches the servers (host keys checked as for every other job on them).
	Runner remote.Runner
	// TTL is each token's time to live; it must be positive (k3s reads 0 as "never expires").
	TTL time.Duration
	// Now is the clock for Expires; default time.Now.
	Now func() time.Time
	// WaitTimeout bounds the wait for a server that makes a token (DeliverJoinToken): the servers may still
	// be starting; default DefaultWaitTimeout.
	WaitTimeout time.Duration
	// WaitInterval is the pause between attempts; default DefaultWaitInterval.
	WaitInterval time.Duration
	// Log receives progress lines (never a token's value); nil discards them.
	Log io.Writer
	// Readiness says when an agent is ready for its token to go (RevokeWhenReady); nil: SSHReadiness over
	// Runner. In a Cozystack cluster Install sets ClusterReadiness.
	Readiness Readiness
}

// DeliverJoinToken is how an agent gets its token file, for installs over ssh (Install with
// Options.JoinTokens) and network installs (nix8sd's deliver-secrets) alike: a join token made for member
// on a ready server (Create, waiting within WaitTimeout for one), delivered through d to host, pinned to
// hostKey, at the member's k3s.tokenFile together with files. When the delivery fails the token is deleted
// at once (it may not have reached its node: no use to anyone but a thief), and tok is the zero token. After
// a delivery the caller deletes the token once the node is Ready (RevokeWhenReady).
func (j JoinTokens) DeliverJoinToken(ctx context.Context, c core.Cluster, member string, d Deliverer,
	host remote.Host, hostKey string, files []File) (Delivered, JoinToken, error) {
	log := j.logger()
	mem := c.Members[member]
	tok, err := j.waitCreate(ctx, c, member)
	if err != nil {
		return Delivered{}, JoinToken{}, fmt.Errorf("%s: %w; nothing delivered", mem.HostName, err)
	}
	files = append([]File{{Path: mem.K3s.TokenFile, Name: "joinToken", Value: tok.Value}}, files...)
	res, err := d.Deliver(ctx, host, hostKey, files)
	if err != nil {
		if derr := j.Delete(context.WithoutCancel(ctx), tok); derr != nil {
			fmt.Fprintf(log, "nix8s: %s: warning: %v; it expires at %s\n", mem.HostName, derr, tok.Expires.UTC().Format(time.RFC3339))
		} else {
			fmt.Fprintf(log, "nix8s: %s: deleted its join token %s on %s: the delivery failed\n", mem.HostName, tok.ID, tok.Server)
		}
		return res, JoinToken{}, err
	}
	return res, tok, nil
}

// waitCreate makes member's join token, waiting within WaitTimeout for a server to make one.
func (j JoinTokens) waitCreate(ctx context.Context, c core.Cluster, member string) (JoinToken, error) {
	timeout, interval := j.WaitTimeout, j.WaitInterval
	if timeout <= 0 {
		timeout = DefaultWaitTimeout
	}
	if interval <= 0 {
		interval = DefaultWaitInterval
	}
	log, name := j.logger(), c.Members[member].HostName
	fmt.Fprintf(log, "nix8s: %s: making a join token (%s, valid %s) on a ready server\n", name, JoinTokenDescription(c.Name, member), j.TTL)
	var tok JoinToken
	last, err := wait.Poll(ctx, timeout, interval, func(ctx context.Context) error {
		var err error
		tok, err = j.Create(ctx, c, member)
		return err
	})
	switch {
	case err == nil:
		fmt.Fprintf(log, "nix8s: %s: join token %s made on %s, valid until %s\n", name, tok.ID, tok.Server, tok.Expires.UTC().Format(time.RFC3339))
		return tok, nil
	case ctx.Err() != nil:
		return JoinToken{}, fmt.Errorf("making a join token: %w", ctx.Err())
	}
	return JoinToken{}, &core.HintError{
		Err:  fmt.Errorf("no join token within %s (an agent never gets the cluster's tokens): %w", timeout, last),
		Hint: "an agent's join token is made with 'k3s token create' on a ready server over ssh (its host key checked as for every ssh to the servers); try again once a server is ready",
	}
}

func (j JoinTokens) logger() io.Writer {
	if j.Log == nil {
		return io.Discard
	}
	return j.Log
}

// Create makes a join token for member of c on the first server that makes one, the first server first (as
// kubeconfig.Fetch asks them), and reads it from stdout only: k3s logs to stderr. No server making one is an
// error naming each server's reason.
func (j JoinTokens) Create(ctx context.Context, c core.Cluster, member string) (JoinToken, error) {
	if j.TTL <= 0 {
		return JoinToken{}, fmt.Errorf("a join token needs a positive time to live, got %s (k3s keeps a token with 0 for ever)", j.TTL)
	}
	now := time.Now
	if j.Now != nil {
		now = j.Now
	}
	desc := JoinTokenDescription(c.Name, member)
	cmd := fmt.Sprintf("k3s token create --ttl %s --description %s", j.TTL, remote.Quote(desc))
	order := c.ServerOrder()
	var errs []error
	for _, m := range order {
		mem, ok := c.Members[m]
		if !ok || m == "" {
			continue
		}
		host := remote.HostOf(mem)
		start := now()
		out, err := j.Runner.Run(ctx, host, cmd)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", mem.HostName, err))
			continue
		}
		value := strings.TrimSuffix(string(out), "\n")
		sub := joinTokenRe.FindStringSubmatch(value)
		if sub == nil {
			// Not the output itself: it may hold a secret in a form this does not know.
			errs = append(errs, fmt.Errorf("%s: k3s token create printed no token of the form K10<ca-hash>::<id>.<secret> (%d bytes on stdout)", mem.HostName, len(out)))
			continue
		}
		return JoinToken{Value: value, ID: sub[1], Description: desc, Server: mem.HostName, Expires: start.Add(j.TTL), host: host}, nil
	}
	if len(errs) == 0 {
		return JoinToken{}, fmt.Errorf("cluster %q has no server to make a join token for %s", c.Name, member)
	}
	return JoinToken{}, fmt.Errorf("no server of cluster %q made a join token for %s:\n%w", c.Name, member, errors.Join(errs...))
}

// Delete revokes t on the server that made it. An agent that joined with it keeps working: it authenticates
// with its kubelet client certificate from then on.
func (j JoinTokens) Delete(ctx context.Context, t JoinToken) error {
	if _, err := j.Runner.Run(ctx, t.host, "k3s token delete "+remote.Quote(t.ID)); err != nil {
		return fmt.Errorf("%s: deleting join token %s: %w", t.Server, t.ID, err)
	}
	return nil
}

// RevokeWhenReady waits within timeout until node is Ready, asked on the server that made t, then deletes t.
// A node that is not Ready in time keeps its token until it expires, and that is an error.
func (j JoinTokens) RevokeWhenReady(ctx context.Context, t JoinToken, node string, timeout, interval time.Duration) error {
	var ready Readiness = SSHReadiness{Runner: j.Runner}
	if j.Readiness != nil {
		ready = j.Readiness
	}
	last, err := wait.Poll(ctx, timeout, interval, func(ctx context.Context) error { return ready.NodeReady(ctx, t.host, node) })
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for node %s to be Ready: %w; its join token %s stays valid until %s", node, ctx.Err(), t.ID, t.Expires.UTC().Format(time.RFC3339))
		}
		return fmt.Errorf("node %s was not Ready within %s (last: %v); its join token %s stays valid until %s ('k3s token delete %s' on %s revokes it)",
			node, timeout, last, t.ID, t.Expires.UTC().Format(time.RFC3339), t.ID, t.Server)
	}
	return j.Delete(ctx, t)
}
