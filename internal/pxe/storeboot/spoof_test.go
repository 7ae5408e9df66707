package storeboot

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nix8s/nix8s"
	"github.com/nix8s/nix8s/internal/api"
	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/inventory"
	"github.com/nix8s/nix8s/internal/jobs"
	"github.com/nix8s/nix8s/internal/pxe"
	"github.com/nix8s/nix8s/internal/secrets"
	"github.com/nix8s/nix8s/internal/sshtest"
	"github.com/nix8s/nix8s/internal/store"
	"github.com/nix8s/nix8s/internal/store/storetest"
)

// keyPlanner is the jobs' planner on the stored inventory's plans, reaching the sshtest nodes with their key.
type keyPlanner struct {
	plans   *inventory.Plans
	keyFile string
}

func (p keyPlanner) ClusterPlan(ctx context.Context, name string) (core.Cluster, error) {
	c, err := p.plans.Cluster(ctx, name)
	if err != nil {
		return core.Cluster{}, err
	}
	cl := c.Cluster
	cl.Members = maps.Clone(cl.Members) // the plans' cache is shared
	for n, m := range cl.Members {
		m.SSH.KeyFile = &p.keyFile
		cl.Members[n] = m
	}
	return cl, nil
}

// pubKey is an ed25519 public key file's `<type> <base64>`, and its fingerprint as the real ssh-keygen -lf
// prints it (what an operator reads on the machine's console).
func pubKey(t *testing.T, file string) (key, fingerprint string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	out, err := exec.Command("ssh-keygen", "-lf", file).Output()
	if err != nil {
		t.Fatal(err)
	}
	return f[0] + " " + f[1], strings.Fields(string(out))[1]
}

