package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/secrets"
	"github.com/nix8s/nix8s/internal/sshtest"
	"github.com/nix8s/nix8s/internal/store"
)

const (
	tokenPath      = "/var/lib/nix8s/secrets/k3s-token"
	agentTokenPath = "/var/lib/nix8s/secrets/k3s-agent-token"
)

// plan is a fixed plan of cluster "t" (server s1, agent a1) with managed token files, as the core makes it.
type plan struct {
	c core.Cluster
}

func (p plan) ClusterPlan(_ context.Context, name string) (core.Cluster, error) {
	return p.c, nil
}

func testPlan(n *sshtest.Net) plan {
	atf := agentTokenPath
	c := core.Cluster{Name: "t", FirstServer: "s1", Servers: []string{"s1"}, Agents: []string{"a1"}, ManagedTokens: true,
		Provision: [][]string{{"s1"}, {"a1"}}, Members: map[string]core.Member{
			"s1": {Name: "s1", HostName: "t-s1", Role: "server", IP: n.Node("s1").IP, SSH: n.Endpoint("s1"),
				K3s: core.K3s{Role: "server", ClusterInit: true, TokenFile: tokenPath, AgentTokenFile: &atf}},
			"a1": {Name: "a1", HostName: "t-a1", Role: "agent", IP: n.Node("a1").IP, SSH: n.Endpoint("a1"),
				K3s: core.K3s{Role: "agent", TokenFile: agentTokenPath}},
		}}
	return plan{c: c}
}

