package api

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/nix8s/nix8s/internal/jobs"
	"github.com/nix8s/nix8s/internal/secrets"
	"github.com/nix8s/nix8s/internal/sshtest"
)

// opsEnv is the API with a job runner, over a cluster "t" of real sshd nodes in network namespaces
// (internal/sshtest): servers s1, s2 and agents a1, a2, each with a machine assigned in PostgreSQL. Only
// nixos-anywhere and k3s are stand-ins (internal/sshtest/standins.go): the real ones cannot run here
// (nixos-anywhere kexecs and partitions a machine; k3s needs a kernel it can own); they act on the nodes
// through the real sshds and record what they were asked.
type opsEnv struct {
	*env
	net    *sshtest.Net
	si     *sshtest.StandIns
	runner *jobs.Runner
	macs   map[string]string // member -> machine MAC
}

var opsMembers = []struct{ name, role string }{{"s1", "server"}, {"s2", "server"}, {"a1", "agent"}, {"a2", "agent"}}

func newOpsEnv(t *testing.T) *opsEnv {
	t.Helper()
	n := sshtest.Start(t, "s1", "s2", "a1", "a2")
	e := &opsEnv{net: n, si: n.StandIns(t), macs: map[string]string{}}
	// The agents' join tokens are made on s1 (k3s is a stand-in: it cannot run here), which takes an agent as a
	// Ready node once its token file holds a live token it made.
	k3s := n.K3sTokens(t, n.Node("s1"))
	for _, a := range []string{"a1", "a2"} {
		k3s.JoinFrom(t, "t-"+a, n.Node(a), "/var/lib/nix8s/secrets/k3s-agent-token")
	}
	secretsDir := filepath.Join(t.TempDir(), "secrets")
	if _, err := secrets.Generate(context.Background(), secrets.Options{Dir: secretsDir, Cluster: "t"}); err != nil {
		t.Fatal(err)
	}
	e.env = newEnv(t, func(env *env, o *Options) {
		e.runner = &jobs.Runner{
			Store:   env.st,
			Planner: o.Inventory,
			Config: jobs.Config{
				Flake:          env.ws,
				KnownHostsFile: n.KnownHostsFile,
				SSHConfigFile:  "none",
				ConnectTimeout: 2 * time.Second,
				NixosAnywhere:  filepath.Join(e.si.LocalBin, "nixos-anywhere"),
				SecretsDir:     secretsDir,
				WaitTimeout:    5 * time.Second,
				WaitInterval:   50 * time.Millisecond,
			},
			Worker: "test-daemon",
			Poll:   100 * time.Millisecond,
		}
		o.Operations = e.runner
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); e.runner.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })

	cfg := "nodes:\n  std:\n    install:\n      disk: /dev/sda\nclusters:\n  t:\n    members:\n"
	for _, m := range opsMembers {
		cfg += "      " + m.name + ": { node: std, role: " + m.role + ", ip: " + n.Node(m.name).IP + " }\n"
	}
	cfg += "provisioning:\n  nixos-anywhere:\n    ssh:\n      user: root\n      keyFile: " + n.KeyFile + "\n"
	expect(t, e.putConfigYAML([]byte(cfg)), 200, "")
	for i, m := range opsMembers {
		mac := fmt.Sprintf("aa:bb:cc:00:00:%02x", i+1)
		e.macs[m.name] = mac
		expect(t, e.req("POST", "/v1/machines", e.admin, fmt.Sprintf(`{"mac": %q}`, mac)), 201, "")
		expect(t, e.req("POST", "/v1/machines/"+mac+"/assign", e.admin, fmt.Sprintf(`{"cluster": "t", "member": %q}`, m.name)), 200, "")
	}
	return e
}