// The MAC spoofer of issue 11, end to end on the daemon's own code: a real PostgreSQL with the migrations,
// the real core's plan, the machine-facing HTTP endpoints, the job runner delivering over ssh, and the
// operator API. The spoofer is an sshd node (internal/sshtest, its own network namespace) at the plan IP of
// server s1, which in full mode it gets by claiming the member's MAC; it fetches the member's iPXE script
// (and with it the one-time install token) and reports done with its own host key. The member was made from
// the config and never discovered, so no hardware identity is recorded to catch it: approval is the layer
// that holds. With provisioning.pxe.approve "servers" no deliver-secrets job is queued, no token reaches the
// spoofer's sshd, the machine waits showing the spoofer's fingerprint (machine, event, metric), and the
// operator's approval with the real machine's fingerprint (read on its console) is refused. An agent under
// "servers" is delivered to with no hand on it, but only a join token made for it on the ready first server
// s0 (deleted once its node is Ready), never the cluster token or the agent token; under "all" it waits, and
// its approval delivers the same. k3s cannot run here: s0 is a real sshd, known to the daemon by its host key
// (--known-hosts), with a stand-in k3s (sshtest.K3sTokens) that makes, deletes and checks join tokens as
// `k3s token` does and takes an agent as a Ready node once its token file holds a live token of s0.
func TestMACSpooferGetsNoTokens(t *testing.T) {
	n := sshtest.Start(t, "spoofer", "s0", "a1", "a2")
	ctx := context.Background()
	spoofer, s0, a1, a2 := n.Node("spoofer"), n.Node("s0"), n.Node("a1"), n.Node("a2")
	macs := map[string]string{"s0": "52:54:00:5f:00:00", "s1": "52:54:00:5f:00:01", "a1": "52:54:00:5f:00:02", "a2": "52:54:00:5f:00:03"}
	// s0 is the cluster's first server (the alphabetically first), installed earlier and ready.
	k3s := n.K3sTokens(t, s0)
	const agentTokenFile = "/var/lib/nix8s/secrets/k3s-agent-token"
	k3s.JoinFrom(t, "lab-a1", a1, agentTokenFile)
	k3s.JoinFrom(t, "lab-a2", a2, agentTokenFile)
	cfg := fmt.Sprintf(`{"nodes": {"vm": {"install": {"disk": "/dev/vda"}}}, "clusters": {"lab": {"members": {
	  "s0": {"node": "vm", "role": "server", "ip": %q, "network": {"mac": %q}},
	  "s1": {"node": "vm", "role": "server", "ip": %q, "network": {"mac": %q}},
	  "a1": {"node": "vm", "role": "agent", "ip": %q, "network": {"mac": %q}},
	  "a2": {"node": "vm", "role": "agent", "ip": %q, "network": {"mac": %q}}}}},
	  "provisioning": {"pxe": {"server": {"ip": %q}}}}`,
		s0.IP, macs["s0"], spoofer.IP, macs["s1"], a1.IP, macs["a1"], a2.IP, macs["a2"], n.Prefix+".1")

	st := storetest.Open(t)
	var c map[string]any
	if err := json.Unmarshal([]byte(cfg), &c); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Modify(ctx, "test", func(*store.Snapshot) (map[string]any, error) { return c, nil }); err != nil {
		t.Fatal(err)
	}
	ev, err := core.New(core.Options{Lib: nix8s.Lib, CacheDir: filepath.Join(t.TempDir(), "cache")})
	if err != nil {
		t.Fatal(err)
	}
	// The setting comes from the core's PXE view, as nix8sd reads it: unset, it is "servers".
	view, err := ev.PXE(ctx, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if view.Server.Approve != "servers" {
		t.Fatalf("the core's default for provisioning.pxe.approve is %q, want servers", view.Server.Approve)
	}
	inv := inventory.New(inventory.Options{Store: st, Core: ev})
	plans := inv.Plans
	for m, mac := range macs {
		if err := EnsureAssigned(ctx, st, mac, "lab", m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.ArmInstall(ctx, "op", macs["s0"], 0, "test: s0 was installed earlier"); err != nil {
		t.Fatal(err)
	}
	for _, to := range []store.State{store.StateJoined, store.StateReady} {
		if _, err := st.UpdateMachine(ctx, "nodewatch", macs["s0"], store.MachineChange{State: &to}); err != nil {
			t.Fatal(err)
		}
	}
	secretsDir := filepath.Join(t.TempDir(), "secrets")
	if _, err := secrets.Generate(ctx, secrets.Options{Dir: secretsDir, Cluster: "lab"}); err != nil {
		t.Fatal(err)
	}
	tokens, err := secrets.Load(ctx, secretsDir, "lab", "")
	if err != nil {
		t.Fatal(err)
	}

	// The daemon's --known-hosts holds the real server s0's key alone: the spoofer's is nowhere.
	knownHosts := filepath.Join(t.TempDir(), "known_hosts")
	s0Key, _ := pubKey(t, s0.HostKeyFile()+".pub")
	if err := os.WriteFile(knownHosts, []byte(s0.IP+" "+s0Key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runner := &jobs.Runner{Store: st, Planner: keyPlanner{plans, n.KeyFile}, Worker: "w", Poll: 50 * time.Millisecond,
		Config: jobs.Config{SSHConfigFile: "none", KnownHostsFile: knownHosts, ConnectTimeout: 2 * time.Second, SecretsDir: secretsDir,
			WaitTimeout: 5 * time.Second, WaitInterval: 50 * time.Millisecond}}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); runner.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })

	imgDir := t.TempDir()
	for _, id := range []string{"installer-lab-s1", "installer-lab-a1", "installer-lab-a2"} {
		os.MkdirAll(filepath.Join(imgDir, id), 0o755)
		os.WriteFile(filepath.Join(imgDir, id, "bzImage"), []byte("k"), 0o644)
		os.WriteFile(filepath.Join(imgDir, id, "initrd"), []byte("i"), 0o644)
	}
	// The machine-facing side as nix8sd serves it; onInstalled is the daemon's wire (cmd/nix8sd/pxe.go).
	onInstalled := func(ctx context.Context, mac, hostKey string) {
		m, err := st.Machine(ctx, mac)
		if err == nil {
			_, err = runner.QueueDeliverSecrets(ctx, *m.Cluster, *m.Member, mac, hostKey)
		}
		if err != nil {
			t.Errorf("queueing the delivery of %s: %v", mac, err)
		}
	}
	machineSide := func(approve string) string {
		a := &Adapter{Store: st, Plans: plans, Images: images{}, ArmOnBoot: true, Approve: approve, Approvals: st, OnInstalled: onInstalled}
		srv := httptest.NewUnstartedServer(nil)
		url := "http://" + srv.Listener.Addr().String()
		srv.Config.Handler = &pxe.HTTP{Booter: a, Machines: a, Images: pxe.DirImages{Dir: imgDir}, BaseURL: url}
		srv.Start()
		t.Cleanup(srv.Close)
		return url
	}
	boot := machineSide(view.Server.Approve)
	bootAll := machineSide("all")

	operator := httptest.NewServer(api.New(api.Options{Store: st, Inventory: inv, Operations: runner}))
	t.Cleanup(operator.Close)
	admin, err := st.CreateToken(ctx, "admin", store.ScopeAdmin)
	if err != nil {
		t.Fatal(err)
	}
	call := func(method, url, token, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	// install plays a booted installer of mac: its iPXE script (the token is on the kernel line), then the
	// done report with hostKey through POST /machine/v1/progress.
	install := func(base, mac, hostKey string) {
		t.Helper()
		code, script := call("GET", base+"/boot/ipxe?mac="+mac, "", "")
		var tok, gen string
		for _, f := range strings.Fields(script) {
			if v, ok := strings.CutPrefix(f, "nix8s.token="); ok {
				tok = v
			}
			if v, ok := strings.CutPrefix(f, "nix8s.generation="); ok {
				gen = v
			}
		}
		if code != 200 || tok == "" || gen == "" {
			t.Fatalf("the iPXE script of %s carries no install token (%d):\n%s", mac, code, script)
		}
		body := fmt.Sprintf(`{"generation": %s, "phase": "reboot", "done": true, "hostKey": %q}`, gen, hostKey)
		if code, out := call("POST", base+"/machine/v1/progress?mac="+mac, tok, body); code != http.StatusNoContent {
			t.Fatalf("done report of %s: %d %s", mac, code, out)
		}
	}
	deliveries := func(mac string) []*store.Job {
		t.Helper()
		js, err := st.Jobs(ctx, store.JobFilter{Kind: jobs.KindDeliverSecrets, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		var out []*store.Job
		for _, j := range js {
			var p jobs.DeliverParams
			json.Unmarshal(j.Params, &p)
			if p.MAC == mac {
				out = append(out, j)
			}
		}
		return out
	}
	delivered := func(mac string) *store.Job {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			if js := deliveries(mac); len(js) == 1 {
				j, err := st.Job(ctx, js[0].ID)
				if err != nil {
					t.Fatal(err)
				}
				if j.Status != "queued" && j.Status != "running" {
					return j
				}
			} else if len(js) > 1 {
				t.Fatalf("%d deliveries queued for %s, want one", len(js), mac)
			}
			if time.Now().After(deadline) {
				t.Fatalf("no finished delivery for %s", mac)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	awaiting := func() string {
		t.Helper()
		_, metrics := call("GET", operator.URL+"/metrics", "", "")
		for _, line := range strings.Split(metrics, "\n") {
			if v, ok := strings.CutPrefix(line, "nix8s_machines_awaiting_approval "); ok {
				return v
			}
		}
		return ""
	}

	// The spoofer: server s1's MAC, its own sshd at s1's plan IP, its own host key in the done report.
	spoofKey, spoofFP := pubKey(t, spoofer.HostKeyFile()+".pub")
	install(boot, macs["s1"], spoofKey)
	m, err := st.Machine(ctx, macs["s1"])
	if err != nil {
		t.Fatal(err)
	}
	if m.AwaitingApproval == nil || m.AwaitingApproval.Fingerprint != spoofFP || m.AwaitingApproval.HostKey != spoofKey || m.State != "installing" {
		t.Fatalf("the server's machine does not wait for approval with the reported fingerprint %s: %+v", spoofFP, m.AwaitingApproval)
	}
	code, body := call("GET", operator.URL+"/v1/machines/"+macs["s1"], admin, "")
	if code != 200 || !strings.Contains(body, `"awaitingApproval":{"fingerprint":"`+spoofFP+`"`) {
		t.Errorf("GET /v1/machines/%s does not show the wait: %d %s", macs["s1"], code, body)
	}
	evs, _ := st.Events(ctx, macs["s1"], 0, 100)
	var waitEvent *store.Event
	for _, e := range evs {
		if e.Kind == "awaiting_approval" {
			waitEvent = e
		}
	}
	if waitEvent == nil || !strings.Contains(string(waitEvent.Details), spoofFP) ||
		!strings.Contains(waitEvent.Reason, "provisioning.pxe.approve is servers and lab-s1 is a server") ||
		!strings.Contains(waitEvent.Reason, "POST /v1/machines/"+macs["s1"]+"/approve") {
		t.Errorf("awaiting_approval event: %+v", waitEvent)
	}
	if got := awaiting(); got != "1" {
		t.Errorf("nix8s_machines_awaiting_approval = %q, want 1", got)
	}

	// The operator compares with the real machine's console: another key. The approval is refused.
	realKeyFile := filepath.Join(t.TempDir(), "real-s1")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", realKeyFile).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	_, realFP := pubKey(t, realKeyFile+".pub")
	code, body = call("POST", operator.URL+"/v1/machines/"+macs["s1"]+"/approve", admin, `{"fingerprint": "`+realFP+`"}`)
	if code != http.StatusConflict || !strings.Contains(body, "is not the one of the host key its installer reported ("+spoofFP+")") {
		t.Errorf("approval with the real machine's fingerprint: %d %s", code, body)
	}

	// joinToken checks that agent's delivery job j wrote a join token made for it on s0, at its token file,
	// and deleted it there once its node was Ready: never the cluster token or the agent token.
	joinToken := func(j *store.Job, agent *sshtest.Node, member string) {
		t.Helper()
		if j.Status != "succeeded" {
			t.Fatalf("the delivery of %s: %s %v\n%s", member, j.Status, j.Error, j.Log)
		}
		got := agent.Exec(t, "cat "+agentTokenFile)
		if got == tokens.AgentToken || got == tokens.Token || strings.Contains(got, tokens.AgentToken) || strings.Contains(got, tokens.Token) {
			t.Fatalf("%s holds one of the cluster's tokens at %s", member, agentTokenFile)
		}
		_, join, ok := strings.Cut(got, "::")
		if !ok || !strings.HasPrefix(got, "K10") || !slices.Contains(k3s.Tokens(t), join) {
			t.Fatalf("%s holds %q at %s, want a join token made on s0 (made: %q)", member, got, agentTokenFile, k3s.Tokens(t))
		}
		id, _, _ := strings.Cut(join, ".")
		if !slices.Contains(k3s.Deleted(t), id) {
			t.Errorf("%s's join token %s was not deleted on s0 once its node was Ready; s0's k3s calls: %q", member, id, k3s.Calls(t))
		}
		if want := "token create --ttl 1h0m0s --description nix8s:lab/" + member; !slices.Contains(k3s.Calls(t), want) {
			t.Errorf("s0's k3s was not asked %q; its calls: %q", want, k3s.Calls(t))
		}
		var res jobs.DeliverResult
		data, _ := st.JobResult(ctx, j.ID)
		json.Unmarshal(data, &res)
		if res.JoinToken == nil || res.JoinToken.ID != id || res.JoinToken.Server != "lab-s0" || !res.JoinTokenRevoked ||
			strings.Contains(string(data), join) || strings.Contains(j.Log, join) {
			t.Errorf("%s's delivery result: %s", member, data)
		}
	}

	// An agent under "servers": the honest installer's key, delivered without a hand on it, a join token.
	a1Key, _ := pubKey(t, a1.HostKeyFile()+".pub")
	if _, err := st.ArmInstall(ctx, "op", macs["a1"], 0, "reinstall requested"); err != nil { // its wave waits for s1
		t.Fatal(err)
	}
	install(boot, macs["a1"], a1Key)
	joinToken(delivered(macs["a1"]), a1, "a1")

	// Under "all" an agent waits too; its approval with the fingerprint of its console delivers.
	a2Key, a2FP := pubKey(t, a2.HostKeyFile()+".pub")
	if _, err := st.ArmInstall(ctx, "op", macs["a2"], 0, "reinstall requested"); err != nil {
		t.Fatal(err)
	}
	install(bootAll, macs["a2"], a2Key)
	if m, _ := st.Machine(ctx, macs["a2"]); m.AwaitingApproval == nil || m.AwaitingApproval.Fingerprint != a2FP || len(deliveries(macs["a2"])) != 0 {
		t.Fatalf("under approve all the agent does not wait: %+v", m.AwaitingApproval)
	}
	if got := awaiting(); got != "2" {
		t.Errorf("nix8s_machines_awaiting_approval = %q, want 2", got)
	}
	code, body = call("POST", operator.URL+"/v1/machines/"+macs["a2"]+"/approve", admin, `{"fingerprint": "`+a2FP+`"}`)
	if code != http.StatusAccepted {
		t.Fatalf("approval of a2: %d %s", code, body)
	}
	joinToken(delivered(macs["a2"]), a2, "a2")
	if made := k3s.Tokens(t); len(made) != 2 {
		t.Errorf("s0 made %d join tokens, want 2 (one per agent)", len(made))
	}

	// The runner delivered twice meanwhile, yet nothing was queued for the spoofer and its sshd holds no token.
	if js := deliveries(macs["s1"]); len(js) != 0 {
		t.Errorf("%d deliveries queued for the spoofed server", len(js))
	}
	if out := spoofer.Exec(t, "ls -A /var/lib/nix8s 2>/dev/null || true"); strings.TrimSpace(out) != "" {
		t.Errorf("the spoofer holds %q", out)
	}
	if m, _ := st.Machine(ctx, macs["s1"]); m.AwaitingApproval == nil || m.AwaitingApproval.Fingerprint != spoofFP {
		t.Errorf("the refused approval ended the wait: %+v", m.AwaitingApproval)
	}
	if got := awaiting(); got != "1" {
		t.Errorf("nix8s_machines_awaiting_approval = %q, want 1 (the spoofed server)", got)
	}
}

// A done report without a host key is not held for approval (there is nothing to compare): it goes to
// OnInstalled, whose delivery refuses to trust a key on first use and says so. NeedsApproval follows the
// setting and the member's role.
func TestApprovalWithoutHostKey(t *testing.T) {
	ctx := context.Background()
	st, a := setup(t)
	a.Approve, a.Approvals = "servers", st
	var calls []string
	a.OnInstalled = func(_ context.Context, mac, key string) { calls = append(calls, mac+"="+key) }
	mac := "52:54:00:ee:00:01"
	hw, _ := net.ParseMAC(mac)
	if err := EnsureAssigned(ctx, st, mac, "dev", "s1"); err != nil {
		t.Fatal(err)
	}
	m, err := st.ArmInstall(ctx, "op", mac, 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := a.ClaimToken(ctx, hw, m.InstallGeneration)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Progress(ctx, hw, tok, pxe.Progress{Generation: m.InstallGeneration, Phase: "done", Done: true}); err != nil {
		t.Fatal(err)
	}
	if m, _ := st.Machine(ctx, mac); len(calls) != 1 || calls[0] != mac+"=" || m.AwaitingApproval != nil {
		t.Fatalf("no host key: OnInstalled %v, awaiting %+v", calls, m.AwaitingApproval)
	}
	for setting, role := range map[string]string{"none": "server", "": "server", "servers": "agent"} {
		if NeedsApproval(setting, role) {
			t.Errorf("NeedsApproval(%q, %q)", setting, role)
		}
	}
	for setting, role := range map[string]string{"servers": "server", "all": "agent"} {
		if !NeedsApproval(setting, role) {
			t.Errorf("!NeedsApproval(%q, %q)", setting, role)
		}
	}
}