// hostKey is the node's public host key as an installer reports it: `<type> <base64>`.
func hostKey(t *testing.T, node *sshtest.Node) string {
	t.Helper()
	pub, err := os.ReadFile(filepath.Join(node.Dir, "ssh_host_ed25519_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(pub))
	return f[0] + " " + f[1]
}

// The deliver-secrets job on real sshd nodes (internal/sshtest) and a real PostgreSQL: a server's token files
// and extra files land with mode 0600 in root-owned directories, k3s.service is restarted where it exists; a
// wrong or missing host key sends nothing. The agent gets neither of the cluster's tokens but a join token
// made for it on the ready server s1, deleted once its node is Ready. k3s cannot run here, so s1 has a
// stand-in k3s (sshtest.K3sTokens) that makes, deletes and checks tokens as `k3s token` does and records its
// arguments; ssh to both nodes is real.
func TestDeliverSecrets(t *testing.T) {
	e := newS1A1(t, "52:54:00:dd:00:")
	n, si, k3s, st, macs, secretsDir := e.n, e.si, e.k3s, e.st, e.macs, e.secretsDir
	ctx := context.Background()
	tokens, err := secrets.Load(ctx, secretsDir, "t", "")
	if err != nil {
		t.Fatal(err)
	}
	extraDir := t.TempDir()
	os.MkdirAll(filepath.Join(extraDir, "t-s1", "etc", "nix8s-extra"), 0o755)
	os.WriteFile(filepath.Join(extraDir, "t-s1", "etc", "nix8s-extra", "age.key"), []byte("AGE-SECRET-KEY-1TEST\n"), 0o600)

	// KnownHostsFile: the servers are reached, for join tokens, with the keys the daemon knows.
	r := &Runner{Store: st, Planner: testPlan(n), Worker: "w", Poll: 50 * time.Millisecond, Config: Config{
		SSHConfigFile: "none", KnownHostsFile: n.KnownHostsFile, ConnectTimeout: 2 * time.Second, SecretsDir: secretsDir,
		ExtraFiles: extraDir, WaitTimeout: 2 * time.Second, WaitInterval: 50 * time.Millisecond,
	}}
	start(t, r)
	run := func(member, key string) *store.Job {
		t.Helper()
		j, err := r.QueueDeliverSecrets(ctx, "t", member, macs[member], key)
		if err != nil {
			t.Fatal(err)
		}
		j = waitJob(t, st, j.ID)
		result, _ := st.JobResult(ctx, j.ID)
		for _, secret := range append([]string{tokens.Token, tokens.AgentToken, "AGE-SECRET-KEY"}, joinSecrets(k3s.Tokens(t))...) {
			if strings.Contains(j.Log, secret) || (j.Error != nil && strings.Contains(*j.Error, secret)) || bytes.Contains(result, []byte(secret)) {
				t.Errorf("job %d logged or recorded a secret:\n%s\n%s", j.ID, j.Log, result)
			}
		}
		return j
	}
	absent := func(node *sshtest.Node, paths ...string) {
		t.Helper()
		for _, p := range paths {
			if out := node.Exec(t, "ls -A "+filepath.Dir(p)+" 2>/dev/null || true"); strings.TrimSpace(out) != "" {
				t.Errorf("node %s: %s holds %q although nothing may be sent", node.Name, filepath.Dir(p), out)
			}
		}
	}
	s1, a1 := n.Node("s1"), n.Node("a1")
	s1.WriteFile(t, "/etc/systemd/system/k3s.service", "[Service]\nRestart=always\n", 0o644)

	// A wrong host key: ssh refuses the node, nothing is sent.
	other := filepath.Join(t.TempDir(), "other")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", other).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	pub, _ := os.ReadFile(other + ".pub")
	f := strings.Fields(string(pub))
	j := run("s1", f[0]+" "+f[1])
	if j.Status != "failed" || j.Error == nil || !strings.Contains(*j.Error, "another host key than its installer reported") ||
		!strings.Contains(*j.Error, "nothing delivered") {
		t.Errorf("wrong host key: %s %v\n%s", j.Status, j.Error, j.Log)
	}
	absent(s1, tokenPath, "/etc/nix8s-extra/age.key")

	// No host key: a clear error, nothing sent.
	j = run("a1", "")
	if j.Status != "failed" || j.Error == nil || !strings.Contains(*j.Error, "the installer reported no ssh host key") ||
		!strings.Contains(j.Log, "nix8s: hint: deliver "+agentTokenPath+" (a join token: 'k3s token create --ttl 1h0m0s --description nix8s:t/a1' on a server) by hand") {
		t.Errorf("no host key: %s %v\n%s", j.Status, j.Error, j.Log)
	}
	absent(a1, agentTokenPath)
	if calls := k3s.Calls(t); len(calls) != 0 {
		t.Errorf("a join token was made for a delivery that could not happen: %q", calls)
	}

	// No server makes a join token (its API is down): the agent's delivery fails within the wait, saying
	// why, and writes nothing; the cluster's tokens are no fallback.
	k3s.SetFail(t, true)
	j = run("a1", hostKey(t, a1))
	if j.Status != "failed" || j.Error == nil || !strings.Contains(*j.Error, "no join token within 2s") ||
		!strings.Contains(*j.Error, "no server of cluster \"t\" made a join token for a1") ||
		!strings.Contains(*j.Error, "connection refused") || !strings.Contains(*j.Error, "nothing delivered") ||
		!strings.Contains(j.Log, "nix8s: hint: an agent's join token is made with 'k3s token create' on a ready server") {
		t.Errorf("no join token: %s %v\n%s", j.Status, j.Error, j.Log)
	}
	absent(a1, agentTokenPath)
	if len(k3s.Tokens(t)) != 0 {
		t.Errorf("tokens made although creation failed: %q", k3s.Tokens(t))
	}
	k3s.SetFail(t, false)
	createCall := "token create --ttl 1h0m0s --description nix8s:t/a1"
	for _, c := range k3s.Calls(t) {
		if c != createCall {
			t.Errorf("s1's k3s was called with %q, want %q", c, createCall)
		}
	}

	// The agent answers with another host key: its token is made, then deleted, and nothing is sent.
	j = run("a1", f[0]+" "+f[1])
	if j.Status != "failed" || j.Error == nil || !strings.Contains(*j.Error, "nothing delivered") {
		t.Errorf("agent with a wrong host key: %s %v\n%s", j.Status, j.Error, j.Log)
	}
	absent(a1, agentTokenPath)
	if made, deleted := k3s.Tokens(t), k3s.Deleted(t); len(made) != 1 || len(deleted) != 1 || !strings.HasPrefix(made[0], deleted[0]+".") {
		t.Errorf("the undelivered join token was not deleted: made %q, deleted %q", made, deleted)
	}

	// The server: both tokens and its extra file, k3s restarted.
	j = run("s1", hostKey(t, s1))
	if j.Status != "succeeded" {
		t.Fatalf("delivery to s1: %s %v\n%s", j.Status, j.Error, j.Log)
	}
	for p, want := range map[string]string{tokenPath: tokens.Token, agentTokenPath: tokens.AgentToken, "/etc/nix8s-extra/age.key": "AGE-SECRET-KEY-1TEST\n"} {
		if got := s1.Exec(t, "cat "+p); got != want {
			t.Errorf("s1:%s holds %q, want %q", p, got, want)
		}
		if got := s1.Exec(t, "stat -c '%a %u %g' "+p); got != "600 0 0\n" {
			t.Errorf("s1:%s mode and owner %q, want 600 0 0", p, got)
		}
	}
	for p, want := range map[string]string{"/var/lib/nix8s/secrets": "700 0", "/var/lib/nix8s": "755 0", "/etc/nix8s-extra": "700 0"} {
		if got := strings.TrimSpace(s1.Exec(t, "stat -c '%a %u' "+p)); got != want {
			t.Errorf("s1:%s is %q, want %q", p, got, want)
		}
	}
	if left := s1.Exec(t, "ls -A /var/lib/nix8s/secrets"); left != "k3s-agent-token\nk3s-token\n" {
		t.Errorf("s1:/var/lib/nix8s/secrets holds %q (temporary files left?)", left)
	}
	if log := strings.Join(si.Log(t), "\n"); !strings.Contains(log, "systemctl s1 --no-block restart k3s.service") {
		t.Errorf("k3s.service of s1 not restarted; stand-ins' log:\n%s", log)
	}
	var res DeliverResult
	data, _ := st.JobResult(ctx, j.ID)
	json.Unmarshal(data, &res)
	if !res.K3sRestarted || len(res.Files) != 3 || bytes.Contains(data, []byte(tokens.Token)) {
		t.Errorf("result: %s", data)
	}
	for _, want := range []string{"waiting for ssh on " + s1.IP + " with the host key the installer reported (ssh-ed25519 SHA256:",
		"delivered " + tokenPath + " (token) with mode 0600", "k3s.service restarted"} {
		if !strings.Contains(j.Log, want) {
			t.Errorf("log lacks %q:\n%s", want, j.Log)
		}
	}

	// The agent: a join token of its own at its token file, neither of the cluster's tokens; no k3s.service
	// there, so nothing is restarted. Once its node is Ready on s1 the token is deleted there.
	j = run("a1", hostKey(t, a1))
	if j.Status != "succeeded" || !strings.Contains(j.Log, "no k3s.service on the node; nothing restarted") {
		t.Fatalf("delivery to a1: %s %v\n%s", j.Status, j.Error, j.Log)
	}
	made := k3s.Tokens(t)
	if len(made) != 2 {
		t.Fatalf("s1 made %d join tokens, want 2 (one deleted after the wrong host key, one delivered)", len(made))
	}
	join, id := made[1], strings.SplitN(made[1], ".", 2)[0]
	got := a1.Exec(t, "cat "+agentTokenPath)
	if !strings.HasSuffix(got, "::"+join) || !strings.HasPrefix(got, "K10") || got == tokens.Token || got == tokens.AgentToken {
		t.Errorf("a1:%s holds %q, want the join token made for it (…::%s)", agentTokenPath, got, join)
	}
	if got := a1.Exec(t, "stat -c '%a %u' "+agentTokenPath+"; ls -A /var/lib/nix8s/secrets"); got != "600 0\nk3s-agent-token\n" {
		t.Errorf("a1: %q", got)
	}
	for _, c := range k3s.Calls(t) {
		if strings.HasPrefix(c, "token create") && c != createCall {
			t.Errorf("s1's k3s was called with %q, want %q", c, createCall)
		}
	}
	if calls := k3s.Calls(t); calls[len(calls)-1] != "token delete "+id {
		t.Errorf("the delivered join token %s was not deleted last; s1's k3s calls: %q", id, calls)
	}
	res = DeliverResult{}
	data, _ = st.JobResult(ctx, j.ID)
	json.Unmarshal(data, &res)
	if res.JoinToken == nil || res.JoinToken.ID != id || res.JoinToken.Description != "nix8s:t/a1" || res.JoinToken.Server != "t-s1" ||
		!res.JoinTokenRevoked || time.Until(res.JoinToken.Expires) <= 50*time.Minute {
		t.Errorf("a1's result: %s", data)
	}
	for _, want := range []string{"join token " + id + " made on t-s1", "deleted its join token " + id + " on t-s1"} {
		if !strings.Contains(j.Log, want) {
			t.Errorf("log lacks %q:\n%s", want, j.Log)
		}
	}
	if log := strings.Join(si.Log(t), "\n"); strings.Contains(log, "systemctl a1") {
		t.Errorf("a1 has no k3s.service, yet systemctl was asked to restart one:\n%s", log)
	}
	absent(a1, "/etc/nix8s-extra/age.key")
	// The server's delivery made no join token: servers join with the cluster token only.
	if n := len(k3s.Tokens(t)); n != 2 {
		t.Errorf("%d join tokens made, want 2", n)
	}

	// A delivery for a machine that moved to another member sends nothing.
	if _, err := st.UpdateMachine(ctx, "test", macs["a1"], store.MachineChange{Unassign: true}); err != nil {
		t.Fatal(err)
	}
	j = run("a1", hostKey(t, a1))
	if j.Status != "failed" || j.Error == nil || !strings.Contains(*j.Error, "no longer assigned to t.a1") {
		t.Errorf("unassigned machine: %s %v", j.Status, j.Error)
	}
}

// Without a secrets directory and extra files there is nothing to deliver: the job says so and succeeds,
// without a host key and without reaching the node.
func TestDeliverNothing(t *testing.T) {
	st := newStore(t)
	c := core.Cluster{Name: "t", Members: map[string]core.Member{"s1": {Name: "s1", HostName: "t-s1", Role: "server",
		IP: "192.0.2.1", K3s: core.K3s{Role: "server", TokenFile: tokenPath}}}}
	r := &Runner{Store: st, Planner: plan{c: c}}
	cluster, member := "t", "s1"
	var log bytes.Buffer
	res, err := r.deliverSecrets(context.Background(), &store.Job{Cluster: &cluster, Member: &member, Params: json.RawMessage(`{}`)}, &log)
	if err != nil || !strings.Contains(log.String(), "nothing to deliver") || res.(*DeliverResult).K3sRestarted {
		t.Errorf("%v %v\n%s", res, err, log.String())
	}
}

// joinSecrets are the secret halves of bootstrap tokens <id>.<secret>.
func joinSecrets(tokens []string) []string {
	var out []string
	for _, t := range tokens {
		if _, secret, ok := strings.Cut(t, "."); ok {
			out = append(out, secret)
		}
	}
	return out
}

// A config that brings its own token files (secrets.tokenFile, here without an agent token file) gets none
// from nix8s, for servers and agents alike, even with a secrets directory: nothing is loaded (the directory is
// empty), no join token is made, no host is reached.
func TestDeliverNoTokensForUserManagedSecrets(t *testing.T) {
	st := newStore(t)
	own := "/run/secrets/k3s-token"
	c := core.Cluster{Name: "t", FirstServer: "s1", Servers: []string{"s1"}, Agents: []string{"a1"}, Members: map[string]core.Member{
		"s1": {Name: "s1", HostName: "t-s1", Role: "server", IP: "192.0.2.1", K3s: core.K3s{Role: "server", TokenFile: own}},
		"a1": {Name: "a1", HostName: "t-a1", Role: "agent", IP: "192.0.2.2", K3s: core.K3s{Role: "agent", TokenFile: own}},
	}}
	r := &Runner{Store: st, Planner: plan{c: c}, Config: Config{SecretsDir: t.TempDir()}}
	cluster := "t"
	for _, member := range []string{"s1", "a1"} {
		var log bytes.Buffer
		res, err := r.deliverSecrets(context.Background(), &store.Job{Cluster: &cluster, Member: &member, Params: json.RawMessage(`{"hostKey":""}`)}, &log)
		d := res.(*DeliverResult)
		if err != nil || len(d.Files) != 0 || d.JoinToken != nil ||
			!strings.Contains(log.String(), "the config brings its own token files (secrets.tokenFile, agentTokenFile or token): nix8s delivers none") ||
			!strings.Contains(log.String(), "nothing to deliver") {
			t.Errorf("%s: %+v %v\n%s", member, d, err, log.String())
		}
	}
}

// s1a1 is what the delivery tests start from: real sshd nodes s1 (a ready server with the stand-in k3s that
// makes join tokens: k3s cannot run here) and a1 (an agent that joins with one), a real PostgreSQL holding
// the two-member cluster t with a machine of macPrefix+"01" assigned to s1 and macPrefix+"02" to a1, and
// the cluster's generated token files.
type s1a1 struct {
	n          *sshtest.Net
	si         *sshtest.StandIns
	k3s        *sshtest.K3sTokens
	st         *store.Store
	macs       map[string]string
	secretsDir string
}

func newS1A1(t *testing.T, macPrefix string) *s1a1 {
	t.Helper()
	e := &s1a1{n: sshtest.Start(t, "s1", "a1")}
	e.si = e.n.StandIns(t)
	e.k3s = e.n.K3sTokens(t, e.n.Node("s1"))
	e.k3s.JoinFrom(t, "t-a1", e.n.Node("a1"), agentTokenPath)
	e.st = newStore(t)
	ctx := context.Background()
	inv := map[string]any{"clusters": map[string]any{"t": map[string]any{"members": map[string]any{
		"s1": map[string]any{"role": "server", "ip": e.n.Node("s1").IP},
		"a1": map[string]any{"role": "agent", "ip": e.n.Node("a1").IP},
	}}}}
	if _, err := e.st.Modify(ctx, "test", func(*store.Snapshot) (map[string]any, error) { return inv, nil }); err != nil {
		t.Fatal(err)
	}
	e.macs = map[string]string{"s1": macPrefix + "01", "a1": macPrefix + "02"}
	for m, mac := range e.macs {
		if _, err := e.st.CreateMachine(ctx, "test", mac, nil, "test"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.st.UpdateMachine(ctx, "test", mac, store.MachineChange{Assign: &[2]string{"t", m}}); err != nil {
			t.Fatal(err)
		}
	}
	e.secretsDir = filepath.Join(t.TempDir(), "secrets")
	if _, err := secrets.Generate(ctx, secrets.Options{Dir: e.secretsDir, Cluster: "t"}); err != nil {
		t.Fatal(err)
	}
	return e
}
