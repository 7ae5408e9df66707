package jobs

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix8s/nix8s/internal/secrets"
)

// An install job (over ssh) gives its agents join tokens of their own, made on the server it installed, as
// network installs do: never the agent token; the agent's machine is ready once Install deleted its token,
// and the job's own wait for agents leaves it so. Real sshds and PostgreSQL; nixos-anywhere and k3s are
// stand-ins (sshtest.StandIns, sshtest.K3sTokens): they cannot run here.
func TestInstallJobGivesAgentsJoinTokens(t *testing.T) {
	e := newS1A1(t, "52:54:00:ee:01:")
	n, si, k3s, st, macs, secretsDir := e.n, e.si, e.k3s, e.st, e.macs, e.secretsDir
	ctx := context.Background()
	tokens, err := secrets.Load(ctx, secretsDir, "t", "")
	if err != nil {
		t.Fatal(err)
	}
	r := &Runner{Store: st, Planner: testPlan(n), Worker: "w", Poll: 50 * time.Millisecond, Config: Config{
		KnownHostsFile: n.KnownHostsFile, SSHConfigFile: "none", ConnectTimeout: 2 * time.Second, SecretsDir: secretsDir,
		NixosAnywhere: filepath.Join(si.LocalBin, "nixos-anywhere"), WaitTimeout: 5 * time.Second, WaitInterval: 50 * time.Millisecond,
	}}
	start(t, r)
	cl := "t"
	j, err := st.NewJob(ctx, KindInstall, &cl, nil, json.RawMessage(`{"all": true}`))
	if err != nil {
		t.Fatal(err)
	}
	r.Wake()
	j = waitJob(t, st, j.ID)
	if j.Status != "succeeded" {
		t.Fatalf("install: %s %v\n%s", j.Status, j.Error, j.Log)
	}
	made := k3s.Tokens(t)
	got := n.Node("a1").Exec(t, "cat "+agentTokenPath)
	_, join, _ := strings.Cut(got, "::")
	if len(made) != 1 || join != made[0] || strings.Contains(got, tokens.AgentToken) || strings.Contains(got, tokens.Token) {
		t.Fatalf("a1 holds %q, want the join token made on s1 (%q)", got, made)
	}
	id, _, _ := strings.Cut(join, ".")
	if deleted := k3s.Deleted(t); len(deleted) != 1 || deleted[0] != id {
		t.Errorf("deleted %q, want %s", deleted, id)
	}
	if got := n.Node("s1").Exec(t, "cat "+agentTokenPath); got != tokens.AgentToken {
		t.Errorf("s1 lacks the agent token")
	}
	for m, mac := range macs {
		if mach, _ := st.Machine(ctx, mac); mach.State != "ready" {
			t.Errorf("%s's machine is %s, want ready", m, mach.State)
		}
	}
	_, secret, _ := strings.Cut(join, ".")
	result, _ := st.JobResult(ctx, j.ID)
	if strings.Contains(j.Log, secret) || strings.Contains(string(result), secret) || !strings.Contains(string(result), `"joinTokenRevoked": true`) ||
		!strings.Contains(j.Log, "t-a1: a Ready node; deleted its join token "+id+" on t-s1") || strings.Contains(j.Log, "warning") {
		t.Errorf("job log or result:\n%s\n%s", j.Log, result)
	}
}
