package provision

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

// index is where call is among r's calls, -1 if absent.
func (r *recorder) index(call string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Index(r.calls, call)
}

// Agents installed over ssh (Install with Options.JoinTokens, as nix8s install and nix8sd's install jobs
// run it) get a join token of their own, made on the server this install made ready, never the agent token;
// Install waits until each is a Ready node and deletes its token there. Real sshds and real ssh throughout;
// nixos-anywhere and k3s are stand-ins (they cannot run here): the server's k3s (sshtest.K3sTokens over
// sshtest.StandIns) makes, deletes and checks tokens as `k3s token` does, and takes an agent as a Ready node
// only once the agent's token file holds a live token of that server.
func TestInstallAgentsGetJoinTokens(t *testing.T) {
	t.Parallel()
	e := setup(t, []string{"s1"}, []string{"a1", "a2"})
	k3s := e.net.K3sTokens(t, e.net.Node("s1"))
	for _, a := range []string{"a1", "a2"} {
		k3s.JoinFrom(t, "t-"+a, e.net.Node(a), agentTokenPath)
	}
	var progress bytes.Buffer
	o := e.options(&progress)
	o.JoinTokens = &JoinTokens{Runner: e.net.SSH()}
	obs := &recorder{}
	obs.observe(&o)
	r, err := Install(context.Background(), e.c, o)
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	if got := statuses(r); got != "s1=done a1=done a2=done" {
		t.Errorf("report %s", got)
	}
	made := k3s.Tokens(t)
	if len(made) != 2 {
		t.Fatalf("s1 made %d join tokens, want 2: %q", len(made), k3s.Calls(t))
	}
	// The server: the cluster's tokens, as before.
	if got := e.net.Node("s1").Exec(t, "cat "+tokenPath+"; echo; cat "+agentTokenPath); got != "server-secret\nagent-secret" {
		t.Errorf("s1's token files: %q", got)
	}
	for _, mr := range r.Members[1:] {
		node := e.net.Node(mr.Name)
		got := node.Exec(t, "cat "+agentTokenPath)
		_, join, _ := strings.Cut(got, "::")
		if strings.Contains(got, "agent-secret") || strings.Contains(got, "server-secret") || !strings.HasPrefix(got, "K10") || !slices.Contains(made, join) {
			t.Errorf("%s's token file holds %q, want a join token made on s1 (%q)", mr.Name, got, made)
		}
		if got := node.Exec(t, "stat -c '%a %u' "+agentTokenPath+"; ls -A /var/lib/nix8s/secrets"); got != "600 0\nk3s-agent-token\n" {
			t.Errorf("%s: %q", mr.Name, got)
		}
		id, _, _ := strings.Cut(join, ".")
		if mr.JoinToken == nil || mr.JoinToken.ID != id || mr.JoinToken.Server != "t-s1" || mr.JoinToken.Description != "nix8s:t/"+mr.Name ||
			!mr.JoinTokenRevoked || time.Until(mr.JoinToken.Expires) <= 50*time.Minute {
			t.Errorf("%s's report: %+v", mr.Name, mr)
		}
		if !slices.Contains(k3s.Deleted(t), id) {
			t.Errorf("%s's join token %s was not deleted on s1: %q", mr.Name, id, k3s.Calls(t))
		}
		if !slices.Contains(k3s.Calls(t), "token create --ttl 1h0m0s --description nix8s:t/"+mr.Name) {
			t.Errorf("s1 was not asked for %s's token: %q", mr.Name, k3s.Calls(t))
		}
		// Installed (token delivered), then Ready (its node, after which the token went).
		if i, j := obs.index("installed "+mr.Name), obs.index("ready "+mr.Name); i < 0 || j < i {
			t.Errorf("observer calls for %s: %q", mr.Name, obs.calls)
		}
		if !strings.Contains(progress.String(), "nix8s: t-"+mr.Name+": a Ready node; deleted its join token "+id+" on t-s1\n") {
			t.Errorf("progress lacks %s's deletion:\n%s", mr.Name, progress.String())
		}
	}
	report, _ := json.Marshal(r)
	for _, tok := range made {
		_, secret, _ := strings.Cut(tok, ".")
		if strings.Contains(progress.String(), secret) || bytes.Contains(report, []byte(secret)) {
			t.Errorf("a join token's secret is in the progress or the report")
		}
	}

	t.Run("no server makes a token: the agent fails, its token file stays empty", func(t *testing.T) {
		k3s.SetFail(t, true)
		defer k3s.SetFail(t, false)
		e.net.Node("a1").Exec(t, "rm -f "+agentTokenPath)
		var progress bytes.Buffer
		o := e.options(&progress)
		o.JoinTokens = &JoinTokens{Runner: e.net.SSH(), WaitTimeout: 500 * time.Millisecond}
		o.Reinstall, o.Members = true, []string{"a1"}
		r, err := Install(context.Background(), e.c, o)
		if err == nil || !strings.Contains(err.Error(), "t-a1: no join token within 500ms (an agent never gets the cluster's tokens)") ||
			!strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "nothing delivered") {
			t.Fatalf("%v\n%s", err, progress.String())
		}
		if got := statuses(r); got != "a1=failed" {
			t.Errorf("report %s", got)
		}
		if got := e.net.Node("a1").Exec(t, "ls -A /var/lib/nix8s/secrets"); got != "" {
			t.Errorf("a1 holds %q although no join token was made", got)
		}
		if n := len(k3s.Tokens(t)); n != 2 {
			t.Errorf("%d tokens made, want the 2 from before", n)
		}
	})

	t.Run("dry run", func(t *testing.T) {
		o := e.options(&bytes.Buffer{})
		o.JoinTokens = &JoinTokens{Runner: e.net.SSH()}
		o.DryRun, o.Members = true, []string{"a2"}
		before := len(k3s.Calls(t))
		r, err := Install(context.Background(), e.c, o)
		if err != nil {
			t.Fatal(err)
		}
		steps := strings.Join(r.Members[0].Steps, "\n")
		for _, want := range []string{"make a join token on a ready server: k3s token create --ttl 1h0m0s --description nix8s:t/a2",
			"  deliver " + agentTokenPath + " (joinToken) with mode 0600", "wait until t-a2 is a Ready node (at most 5s), then delete its join token"} {
			if !strings.Contains(steps, want) {
				t.Errorf("steps lack %q:\n%s", want, steps)
			}
		}
		if strings.Contains(steps, "agentToken") {
			t.Errorf("steps deliver the agent token:\n%s", steps)
		}
		if len(k3s.Calls(t)) != before {
			t.Errorf("a dry run called k3s")
		}
	})
}
