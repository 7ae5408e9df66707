package api

// The rollout job against a real kube-apiserver and etcd (internal/k8stest, started once for the package by
// the first test that needs it) and real PostgreSQL. No kubelet and no controllers run there, so the test
// plays them (nodes registered Ready, pods Running, evicted pods removed, leases renewed, PDB status set).
// nixos-rebuild cannot run here (it builds a NixOS system and activates it on the node): a stand-in
// program records what the daemon asked it; the node's restart after a switch is covered by
// internal/rollout's tests. The job reaches the API server through jobs.Config.APIServer instead of
// fetching the kubeconfig from a server over ssh, which the install test covers.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/nix8s/nix8s/internal/jobs"
	"github.com/nix8s/nix8s/internal/k8stest"
	"github.com/nix8s/nix8s/internal/store"
)

var (
	k8sOnce   sync.Once
	k8sEnv    *k8stest.Env
	k8sErr    error
	k8sCancel context.CancelFunc
)

// apiServer is the package's Kubernetes API server, with the test kubelet running against it.
func apiServer(t *testing.T) *k8stest.Env {
	t.Helper()
	k8sOnce.Do(func() {
		if k8sEnv, k8sErr = k8stest.Start(); k8sErr != nil {
			return
		}
		var ctx context.Context
		ctx, k8sCancel = context.WithCancel(context.Background())
		go k8stest.RunKubelet(ctx, k8sEnv.Client)
	})
	if k8sErr != nil {
		t.Fatal(k8sErr)
	}
	return k8sEnv
}

// stopAPIServer stops the API server if a test started it (TestMain).
func stopAPIServer() {
	if k8sEnv == nil {
		return
	}
	k8sCancel()
	if err := k8sEnv.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "nix8s: error: stopping the API server: %v\n", err)
	}
}

// nixosRebuildStandIn records each call as a line of its arguments in $0.log.
const nixosRebuildStandIn = `#!/bin/sh
# nixos-rebuild stand-in of internal/api's rollout test: records its arguments and "activates".
echo "$*" >> "$0.log"
echo "activating the configuration"
`

type rolloutEnv struct {
	*env
	k8s     *k8stest.Env
	rebuild string            // the stand-in nixos-rebuild
	macs    map[string]string // member -> machine MAC
	ips     map[string]string // member -> IP
}

var rolloutMembers = []struct{ name, role string }{{"s1", "server"}, {"a1", "agent"}, {"a2", "agent"}}

// newRolloutEnv is the API with a job runner over cluster "r" (server s1, agents a1 and a2), each member a
// Ready node of the API server and a machine in state ready.
func newRolloutEnv(t *testing.T) *rolloutEnv {
	t.Helper()
	e := &rolloutEnv{k8s: apiServer(t), macs: map[string]string{}, ips: map[string]string{}}
	e.rebuild = filepath.Join(t.TempDir(), "nixos-rebuild")
	if err := os.WriteFile(e.rebuild, []byte(nixosRebuildStandIn), 0o755); err != nil {
		t.Fatal(err)
	}
	var runner *jobs.Runner
	e.env = newEnv(t, func(env *env, o *Options) {
		runner = &jobs.Runner{
			Store:   env.st,
			Planner: o.Inventory,
			Config: jobs.Config{
				Flake:        env.ws,
				NixosRebuild: e.rebuild,
				WaitTimeout:  10 * time.Second,
				WaitInterval: 50 * time.Millisecond,
				DrainTimeout: 2 * time.Second,
				LockWait:     time.Second,
				APIServer:    e.k8s.Config,
			},
			Worker: "test-daemon",
			Poll:   100 * time.Millisecond,
		}
		o.Operations = runner
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); runner.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })

	cfg := "nodes:\n  std:\n    install:\n      disk: /dev/sda\nclusters:\n  r:\n    members:\n"
	for i, m := range rolloutMembers {
		e.ips[m.name] = fmt.Sprintf("10.9.0.%d", i+1)
		cfg += "      " + m.name + ": { node: std, role: " + m.role + ", ip: " + e.ips[m.name] + " }\n"
	}
	cfg += "provisioning:\n  nixos-anywhere:\n    ssh:\n      user: root\n"
	expect(t, e.putConfigYAML([]byte(cfg)), 200, "")
	for i, m := range rolloutMembers {
		mac := fmt.Sprintf("aa:bb:cc:00:01:%02x", i+1)
		e.macs[m.name] = mac
		expect(t, e.req("POST", "/v1/machines", e.admin, fmt.Sprintf(`{"mac": %q}`, mac)), 201, "")
		expect(t, e.req("POST", "/v1/machines/"+mac+"/assign", e.admin, fmt.Sprintf(`{"cluster": "r", "member": %q}`, m.name)), 200, "")
		for _, st := range []store.State{store.StateInstalling, store.StateJoined, store.StateReady} {
			expect(t, e.req("POST", "/v1/machines/"+mac+"/transition", e.admin, fmt.Sprintf(`{"state": %q}`, st)), 200, "")
		}
		node := "r-" + m.name
		if err := k8stest.AddNode(t.Context(), e.k8s.Client, node, ""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { k8stest.DeleteNode(context.Background(), e.k8s.Client, node) })
	}
	return e
}

