package api

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/nix8s/nix8s/internal/jobs"
	"github.com/nix8s/nix8s/internal/store"
)

// POST /v1/machines/{mac}/approve: a machine whose installer reported done and whose secrets wait shows the
// reported fingerprint; a malformed fingerprint is a 400, another one a 409 recorded as approval_refused with
// nothing queued, the right one queues the deliver-secrets job pinned to the reported key (202) and clears the
// wait; approving again is a 409; read tokens may not approve. Every response is checked against the spec.
func TestApprove(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	expect(t, e.putConfigYAML(readFile(t, "testdata/config.yaml")), 200, "")
	mac := "aa:bb:cc:dd:ee:01"
	expect(t, e.req("POST", "/v1/machines", e.admin, `{"mac": "`+mac+`"}`), 201, "")
	expect(t, e.req("POST", "/v1/machines/"+mac+"/assign", e.admin, `{"cluster": "dev", "member": "server"}`), 200, "")
	expect(t, e.req("POST", "/v1/machines/"+mac+"/approve", e.admin, `{"fingerprint": "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`), 409, "conflict")

	// The installer's done report, as storeboot records it, then the wait.
	m, err := e.st.ArmInstall(ctx, "test", mac, 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	tok := sha256.Sum256([]byte("token"))
	if err := e.st.ClaimInstallToken(ctx, "test", mac, m.InstallGeneration, tok); err != nil {
		t.Fatal(err)
	}
	const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOvD8Dx1Tm0iULqKVZ1m2ZfmoTqHcTdk3GJ0hZr9Z4Zb"
	const fp = "SHA256:1jx6Xgd3Y9ZG7sV2U6Ku4Sw0Jtl3mM0xQb2q1lPdCkE" // not the key's: the store keeps what it is told
	if err := e.st.ReportInstall(ctx, "machine:"+mac, mac, tok, store.InstallReport{Generation: m.InstallGeneration, Phase: "reboot", Done: true, HostKey: key}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.AwaitApproval(ctx, "nix8sd:pxe", mac, key, fp, "waiting for the operator"); err != nil {
		t.Fatal(err)
	}

	got := expect(t, e.req("GET", "/v1/machines/"+mac, e.read, nil), 200, "")
	wait, _ := got["awaitingApproval"].(map[string]any)
	if wait["fingerprint"] != fp || wait["hostKey"] != key || got["stateDeadline"] != nil {
		t.Fatalf("awaiting approval: %v (deadline %v, want paused)", wait, got["stateDeadline"])
	}
	if n := gauge(t, e, "nix8s_machines_awaiting_approval"); n != "1" {
		t.Errorf("nix8s_machines_awaiting_approval = %q, want 1", n)
	}

	expect(t, e.req("POST", "/v1/machines/"+mac+"/approve", e.read, `{"fingerprint": "`+fp+`"}`), 403, "forbidden")
	r := expect(t, e.req("POST", "/v1/machines/"+mac+"/approve", e.admin, `{"fingerprint": "ssh-ed25519 SHA256:x"}`), 400, "bad_request")
	if p := paths(r); len(p) != 1 || p[0] != "fingerprint" {
		t.Errorf("malformed fingerprint: %v", r)
	}
	expect(t, e.req("POST", "/v1/machines/"+mac+"/approve", e.admin, `{}`), 400, "bad_request")
	expect(t, e.req("POST", "/v1/machines/"+mac+"/approve", e.admin, `{"fingerprint": "`+fp+`", "colour": 1}`), 400, "bad_request")
	other := "SHA256:" + strings.Repeat("B", 43)
	r = expect(t, e.req("POST", "/v1/machines/"+mac+"/approve", e.admin, `{"fingerprint": "`+other+`"}`), 409, "conflict")
	if msg := r["message"].(string); !strings.Contains(msg, "is not the one of the host key its installer reported ("+fp+")") ||
		!strings.Contains(msg, "nothing delivered") {
		t.Errorf("mismatch message: %s", msg)
	}
	if js, _ := e.st.Jobs(ctx, store.JobFilter{Kind: jobs.KindDeliverSecrets, Limit: 10}); len(js) != 0 {
		t.Fatalf("a refused approval queued %d jobs", len(js))
	}
	if got := expect(t, e.req("GET", "/v1/machines/"+mac, e.read, nil), 200, ""); got["awaitingApproval"] == nil {
		t.Fatal("a refused approval cleared the wait")
	}

	res := e.req("POST", "/v1/machines/"+mac+"/approve", e.admin, `{"fingerprint": "`+fp+`", "reason": "read on the console"}`)
	j := expect(t, res, 202, "")
	if j["kind"] != jobs.KindDeliverSecrets || j["cluster"] != "dev" || j["member"] != "server" || j["status"] != "queued" ||
		!strings.HasPrefix(res.header.Get("Location"), "/v1/jobs/") {
		t.Fatalf("approved: %v %v", j, res.header)
	}
	var params jobs.DeliverParams
	data, _ := json.Marshal(j["params"])
	if err := json.Unmarshal(data, &params); err != nil || params.HostKey != key || params.MAC != mac {
		t.Fatalf("the job is not pinned to the reported key: %s %v", data, err)
	}
	got = expect(t, e.req("GET", "/v1/machines/"+mac, e.read, nil), 200, "")
	if got["awaitingApproval"] != nil || got["stateDeadline"] == nil || got["state"] != "installing" {
		t.Fatalf("after approval: %v", got)
	}
	if n := gauge(t, e, "nix8s_machines_awaiting_approval"); n != "0" {
		t.Errorf("nix8s_machines_awaiting_approval = %q after approval, want 0", n)
	}
	expect(t, e.req("POST", "/v1/machines/"+mac+"/approve", e.admin, `{"fingerprint": "`+fp+`"}`), 409, "conflict")

	evs := expect(t, e.req("GET", "/v1/machines/"+mac+"/events", e.read, nil), 200, "")
	var kinds []string
	for _, it := range evs["items"].([]any) {
		if k := it.(map[string]any)["kind"].(string); strings.Contains(k, "approv") {
			who, _, _ := strings.Cut(it.(map[string]any)["actor"].(string), "/")
			kinds = append(kinds, k+" by "+who)
		}
	}
	if got := strings.Join(kinds, ","); got != "awaiting_approval by nix8sd:pxe,approval_refused by api:token,approved by api:token" {
		t.Errorf("approval events: %s", got)
	}
	expect(t, e.req("POST", "/v1/machines/aa:bb:cc:dd:ee:99/approve", e.admin, `{"fingerprint": "`+fp+`"}`), 404, "not_found")
}

// gauge reads an unlabelled metric's value from /metrics.
func gauge(t *testing.T, e *env, name string) string {
	t.Helper()
	res, err := http.Get(e.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}