// wait polls the job until it has finished and returns it.
func (e *opsEnv) wait(t *testing.T, id any) map[string]any {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		j := expect(t, e.req("GET", fmt.Sprintf("/v1/jobs/%v", id), e.read, nil), 200, "")
		if s := j["status"]; s != "queued" && s != "running" {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %v still %v after 90s; log:\n%s", id, j["status"], j["log"])
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// states are the machines' states by member, in opsMembers order: "s1=ready s2=ready ...".
func (e *opsEnv) states(t *testing.T) string {
	t.Helper()
	var out []string
	for _, m := range opsMembers {
		mach := expect(t, e.req("GET", "/v1/machines/"+e.macs[m.name], e.read, nil), 200, "")
		out = append(out, m.name+"="+mach["state"].(string))
	}
	return strings.Join(out, " ")
}

// stateEvents are a machine's state changes as "actor:state".
func (e *opsEnv) stateEvents(t *testing.T, member string) []string {
	t.Helper()
	m := expect(t, e.req("GET", "/v1/machines/"+e.macs[member]+"/events", e.read, nil), 200, "")
	var out []string
	for _, it := range m["items"].([]any) {
		ev := it.(map[string]any)
		if ev["kind"] == "state" {
			out = append(out, fmt.Sprintf("%s:%s", ev["actor"], ev["newState"]))
		}
	}
	return out
}

func reportStatuses(j map[string]any) string {
	res, _ := j["result"].(map[string]any)
	ms, _ := res["members"].([]any)
	var out []string
	for _, m := range ms {
		mm := m.(map[string]any)
		out = append(out, fmt.Sprintf("%s=%s", mm["name"], mm["status"]))
	}
	return strings.Join(out, " ")
}

func TestInstallJob(t *testing.T) {
	e := newOpsEnv(t)

	// Bad requests queue nothing.
	expect(t, e.req("POST", "/v1/clusters/t/install", e.read, `{"all": true}`), 403, "forbidden")
	expect(t, e.req("POST", "/v1/clusters/nope/install", e.admin, `{"all": true}`), 404, "not_found")
	m := expect(t, e.req("POST", "/v1/clusters/t/install", e.admin, `{"members": ["a1", "ghost"]}`), 422, "invalid_config")
	if p := paths(m); len(p) != 1 || p[0] != "members[1]" {
		t.Errorf("unknown member paths: %v", p)
	}
	expect(t, e.req("POST", "/v1/clusters/t/install", e.admin, `{}`), 400, "bad_request")
	expect(t, e.req("POST", "/v1/clusters/t/install", e.admin, `{"all": true, "members": ["a1"]}`), 400, "bad_request")
	expect(t, e.req("POST", "/v1/clusters/t/install", e.admin, `{"all": true, "wipe": "yes"}`), 400, "bad_request")
	m = expect(t, e.req("POST", "/v1/clusters/t/install", e.admin, `{"all": true, "parallel": -1}`), 400, "bad_request")
	if p := paths(m); len(p) != 1 || p[0] != "parallel" {
		t.Errorf("negative parallel paths: %v", p)
	}
	if m := expect(t, e.req("GET", "/v1/jobs", e.read, nil), 200, ""); len(m["items"].([]any)) != 0 {
		t.Fatalf("bad requests queued jobs: %v", m["items"])
	}

	// A dry run reports the steps and touches nothing.
	r := e.req("POST", "/v1/clusters/t/install", e.admin, `{"all": true, "dryRun": true}`)
	j := expect(t, r, 202, "")
	j = e.wait(t, j["id"])
	if j["status"] != "succeeded" || reportStatuses(j) != "s1=planned s2=planned a1=planned a2=planned" || len(e.si.Log(t)) != 0 {
		t.Fatalf("dry run: %v %s, stand-in log %q\n%s", j["status"], reportStatuses(j), e.si.Log(t), j["log"])
	}
	if got := e.states(t); got != "s1=discovered s2=discovered a1=discovered a2=discovered" {
		t.Fatalf("a dry run moved machines: %s", got)
	}

	r = e.req("POST", "/v1/clusters/t/install", e.admin, `{"all": true, "parallel": 2}`)
	j = expect(t, r, 202, "")
	if j["status"] != "queued" || j["kind"] != "install" || j["cluster"] != "t" || r.header.Get("Location") != fmt.Sprintf("/v1/jobs/%v", j["id"]) {
		t.Fatalf("queued job: %v, Location %q", j, r.header.Get("Location"))
	}
	id := j["id"]
	// One operation per cluster at a time; a dry run may always go.
	m = expect(t, e.req("POST", "/v1/clusters/t/rollout", e.admin, `{"all": true}`), 409, "conflict")
	if want := fmt.Sprintf("cluster \"t\" has job %v (install)", id); !strings.HasPrefix(m["message"].(string), want) {
		t.Errorf("message %v, want %s...", m["message"], want)
	}
	dry := expect(t, e.req("POST", "/v1/clusters/t/install", e.admin, `{"members": ["a1"], "dryRun": true}`), 202, "")
	if j := e.wait(t, dry["id"]); j["status"] != "succeeded" || reportStatuses(j) != "a1=planned" {
		t.Errorf("dry run beside the install: %v %s", j["status"], reportStatuses(j))
	}
	j = e.wait(t, id)
	log, _ := j["log"].(string)
	t.Logf("job log:\n%s", log)
	if j["status"] != "succeeded" || j["worker"] != "test-daemon" {
		t.Fatalf("job %v by %v: %v\n%s", j["status"], j["worker"], j["error"], log)
	}
	// The log is the operation's progress: the plan's waves in order, nixos-anywhere's output, the machines.
	var at []int
	for _, want := range []string{"nix8s: t: wave 1/3: s1\n", "nix8s: t: wave 2/3: s2\n", "nix8s: t: wave 3/3: a1, a2\n", "nix8s: t: 4 done\n"} {
		i := strings.Index(log, want)
		if i < 0 {
			t.Fatalf("job log lacks %q:\n%s", want, log)
		}
		at = append(at, i)
	}
	if !slices.IsSorted(at) {
		t.Errorf("waves out of order in the log:\n%s", log)
	}
	for _, want := range []string{"[t-a1] installing t-a1\n", "nix8s: t-s2: machine " + e.macs["s2"] + " is ready\n"} {
		if !strings.Contains(log, want) {
			t.Errorf("job log lacks %q:\n%s", want, log)
		}
	}
	if got := reportStatuses(j); got != "s1=done s2=done a1=done a2=done" {
		t.Errorf("result %s", got)
	}

	// Every machine went installing -> joined -> ready, recorded with the job as actor.
	if got := e.states(t); got != "s1=ready s2=ready a1=ready a2=ready" {
		t.Errorf("machine states %s", got)
	}
	actor := fmt.Sprintf("job:%v", id)
	for _, m := range opsMembers {
		want := []string{actor + ":installing", actor + ":joined", actor + ":ready"}
		if got := e.stateEvents(t, m.name); !slices.Equal(got, want) {
			t.Errorf("%s's state events %v, want %v", m.name, got, want)
		}
	}

	// Installing again skips every member and leaves the machines alone.
	j = e.wait(t, expect(t, e.req("POST", "/v1/clusters/t/install", e.admin, `{"all": true}`), 202, "")["id"])
	if j["status"] != "succeeded" || reportStatuses(j) != "s1=skipped s2=skipped a1=skipped a2=skipped" {
		t.Errorf("second install: %v %s", j["status"], reportStatuses(j))
	}
	if got := e.stateEvents(t, "a1"); len(got) != 3 {
		t.Errorf("a skipped member's machine moved: %v", got)
	}

	// A locked machine is not reinstalled: the database refuses installing before nixos-anywhere runs.
	expect(t, e.req("POST", "/v1/machines/"+e.macs["a2"]+"/lock", e.admin, nil), 200, "")
	before := len(e.si.Log(t))
	j = e.wait(t, expect(t, e.req("POST", "/v1/clusters/t/install", e.admin, `{"members": ["a2"], "reinstall": true}`), 202, "")["id"])
	if j["status"] != "failed" || !strings.Contains(j["error"].(string), "locked") || reportStatuses(j) != "a2=failed" {
		t.Errorf("reinstall of a locked machine: %v %v %s", j["status"], j["error"], reportStatuses(j))
	}
	if len(e.si.Log(t)) != before {
		t.Errorf("nixos-anywhere ran on a locked machine: %q", e.si.Log(t)[before:])
	}
	if got := e.states(t); got != "s1=ready s2=ready a1=ready a2=ready" {
		t.Errorf("machine states after the refused reinstall %s", got)
	}

	t.Run("kubeconfig", func(t *testing.T) {
		e.net.Node("s1").WriteFile(t, "/etc/rancher/k3s/k3s.yaml", k3sYAML, 0o600)
		expect(t, e.req("GET", "/v1/clusters/t/kubeconfig", e.read, nil), 403, "forbidden")
		expect(t, e.req("GET", "/v1/clusters/nope/kubeconfig", e.admin, nil), 404, "not_found")
		r := e.req("GET", "/v1/clusters/t/kubeconfig", e.admin, nil)
		if r.status != 200 || r.header.Get("Content-Type") != "application/yaml" {
			t.Fatalf("kubeconfig: %d %s: %s", r.status, r.header.Get("Content-Type"), r.body)
		}
		var kc struct {
			Clusters []struct {
				Name    string `yaml:"name"`
				Cluster struct {
					Server string `yaml:"server"`
				} `yaml:"cluster"`
			} `yaml:"clusters"`
			Current string `yaml:"current-context"`
		}
		if err := yaml.Unmarshal(r.body, &kc); err != nil {
			t.Fatal(err)
		}
		plan := expect(t, e.req("GET", "/v1/clusters/t/plan", e.read, nil), 200, "")
		if len(kc.Clusters) != 1 || kc.Clusters[0].Name != "t" || kc.Current != "t" || kc.Clusters[0].Cluster.Server != plan["apiEndpoint"] {
			t.Errorf("kubeconfig not pointed at %v: %s", plan["apiEndpoint"], r.body)
		}
		// No server ready: 503 with why.
		e.si.Register(t, "t-s1", false)
		e.si.Register(t, "t-s2", false)
		m := expect(t, e.req("GET", "/v1/clusters/t/kubeconfig", e.admin, nil), 503, "unavailable")
		if !strings.Contains(m["message"].(string), `no server of cluster "t" gave its kubeconfig`) {
			t.Errorf("message %v", m["message"])
		}
	})

	t.Run("rollout", func(t *testing.T) {
		expect(t, e.req("POST", "/v1/clusters/t/rollout", e.read, `{"all": true}`), 403, "forbidden")
		expect(t, e.req("POST", "/v1/clusters/nope/rollout", e.admin, `{"all": true}`), 404, "not_found")
		m := expect(t, e.req("POST", "/v1/clusters/t/rollout", e.admin, `{"members": ["zz"]}`), 422, "invalid_config")
		if p := paths(m); len(p) != 1 || p[0] != "members[0]" {
			t.Errorf("unknown member paths: %v", p)
		}
		m = expect(t, e.req("POST", "/v1/clusters/t/rollout", e.admin, `{"all": true, "maxUnavailable": -2}`), 400, "bad_request")
		if p := paths(m); len(p) != 1 || p[0] != "maxUnavailable" {
			t.Errorf("negative maxUnavailable paths: %v", p)
		}
		// A dry run: the plan's rollout order (agents, other servers, the first server last).
		j := e.wait(t, expect(t, e.req("POST", "/v1/clusters/t/rollout", e.admin, `{"all": true, "maxUnavailable": 2, "dryRun": true}`), 202, "")["id"])
		if j["status"] != "succeeded" || reportStatuses(j) != "a1=planned a2=planned s2=planned s1=planned" {
			t.Errorf("rollout dry run: %v %v %s\n%s", j["status"], j["error"], reportStatuses(j), j["log"])
		}
		// For real it first needs the API server's credentials; no server is ready (the kubeconfig test
		// made them NotReady), so it fails before touching any node.
		j = e.wait(t, expect(t, e.req("POST", "/v1/clusters/t/rollout", e.admin, `{"all": true}`), 202, "")["id"])
		if j["status"] != "failed" || !strings.HasPrefix(j["error"].(string), `no server of cluster "t" gave its kubeconfig`) || j["result"] != nil {
			t.Errorf("rollout without a ready server: %v %v %v", j["status"], j["error"], j["result"])
		}
	})

	body := string(e.req("GET", "/metrics", "", nil).body)
	for _, want := range []string{
		`nix8s_job_duration_seconds_count{kind="install",status="succeeded"} 4`,
		`nix8s_job_failures_total{kind="install"} 1`,
		`nix8s_jobs{kind="install",status="succeeded"} 4`,
		`nix8s_machine_transitions_total{from="joined",to="ready"} 4`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestInstallJobStopsAtFailure(t *testing.T) {
	e := newOpsEnv(t)
	e.si.SetFail(t, "t-s2")
	j := e.wait(t, expect(t, e.req("POST", "/v1/clusters/t/install", e.admin, `{"all": true}`), 202, "")["id"])
	want := "install of cluster \"t\" stopped: installing t-s2: nixos-anywhere exited with code 1: nixos-anywhere stand-in: failing for t-s2 as the test asked"
	if j["status"] != "failed" || j["error"] != want {
		t.Fatalf("job %v: %v\nwant error: %s\n%s", j["status"], j["error"], want, j["log"])
	}
	if got := reportStatuses(j); got != "s1=done s2=failed a1=not-started a2=not-started" {
		t.Errorf("result %s", got)
	}
	if !strings.HasSuffix(j["log"].(string), "nix8s: error: "+want+"\n") {
		t.Errorf("the log does not end with the error:\n%s", j["log"])
	}
	if got := e.states(t); got != "s1=ready s2=install_failed a1=discovered a2=discovered" {
		t.Errorf("machine states %s", got)
	}
	if ev := e.stateEvents(t, "s2"); len(ev) != 2 || ev[1] != fmt.Sprintf("job:%v:install_failed", j["id"]) {
		t.Errorf("s2's events %v", ev)
	}
	for _, l := range e.si.Log(t) {
		if strings.HasPrefix(l, "start t-a") {
			t.Errorf("an agent was installed after the failure: %s", l)
		}
	}

	// A server that installs but never becomes a Ready node: joined -> join_failed.
	e.si.SetFail(t)
	e.si.SetNotReady(t, "t-s2")
	j = e.wait(t, expect(t, e.req("POST", "/v1/clusters/t/install", e.admin, `{"members": ["s2"]}`), 202, "")["id"])
	if j["status"] != "failed" || !strings.Contains(j["error"].(string), "waiting for it to be a Ready node") {
		t.Fatalf("job %v: %v", j["status"], j["error"])
	}
	if got := e.states(t); got != "s1=ready s2=join_failed a1=discovered a2=discovered" {
		t.Errorf("machine states %s", got)
	}

	// An agent that installs but never becomes a Ready node (asked on the first server after its wave).
	e.si.SetNotReady(t, "t-a1")
	j = e.wait(t, expect(t, e.req("POST", "/v1/clusters/t/install", e.admin, `{"members": ["a1"]}`), 202, "")["id"])
	// Its join token (made on s1 for it) is named in the error, to be revoked by hand or to expire.
	want = "install of cluster \"t\" stopped: t-a1: installed, but node t-a1 was not Ready within 5s (last: node t-a1 is not Ready (Ready=False)); its join token "
	if msg, _ := j["error"].(string); j["status"] != "failed" || !strings.HasPrefix(msg, want) || !strings.Contains(msg, "on t-s1 revokes it)") {
		t.Errorf("job %v: %v\nwant error: %s...", j["status"], j["error"], want)
	}
	if got := e.states(t); got != "s1=ready s2=join_failed a1=join_failed a2=discovered" {
		t.Errorf("machine states %s", got)
	}
}

// k3sYAML is what k3s writes to /etc/rancher/k3s/k3s.yaml (credentials shortened).
const k3sYAML = `apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0EK
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: Q0VSVAo=
    client-key-data: S0VZCg==
`