func (e *rolloutEnv) wait(t *testing.T, id any) map[string]any {
	t.Helper()
	return (&opsEnv{env: e.env}).wait(t, id)
}

func (e *rolloutEnv) states(t *testing.T) string {
	t.Helper()
	var out []string
	for _, m := range rolloutMembers {
		mach := expect(t, e.req("GET", "/v1/machines/"+e.macs[m.name], e.read, nil), 200, "")
		out = append(out, m.name+"="+mach["state"].(string))
	}
	return strings.Join(out, " ")
}

// stateEvents are the member's machine's state changes as "actor:state", from the first by the job on.
func (e *rolloutEnv) stateEvents(t *testing.T, member string, job any) []string {
	t.Helper()
	all := (&opsEnv{env: e.env, macs: e.macs}).stateEvents(t, member)
	i := slices.IndexFunc(all, func(s string) bool { return strings.HasPrefix(s, fmt.Sprintf("job:%v:", job)) })
	if i < 0 {
		return nil
	}
	return all[i:]
}

// switches are the stand-in's calls, one line each.
func (e *rolloutEnv) switches(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(e.rebuild + ".log")
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

func (e *rolloutEnv) cordoned(t *testing.T) string {
	t.Helper()
	var out []string
	for _, m := range rolloutMembers {
		n, err := e.k8s.Client.CoreV1().Nodes().Get(t.Context(), "r-"+m.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s=%t", m.name, n.Spec.Unschedulable))
	}
	return strings.Join(out, " ")
}

func TestRolloutJob(t *testing.T) {
	e := newRolloutEnv(t)
	t.Cleanup(func() {
		// No controller removes what the test made: pods and budgets would outlive the nodes.
		ctx := context.Background()
		for _, ns := range []string{"web", "db"} {
			_ = e.k8s.Client.PolicyV1().PodDisruptionBudgets(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
			_ = e.k8s.Client.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}, metav1.ListOptions{})
		}
	})
	if err := k8stest.RunPod(t.Context(), e.k8s.Client, k8stest.Pod{Namespace: "web", Name: "web-0", Node: "r-a1",
		Owner: k8stest.ReplicaSet, OwnerName: "web", Labels: map[string]string{"app": "web"}}); err != nil {
		t.Fatal(err)
	}

	id := expect(t, e.req("POST", "/v1/clusters/r/rollout", e.admin, `{"all": true}`), 202, "")["id"]
	j := e.wait(t, id)
	log, _ := j["log"].(string)
	t.Logf("job log:\n%s", log)
	if j["status"] != "succeeded" || j["worker"] != "test-daemon" {
		t.Fatalf("job %v by %v: %v\n%s", j["status"], j["worker"], j["error"], log)
	}
	// The plan's rollout order: agents, then the first server.
	if got := reportStatuses(j); got != "a1=done a2=done s1=done" {
		t.Errorf("result %s", got)
	}
	var at []int
	for _, want := range []string{
		"nix8s: r-a1: rolling out (agent)\n", "nix8s: r-a1: machine " + e.macs["a1"] + " is rebuilding\n",
		"nix8s: r-a1: draining\n", "[r-a1] activating the configuration\n", "nix8s: r-a1: machine " + e.macs["a1"] + " is ready\n",
		"nix8s: r-a1: uncordoning\n",
		"nix8s: r-a2: rolling out (agent)\n", "nix8s: r-s1: rolling out (server)\n", "nix8s: r: 3 done\n",
	} {
		i := strings.Index(log, want)
		if i < 0 {
			t.Fatalf("job log lacks %q:\n%s", want, log)
		}
		at = append(at, i)
	}
	if !slices.IsSorted(at) {
		t.Errorf("members or phases out of order in the log:\n%s", log)
	}
	var want []string
	for _, m := range []string{"a1", "a2", "s1"} {
		want = append(want, fmt.Sprintf("switch --flake %s#r-%s --target-host root@%s", e.ws, m, e.ips[m]))
	}
	if got := e.switches(t); !slices.Equal(got, want) {
		t.Errorf("nixos-rebuild calls:\n got %q\nwant %q", got, want)
	}
	if got := e.cordoned(t); got != "s1=false a1=false a2=false" {
		t.Errorf("cordoned after the rollout: %s", got)
	}
	if pods, err := e.k8s.Client.CoreV1().Pods("web").List(t.Context(), metav1.ListOptions{}); err != nil || len(pods.Items) != 0 {
		t.Errorf("web-0 not evicted from r-a1: %v %v", pods, err)
	}
	// Every machine went ready -> rebuilding -> ready with the job as actor.
	if got := e.states(t); got != "s1=ready a1=ready a2=ready" {
		t.Errorf("machine states %s", got)
	}
	actor := fmt.Sprintf("job:%v", id)
	for _, m := range rolloutMembers {
		want := []string{actor + ":rebuilding", actor + ":ready"}
		if got := e.stateEvents(t, m.name, id); !slices.Equal(got, want) {
			t.Errorf("%s's state events %v, want %v", m.name, got, want)
		}
	}

	// A PodDisruptionBudget that allows no disruption stops the rollout at a2's drain: a2 stays cordoned,
	// its machine rebuild_failed, s1 untouched.
	if err := k8stest.RunPod(t.Context(), e.k8s.Client, k8stest.Pod{Namespace: "db", Name: "db-0", Node: "r-a2",
		Owner: k8stest.ReplicaSet, OwnerName: "db", Labels: map[string]string{"app": "db"}}); err != nil {
		t.Fatal(err)
	}
	if err := k8stest.AddPDB(t.Context(), e.k8s.Client, "db", "db", "db", 1, 1, 0); err != nil {
		t.Fatal(err)
	}
	before := len(e.switches(t))
	id = expect(t, e.req("POST", "/v1/clusters/r/rollout", e.admin, `{"all": true}`), 202, "")["id"]
	j = e.wait(t, id)
	wantErr := `rollout of cluster "r" stopped: r-a2: drain: timed out after 2s: error when evicting pods/"db-0" -n "db": global timeout reached: 2s`
	if j["status"] != "failed" || j["error"] != wantErr {
		t.Fatalf("job %v: %v\nwant error: %s\n%s", j["status"], j["error"], wantErr, j["log"])
	}
	if got := reportStatuses(j); got != "a1=done a2=failed s1=not-started" {
		t.Errorf("result %s", got)
	}
	if !strings.Contains(j["log"].(string), `nix8s: hint: node "r-a2" is left cordoned`) {
		t.Errorf("the log does not say r-a2 is left cordoned:\n%s", j["log"])
	}
	if got := e.cordoned(t); got != "s1=false a1=false a2=true" {
		t.Errorf("cordoned after the failure: %s", got)
	}
	if got, want := e.switches(t)[before:], want[:1]; !slices.Equal(got, want) {
		t.Errorf("nixos-rebuild calls after the PDB: %q, want only %q", got, want)
	}
	if got := e.states(t); got != "s1=ready a1=ready a2=rebuild_failed" {
		t.Errorf("machine states %s", got)
	}
	actor = fmt.Sprintf("job:%v", id)
	if got, want := e.stateEvents(t, "a2", id), []string{actor + ":rebuilding", actor + ":rebuild_failed"}; !slices.Equal(got, want) {
		t.Errorf("a2's state events %v, want %v", got, want)
	}
	if got := e.stateEvents(t, "s1", id); got != nil {
		t.Errorf("s1's machine moved after the failure: %v", got)
	}

	body := string(e.req("GET", "/metrics", "", nil).body)
	for _, want := range []string{
		`nix8s_job_duration_seconds_count{kind="rollout",status="succeeded"} 1`,
		`nix8s_job_failures_total{kind="rollout"} 1`,
		`nix8s_machine_transitions_total{from="ready",to="rebuilding"} 5`,
		`nix8s_machine_transitions_total{from="rebuilding",to="ready"} 4`,
		`nix8s_machine_transitions_total{from="rebuilding",to="rebuild_failed"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// A rollout takes each member's lock as an install does: while another attempt holds it (an install, or the
// rollout of a daemon that died with its job), the member fails and nothing is switched; a machine such an
// attempt left rebuilding is rolled out again, through rebuild_failed, once the lock is free.
func TestRolloutJobUnderTheMemberLock(t *testing.T) {
	e := newRolloutEnv(t)
	held, err := e.st.LockMember(t.Context(), "r", "a1", "nix8sd:gone:1 job 99", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	before := len(e.switches(t))
	id := expect(t, e.req("POST", "/v1/clusters/r/rollout", e.admin, `{"members": ["a1"]}`), 202, "")["id"]
	j := e.wait(t, id)
	log, _ := j["log"].(string)
	if j["status"] != "failed" || !strings.Contains(log, "waiting up to 1s for nix8sd:gone:1 job 99 to let go of the member's lock") {
		t.Fatalf("rollout while the member's lock is held: %v, %v\n%s", j["status"], j["error"], log)
	}
	if got := e.switches(t)[before:]; len(got) != 0 {
		t.Errorf("nixos-rebuild ran under another attempt's lock: %q", got)
	}
	if got := e.states(t); got != "s1=ready a1=ready a2=ready" {
		t.Errorf("machine states after the refused rollout: %s", got)
	}
	held.Release()

	// a2's machine, left rebuilding by an attempt that is gone.
	expect(t, e.req("POST", "/v1/machines/"+e.macs["a2"]+"/transition", e.admin, `{"state": "rebuilding"}`), 200, "")
	id = expect(t, e.req("POST", "/v1/clusters/r/rollout", e.admin, `{"members": ["a2"]}`), 202, "")["id"]
	j = e.wait(t, id)
	log, _ = j["log"].(string)
	if j["status"] != "succeeded" || !strings.Contains(log, "was left rebuilding by an earlier attempt that is gone") {
		t.Fatalf("rollout of a machine left rebuilding: %v, %v\n%s", j["status"], j["error"], log)
	}
	actor := fmt.Sprintf("job:%v", id)
	if got, want := e.stateEvents(t, "a2", id), []string{actor + ":rebuild_failed", actor + ":rebuilding", actor + ":ready"}; !slices.Equal(got, want) {
		t.Errorf("a2's state events %v, want %v", got, want)
	}
}
