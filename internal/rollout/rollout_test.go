package rollout

// These tests run against a real kube-apiserver and etcd (internal/k8stest, started once in TestMain). No
// kubelet and no controllers run there, so the tests play them: nodes are registered Ready, pods are
// marked Running, a fake kubelet force-deletes terminating pods, and PodDisruptionBudget status is set by
// hand. nixos-rebuild cannot run here either: the Switcher is a stand-in (standIn) that records its calls and
// does to the node what a real switch does through k3s's restart.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/k8stest"
	"github.com/nix8s/nix8s/internal/progress"
)

var env *k8stest.Env

func TestMain(m *testing.M) {
	e, err := k8stest.Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "nix8s: error: %v\n", err)
		os.Exit(1)
	}
	env = e
	ctx, cancel := context.WithCancel(context.Background())
	go k8stest.RunKubelet(ctx, e.Client)
	code := m.Run()
	cancel()
	if err := e.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "nix8s: error: stopping the API server: %v\n", err)
	}
	os.Exit(code)
}

const (
	v130 = "v1.30.4+k3s1"
	v131 = "v1.31.2+k3s1"
	v132 = "v1.32.0+k3s1"
)

// newCluster plans a cluster the way the core does (docs/core.md) — servers server1 (first) .. serverN,
// agents agent1 .. agentM — and registers its nodes, Ready and running kubelet running. want is the plan's
// k3sVersion ("" for none).
func newCluster(t *testing.T, name string, servers, agents int, running, want string) core.Cluster {
	t.Helper()
	c := core.Cluster{Name: name, FirstServer: "server1", Members: map[string]core.Member{}}
	if want != "" {
		c.K3sVersion = &want
	}
	add := func(m, role string, ip int) {
		addr := fmt.Sprintf("10.0.0.%d", ip)
		c.Members[m] = core.Member{Name: m, HostName: name + "-" + m, Role: role, IP: addr, SSH: core.SSH{Host: addr, Port: 22, User: "root"}}
		if err := k8stest.AddNode(t.Context(), env.Client, name+"-"+m, running); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= servers; i++ {
		m := fmt.Sprintf("server%d", i)
		c.Servers = append(c.Servers, m)
		add(m, "server", 10+i)
	}
	for i := 1; i <= agents; i++ {
		m := fmt.Sprintf("agent%d", i)
		c.Agents = append(c.Agents, m)
		add(m, "agent", 100+i)
	}
	t.Cleanup(func() {
		for _, m := range c.Members {
			k8stest.DeleteNode(context.Background(), env.Client, m.HostName)
		}
	})
	others := c.Servers[1:]
	c.Rollout = slices.Concat(c.Agents, others, []string{"server1"})
	c.UpgradeRollout = slices.Concat(others, []string{"server1"}, c.Agents)
	// As the core's plan has them: each server a wave of its own, the agents one wave.
	serverWaves := [][]string{}
	for _, s := range slices.Concat(others, []string{"server1"}) {
		serverWaves = append(serverWaves, []string{s})
	}
	agentWave := [][]string{}
	if len(c.Agents) > 0 {
		agentWave = [][]string{c.Agents}
	}
	c.RolloutWaves = slices.Concat(agentWave, serverWaves)
	c.UpgradeRolloutWaves = slices.Concat(serverWaves, agentWave)
	return c
}

// standIn is the Switcher of these tests. nixos-rebuild cannot run here, so it records each call and does
// to the node what a real switch does: activation takes a while (switchTime), k3s restarts (the node turns
// NotReady), and after restart its kubelet reports Ready again with the version the switch installed.
type standIn struct {
	c          kubernetes.Interface
	version    string        // kubelet version after a switch; "" keeps the node's
	switchTime time.Duration // how long activation takes
	restart    time.Duration // how long the node stays NotReady after activation
	neverReady map[string]bool
	staleReady map[string]bool // k3s stops at activation and stays down while the node still shows Ready
	fail       map[string]error

	mu      sync.Mutex
	calls   []string // "switch <host>", "rollback <host>"
	running map[string]int
	peak    map[string]int // most switches of one role at once
}

func newStandIn(version string) *standIn {
	return &standIn{
		c: env.Client, version: version, switchTime: 150 * time.Millisecond, restart: 300 * time.Millisecond,
		neverReady: map[string]bool{}, staleReady: map[string]bool{}, fail: map[string]error{}, running: map[string]int{}, peak: map[string]int{},
	}
}

func (s *standIn) Switch(ctx context.Context, t Target) error {
	s.mu.Lock()
	s.calls = append(s.calls, "switch "+t.HostName)
	s.running[t.Role]++
	s.peak[t.Role] = max(s.peak[t.Role], s.running[t.Role])
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running[t.Role]--
		s.mu.Unlock()
	}()
	time.Sleep(s.switchTime)
	if err := s.fail[t.HostName]; err != nil {
		return err
	}
	if s.staleReady[t.HostName] {
		return k8stest.StopKubelet(ctx, s.c, t.HostName)
	}
	// Activation restarted k3s: the kubelet reports NotReady, then Ready once it is back (unless told not to).
	if err := k8stest.SetNodeStatus(ctx, s.c, t.HostName, false, ""); err != nil {
		return err
	}
	if !s.neverReady[t.HostName] {
		go func() {
			time.Sleep(s.restart)
			_ = k8stest.SetNodeStatus(context.Background(), s.c, t.HostName, true, s.version)
		}()
	}
	return nil
}

func (s *standIn) Rollback(ctx context.Context, t Target) error {
	s.mu.Lock()
	s.calls = append(s.calls, "rollback "+t.HostName)
	s.mu.Unlock()
	return nil
}

func (s *standIn) Calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// nodeWatch records, from a watch on the API server, the order in which a cluster's nodes were cordoned
// and the most nodes of each role cordoned at the same time.
type nodeWatch struct {
	cancel context.CancelFunc
	done   chan struct{}

	cordoned []string       // host names in order of cordoning
	peak     map[string]int // role -> most cordoned at once
}

func watchNodes(t *testing.T, c core.Cluster) *nodeWatch {
	t.Helper()
	roles := map[string]string{}
	for _, m := range c.Members {
		roles[m.HostName] = m.Role
	}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := env.Client.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nw := &nodeWatch{cancel: cancel, done: make(chan struct{}), peak: map[string]int{}}
	go func() {
		defer close(nw.done)
		defer w.Stop()
		now := map[string]bool{}
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.ResultChan():
				if !ok {
					return
				}
				n, isNode := ev.Object.(*corev1.Node)
				if !isNode || roles[n.Name] == "" || ev.Type == watch.Deleted {
					continue
				}
				if n.Spec.Unschedulable && !now[n.Name] {
					nw.cordoned = append(nw.cordoned, n.Name)
				}
				now[n.Name] = n.Spec.Unschedulable
				count := map[string]int{}
				for name, on := range now {
					if on {
						count[roles[name]]++
					}
				}
				for role, k := range count {
					nw.peak[role] = max(nw.peak[role], k)
				}
			}
		}
	}()
	return nw
}

// stop ends the watch after the events of the rollout have arrived.
func (nw *nodeWatch) stop() {
	time.Sleep(300 * time.Millisecond)
	nw.cancel()
	<-nw.done
}

func opts(sw Switcher) Options {
	return Options{
		Client: env.Client, Switcher: sw, PollInterval: 50 * time.Millisecond, EvictRetryDelay: 200 * time.Millisecond,
		DrainTimeout: 20 * time.Second, ReadyTimeout: 10 * time.Second,
	}
}

func hosts(c core.Cluster, members ...string) []string {
	out := make([]string, len(members))
	for i, m := range members {
		out[i] = c.Members[m].HostName
	}
	return out
}

func switches(c core.Cluster, members ...string) []string {
	out := hosts(c, members...)
	for i := range out {
		out[i] = "switch " + out[i]
	}
	return out
}

func statuses(r *Report) map[string]Status {
	out := map[string]Status{}
	for _, m := range r.Members {
		out[m.Name] = m.Status
	}
	return out
}

func member(t *testing.T, r *Report, name string) MemberReport {
	t.Helper()
	for _, m := range r.Members {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("no member %q in the report", name)
	return MemberReport{}
}

func unschedulable(t *testing.T, host string) bool {
	t.Helper()
	n, err := env.Client.CoreV1().Nodes().Get(t.Context(), host, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n.Spec.Unschedulable
}

func podsOn(t *testing.T, host string) []string {
	t.Helper()
	pods, err := env.Client.CoreV1().Pods("").List(t.Context(), metav1.ListOptions{FieldSelector: "spec.nodeName=" + host})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range pods.Items {
		out = append(out, p.Name)
	}
	slices.Sort(out)
	return out
}

func TestRolloutGoesAgentsThenOtherServersThenTheFirstServer(t *testing.T) {
	c := newCluster(t, "order", 3, 3, v131, v131)
	ns := "order"
	for _, p := range []k8stest.Pod{
		{Namespace: ns, Name: "web-1", Node: "order-agent1", Owner: k8stest.ReplicaSet, OwnerName: "web", Labels: map[string]string{"app": "web"}},
		{Namespace: ns, Name: "cache-1", Node: "order-agent1", Owner: k8stest.ReplicaSet, OwnerName: "cache", EmptyDir: true, Labels: map[string]string{"app": "cache"}},
		{Namespace: ns, Name: "log-agent1", Node: "order-agent1", Owner: k8stest.DaemonSet, OwnerName: "log", Labels: map[string]string{"app": "log"}},
	} {
		if err := k8stest.RunPod(t.Context(), env.Client, p); err != nil {
			t.Fatal(err)
		}
	}
	sw := newStandIn("")
	nw := watchNodes(t, c)
	r, err := Rollout(t.Context(), c, opts(sw))
	nw.stop()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"agent1", "agent2", "agent3", "server2", "server3", "server1"}
	if got := sw.Calls(); !slices.Equal(got, switches(c, want...)) {
		t.Errorf("switches: got %v, want %v", got, switches(c, want...))
	}
	if !slices.Equal(nw.cordoned, hosts(c, want...)) {
		t.Errorf("cordon order: got %v, want %v", nw.cordoned, hosts(c, want...))
	}
	if nw.peak["server"] != 1 || nw.peak["agent"] != 1 {
		t.Errorf("most nodes cordoned at once: %v, want 1 server and 1 agent", nw.peak)
	}
	if r.Kind != Configuration || r.Counts() != "6 done" {
		t.Errorf("report: kind %s, %s; want configuration, 6 done", r.Kind, r.Counts())
	}
	for _, m := range want {
		if unschedulable(t, c.Members[m].HostName) {
			t.Errorf("%s left cordoned", m)
		}
	}
	// Drain evicted the ReplicaSet's pods (emptyDir data included) and left the DaemonSet's.
	if got := podsOn(t, "order-agent1"); !slices.Equal(got, []string{"log-agent1"}) {
		t.Errorf("pods left on order-agent1: %v, want only the DaemonSet's", got)
	}
}

func TestAgentsGoMaxUnavailableAtATimeAndServersAlone(t *testing.T) {
	c := newCluster(t, "maxu", 3, 5, v131, v131)
	sw := newStandIn("")
	o := opts(sw)
	o.MaxUnavailable = 2
	nw := watchNodes(t, c)
	r, err := Rollout(t.Context(), c, o)
	nw.stop()
	if err != nil {
		t.Fatal(err)
	}
	if r.Counts() != "8 done" {
		t.Errorf("report: %s", r.Counts())
	}
	if nw.peak["agent"] != 2 || sw.peak["agent"] != 2 {
		t.Errorf("agents out at once: %d cordoned, %d switching; want 2", nw.peak["agent"], sw.peak["agent"])
	}
	if nw.peak["server"] != 1 || sw.peak["server"] != 1 {
		t.Errorf("servers out at once: %d cordoned, %d switching; want 1", nw.peak["server"], sw.peak["server"])
	}
	// Agents first, all of them before any server.
	calls := sw.Calls()
	if got, want := calls[5:], switches(c, "server2", "server3", "server1"); !slices.Equal(got, want) {
		t.Errorf("server switches: got %v, want %v", got, want)
	}
}

func TestPDBWithNoDisruptionsStopsTheRolloutAtThatNode(t *testing.T) {
	c := newCluster(t, "pdb", 1, 3, v131, v131)
	ns := "pdb"
	for _, p := range []k8stest.Pod{
		{Namespace: ns, Name: "db-0", Node: "pdb-agent2", Owner: k8stest.ReplicaSet, OwnerName: "db", Labels: map[string]string{"app": "db"}},
		{Namespace: ns, Name: "web-0", Node: "pdb-agent3", Owner: k8stest.ReplicaSet, OwnerName: "web", Labels: map[string]string{"app": "web"}},
	} {
		if err := k8stest.RunPod(t.Context(), env.Client, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := k8stest.AddPDB(t.Context(), env.Client, ns, "db", "db", 1, 1, 0); err != nil {
		t.Fatal(err)
	}
	sw := newStandIn("")
	o := opts(sw)
	o.DrainTimeout = 2 * time.Second
	r, err := Rollout(t.Context(), c, o)
	if err == nil {
		t.Fatal("rollout succeeded; want it stopped by the PodDisruptionBudget")
	}
	wantErr := `pdb-agent2: drain: timed out after 2s: error when evicting pods/"db-0" -n "pdb": global timeout reached: 2s`
	if err.Error() != wantErr {
		t.Errorf("error:\n got %s\nwant %s", err, wantErr)
	}
	want := map[string]Status{"agent1": Done, "agent2": Failed, "agent3": NotStarted, "server1": NotStarted}
	if got := statuses(r); !maps(got, want) {
		t.Errorf("statuses: got %v, want %v", got, want)
	}
	if m := member(t, r, "agent2"); m.Phase != PhaseDrain || !m.Cordoned || m.Rollback != "" {
		t.Errorf("agent2: %+v; want failed in drain, left cordoned, no rollback", m)
	}
	if !unschedulable(t, "pdb-agent2") {
		t.Error("pdb-agent2 is not cordoned")
	}
	if unschedulable(t, "pdb-agent3") || unschedulable(t, "pdb-server1") {
		t.Error("nodes after the failure were cordoned")
	}
	if got := podsOn(t, "pdb-agent2"); !slices.Equal(got, []string{"db-0"}) {
		t.Errorf("pods on pdb-agent2: %v, want db-0 still there", got)
	}
	if got := podsOn(t, "pdb-agent3"); !slices.Equal(got, []string{"web-0"}) {
		t.Errorf("pods on pdb-agent3: %v, want web-0 untouched", got)
	}
	if got, want := sw.Calls(), switches(c, "agent1"); !slices.Equal(got, want) {
		t.Errorf("switches: got %v, want %v", got, want)
	}
}

func maps(a, b map[string]Status) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestANodeThatNeverBecomesReadyStopsTheRolloutCordoned(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rollback bool
		fail     error // the switch itself fails
		calls    []string
		result   string
		errText  string
	}{
		{
			name:    "without rollback the node is left as it is",
			calls:   []string{"switch nr1-agent1", "switch nr1-agent2"},
			errText: `nr1-agent2: wait-ready: node "nr1-agent2" not Ready after 1s: Ready=False (KubeletNotReady: container runtime is down)`,
		},
		{
			name: "with rollback the node goes back to its previous generation", rollback: true,
			calls:   []string{"switch nr2-agent1", "switch nr2-agent2", "rollback nr2-agent2"},
			result:  "done",
			errText: `nr2-agent2: wait-ready: node "nr2-agent2" not Ready after 1s: Ready=False (KubeletNotReady: container runtime is down)`,
		},
		{
			name: "a failed switch is rolled back too", rollback: true, fail: errors.New("nixos-rebuild exited with code 1: activation failed"),
			calls:   []string{"switch nr3-agent1", "switch nr3-agent2", "rollback nr3-agent2"},
			result:  "done",
			errText: `nr3-agent2: switch: nixos-rebuild exited with code 1: activation failed`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := strings.Fields(tc.calls[0])[1]
			name = name[:strings.IndexByte(name, '-')]
			c := newCluster(t, name, 1, 3, v131, v131)
			sw := newStandIn("")
			host := name + "-agent2"
			sw.neverReady[host] = true
			if tc.fail != nil {
				sw.fail[host] = tc.fail
			}
			o := opts(sw)
			o.ReadyTimeout = time.Second
			o.Rollback = tc.rollback
			r, err := Rollout(t.Context(), c, o)
			if err == nil || err.Error() != tc.errText {
				t.Errorf("error:\n got %v\nwant %s", err, tc.errText)
			}
			if got := sw.Calls(); !slices.Equal(got, tc.calls) {
				t.Errorf("calls: got %v, want %v", got, tc.calls)
			}
			want := map[string]Status{"agent1": Done, "agent2": Failed, "agent3": NotStarted, "server1": NotStarted}
			if got := statuses(r); !maps(got, want) {
				t.Errorf("statuses: got %v, want %v", got, want)
			}
			if m := member(t, r, "agent2"); !m.Cordoned || m.Rollback != tc.result {
				t.Errorf("agent2: %+v; want cordoned, rollback %q", m, tc.result)
			}
			if !unschedulable(t, host) {
				t.Errorf("%s is not cordoned", host)
			}
			if unschedulable(t, name+"-agent3") || unschedulable(t, name+"-server1") {
				t.Error("nodes after the failure were cordoned")
			}
		})
	}
}

// Right after a switch that stopped k3s the node still shows Ready (the API server notices only after its
// grace period); the wait must not take that stale Ready for a node that came back.
func TestAStaleReadyAfterTheSwitchDoesNotCount(t *testing.T) {
	c := newCluster(t, "stale", 1, 2, v131, v131)
	sw := newStandIn("")
	sw.staleReady["stale-agent1"] = true
	o := opts(sw)
	o.ReadyTimeout = time.Second
	r, err := Rollout(t.Context(), c, o)
	want := `stale-agent1: wait-ready: node "stale-agent1" not Ready after 1s: Ready, but its kubelet has not renewed the node's lease since the switch`
	if err == nil || err.Error() != want {
		t.Errorf("error:\n got %v\nwant %s", err, want)
	}
	if got := statuses(r); got["agent1"] != Failed || got["agent2"] != NotStarted {
		t.Errorf("statuses: %v", got)
	}
	if !unschedulable(t, "stale-agent1") {
		t.Error("stale-agent1 is not cordoned")
	}
}

func TestNoRollbackWhenTheConfigurationWasNeverSwitched(t *testing.T) {
	c := newCluster(t, "nosw", 1, 2, v131, v131)
	if err := k8stest.RunPod(t.Context(), env.Client, k8stest.Pod{Namespace: "nosw", Name: "db-0", Node: "nosw-agent1",
		Owner: k8stest.ReplicaSet, OwnerName: "db", Labels: map[string]string{"app": "db"}}); err != nil {
		t.Fatal(err)
	}
	if err := k8stest.AddPDB(t.Context(), env.Client, "nosw", "db", "db", 1, 1, 0); err != nil {
		t.Fatal(err)
	}
	sw := newStandIn("")
	o := opts(sw)
	o.DrainTimeout = time.Second
	o.Rollback = true
	r, err := Rollout(t.Context(), c, o)
	if err == nil {
		t.Fatal("rollout succeeded")
	}
	if calls := sw.Calls(); len(calls) != 0 {
		t.Errorf("calls: %v; want none (the drain failed before the switch)", calls)
	}
	if m := member(t, r, "agent1"); m.Rollback != "" || m.Phase != PhaseDrain {
		t.Errorf("agent1: %+v", m)
	}
}

func TestAVersionChangeRollsServersFirst(t *testing.T) {
	c := newCluster(t, "upg", 3, 4, v130, v131)
	sw := newStandIn(v131)
	o := opts(sw)
	o.MaxUnavailable = 2
	nw := watchNodes(t, c)
	r, err := Rollout(t.Context(), c, o)
	nw.stop()
	if err != nil {
		t.Fatal(err)
	}
	if r.Kind != Upgrade || r.FromVersion != v130 || r.ToVersion != v131 {
		t.Errorf("report: kind %s from %s to %s", r.Kind, r.FromVersion, r.ToVersion)
	}
	calls := sw.Calls()
	if got, want := calls[:3], switches(c, "server2", "server3", "server1"); !slices.Equal(got, want) {
		t.Errorf("first switches: got %v, want the servers %v", got, want)
	}
	if got := calls[3:]; len(got) != 4 {
		t.Errorf("agent switches: %v", got)
	}
	if nw.peak["server"] != 1 || sw.peak["server"] != 1 || nw.peak["agent"] != 2 {
		t.Errorf("at once: servers %d cordoned/%d switching, agents %d cordoned", nw.peak["server"], sw.peak["server"], nw.peak["agent"])
	}
	nodes, err := env.Client.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Items {
		if strings.HasPrefix(n.Name, "upg-") && n.Status.NodeInfo.KubeletVersion != v131 {
			t.Errorf("%s runs %s", n.Name, n.Status.NodeInfo.KubeletVersion)
		}
	}
}

func TestAnUpgradeWaitsForTheNewKubeletVersion(t *testing.T) {
	c := newCluster(t, "oldkl", 1, 1, v130, v131)
	sw := newStandIn("") // the switch brings the node back Ready, but still on the old k3s
	o := opts(sw)
	o.ReadyTimeout = time.Second
	_, err := Rollout(t.Context(), c, o)
	want := `oldkl-server1: wait-ready: node "oldkl-server1" not Ready after 1s: Ready, but its kubelet runs v1.30.4+k3s1, not v1.31.2+k3s1`
	if err == nil || err.Error() != want {
		t.Errorf("error:\n got %v\nwant %s", err, want)
	}
}

func TestMembersGoInPlanOrderWhateverTheOrderGiven(t *testing.T) {
	c := newCluster(t, "subset", 2, 2, v131, v131)
	sw := newStandIn("")
	o := opts(sw)
	o.Members = []string{"server1", "agent2"}
	r, err := Rollout(t.Context(), c, o)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sw.Calls(), switches(c, "agent2", "server1"); !slices.Equal(got, want) {
		t.Errorf("switches: got %v, want %v", got, want)
	}
	if len(r.Members) != 2 {
		t.Errorf("report members: %v", r.Members)
	}
}

// Every input that is refused is refused before anything is touched.
func TestBadInput(t *testing.T) {
	skew := newCluster(t, "skew", 2, 2, v130, v131)
	if err := k8stest.SetNodeStatus(t.Context(), env.Client, "skew-server2", true, v131); err != nil {
		t.Fatal(err)
	}
	unreachable, _, err := ClientFor(&rest.Config{Host: "https://127.0.0.1:1"}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		running string // kubelet version of the nodes
		want    string // plan k3sVersion
		cluster *core.Cluster
		opts    func(*Options)
		err     string
	}{
		{
			name: "unknown member", running: v131, want: v131,
			opts: func(o *Options) { o.Members = []string{"agent1", "agent9", "db"} },
			err:  `cluster "bad" has no member "agent9", "db"; members: "agent1", "agent2", "server1", "server2"`,
		},
		{
			name: "max-unavailable below 1", running: v131, want: v131,
			opts: func(o *Options) { o.MaxUnavailable = -1 },
			err:  `max-unavailable must be at least 1, got -1`,
		},
		{
			name: "unreachable API server", running: v131, want: v131,
			opts: func(o *Options) { o.Client = unreachable },
			err:  `reaching the Kubernetes API server of cluster "bad": Get "https://127.0.0.1:1/api/v1/nodes": dial tcp 127.0.0.1:1: connect: connection refused`,
		},
		{
			name: "skipping a minor version", running: v130, want: v132,
			err: `cluster "bad": refusing to upgrade k3s from v1.30.4+k3s1 to v1.32.0+k3s1: it skips minor version v1.31; upgrade one minor version at a time (first to v1.31)`,
		},
		{
			name: "skipping a minor version given by --from-version", running: v131, want: v131,
			opts: func(o *Options) { o.FromVersion = "v1.28.9+k3s1" },
			err:  `cluster "bad": refusing to upgrade k3s from v1.28.9+k3s1 to v1.31.2+k3s1: it skips minor versions v1.29, v1.30; upgrade one minor version at a time (first to v1.29)`,
		},
		{
			name: "downgrade", running: v131, want: v130,
			err: `cluster "bad": refusing to downgrade k3s from v1.31.2+k3s1 to v1.30.4+k3s1; pass --force to do it anyway (etcd and API data may not go back)`,
		},
		{
			name: "malformed --from-version", running: v131, want: v131,
			opts: func(o *Options) { o.FromVersion = "1.31" },
			err:  `from-version: "1.31" is not a k3s version (like v1.31.4+k3s1)`,
		},
		{
			name: "--from-version without a k3sVersion in the plan", running: v131,
			opts: func(o *Options) { o.FromVersion = v130 },
			err:  `from-version v1.30.4+k3s1 given, but cluster "bad" sets no k3sVersion (it runs the NixOS default): nothing to upgrade to`,
		},
		{
			name: "malformed k3sVersion", running: v131, want: "latest",
			err: `cluster "bad": k3sVersion: "latest" is not a k3s version (like v1.31.4+k3s1)`,
		},
		{
			name: "member that is not a node", running: v131, want: v131,
			opts: func(o *Options) {
				if err := env.Client.CoreV1().Nodes().Delete(t.Context(), "bad-agent2", metav1.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
			},
			err: `cluster "bad": no node "bad-agent2" (member agent2) registered with the API server; install and join it first (nix8s install)`,
		},
		{
			name: "agents before the servers in an upgrade", cluster: &skew,
			opts: func(o *Options) { o.Members = []string{"agent1", "server2"} },
			err:  `cluster "skew": refusing to upgrade agents to v1.31.2+k3s1 while server skew-server1 runs v1.30.4+k3s1 (a kubelet must never be newer than its API server); roll out the servers first, or together with the agents`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c core.Cluster
			if tc.cluster != nil {
				c = *tc.cluster
			} else {
				c = newCluster(t, "bad", 2, 2, tc.running, tc.want)
			}
			sw := newStandIn("")
			o := opts(sw)
			if tc.opts != nil {
				tc.opts(&o)
			}
			r, err := Rollout(t.Context(), c, o)
			if err == nil || err.Error() != tc.err {
				t.Errorf("error:\n got %v\nwant %s", err, tc.err)
			}
			if r != nil {
				t.Errorf("report %+v; want none", r)
			}
			if calls := sw.Calls(); len(calls) != 0 {
				t.Errorf("switcher called: %v", calls)
			}
			for _, m := range c.Members {
				n, err := env.Client.CoreV1().Nodes().Get(t.Context(), m.HostName, metav1.GetOptions{})
				if err == nil && n.Spec.Unschedulable {
					t.Errorf("%s was cordoned", m.HostName)
				}
			}
		})
	}
}

func TestADowngradeGoesAheadWithForce(t *testing.T) {
	c := newCluster(t, "down", 1, 1, v131, v130)
	sw := newStandIn(v130)
	o := opts(sw)
	o.Force = true
	r, err := Rollout(t.Context(), c, o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Kind != Upgrade || r.Counts() != "2 done" {
		t.Errorf("report: %s, %s", r.Kind, r.Counts())
	}
	if got, want := sw.Calls(), switches(c, "server1", "agent1"); !slices.Equal(got, want) {
		t.Errorf("switches: got %v, want %v", got, want)
	}
}

func TestDryRunTouchesNothing(t *testing.T) {
	c := newCluster(t, "dry", 2, 1, v130, v131)
	o := Options{DryRun: true, FromVersion: v130, MaxUnavailable: 3, Switcher: &NixosRebuild{Flake: "github:acme/infra"}}
	r, err := Rollout(t.Context(), c, o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Kind != Upgrade || r.Counts() != "3 planned" {
		t.Errorf("report: %s, %s", r.Kind, r.Counts())
	}
	var order []string
	for _, m := range r.Members {
		order = append(order, m.Name)
	}
	if want := []string{"server2", "server1", "agent1"}; !slices.Equal(order, want) {
		t.Errorf("order: got %v, want %v", order, want)
	}
	wantSteps := []string{
		`cordon node "dry-server2"`,
		`drain node "dry-server2" (DaemonSets ignored, emptyDir data deleted, PodDisruptionBudgets honoured, timeout 5m0s)`,
		`switch: nixos-rebuild switch --flake github:acme/infra#dry-server2 --target-host root@10.0.0.12`,
		`wait until node "dry-server2" is Ready with kubelet v1.31.2+k3s1 (timeout 10m0s)`,
		`uncordon node "dry-server2"`,
	}
	if got := r.Members[0].Steps; !slices.Equal(got, wantSteps) {
		t.Errorf("steps:\n got %q\nwant %q", got, wantSteps)
	}
	if unschedulable(t, "dry-server2") {
		t.Error("a dry run cordoned a node")
	}
}

// An interrupt (the context ends) stops the rollout like a failure: the member in flight is reported failed
// and left cordoned, the rest are not started.
func TestAnInterruptStopsTheRolloutLikeAFailure(t *testing.T) {
	c := newCluster(t, "intr", 1, 2, v131, v131)
	sw := newStandIn("")
	sw.neverReady["intr-agent1"] = true
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(time.Second, cancel)
	r, err := Rollout(ctx, c, opts(sw))
	if want := "intr-agent1: wait-ready: context canceled"; err == nil || err.Error() != want {
		t.Errorf("error:\n got %v\nwant %s", err, want)
	}
	want := map[string]Status{"agent1": Failed, "agent2": NotStarted, "server1": NotStarted}
	if got := statuses(r); !maps(got, want) {
		t.Errorf("statuses: got %v, want %v", got, want)
	}
	if !unschedulable(t, "intr-agent1") || unschedulable(t, "intr-agent2") {
		t.Error("want intr-agent1 cordoned and intr-agent2 untouched")
	}
}

// observed records a rollout's milestones as "starting agent1" (Preparer), "ready agent1" (Done of PhaseReady),
// "failed agent2 drain" (the member's Failed event).
type observed struct {
	Switcher
	refuse map[string]error // Prepare answers this for the member

	mu    sync.Mutex
	calls []string
}

func (o *observed) add(s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, s)
}

func (o *observed) Prepare(_ context.Context, t Target) error {
	o.add("starting " + t.Member)
	return o.refuse[t.Member]
}

func (o *observed) Report(e progress.Event) {
	switch {
	case e.Phase == string(PhaseReady) && e.Status == progress.Done:
		o.add("ready " + e.Member)
	case e.Status == progress.Failed:
		if !e.Final() || e.Err == nil {
			o.add("bad failure event " + e.Line())
		}
		o.add(fmt.Sprintf("failed %s %s", e.Member, e.Phase))
	}
}

func TestEventsTellEachMemberStartBecomeReadyAndFail(t *testing.T) {
	c := newCluster(t, "obs", 1, 3, v131, v131)
	if err := k8stest.RunPod(t.Context(), env.Client, k8stest.Pod{Namespace: "obs", Name: "db-0", Node: "obs-agent2",
		Owner: k8stest.ReplicaSet, OwnerName: "db", Labels: map[string]string{"app": "db"}}); err != nil {
		t.Fatal(err)
	}
	if err := k8stest.AddPDB(t.Context(), env.Client, "obs", "db", "db", 1, 1, 0); err != nil {
		t.Fatal(err)
	}
	o := opts(newStandIn(""))
	ob := &observed{Switcher: o.Switcher}
	o.DrainTimeout = time.Second
	o.Switcher, o.Progress = ob, ob
	if _, err := Rollout(t.Context(), c, o); err == nil {
		t.Fatal("rollout succeeded; want it stopped by the PodDisruptionBudget")
	}
	want := []string{"starting agent1", "ready agent1", "starting agent2", "failed agent2 drain"}
	if !slices.Equal(ob.calls, want) {
		t.Errorf("observed %v, want %v", ob.calls, want)
	}

	// A member the Preparer refuses fails before its node is cordoned.
	ob = &observed{Switcher: ob.Switcher, refuse: map[string]error{"agent3": errors.New("machine is locked")}}
	o.Switcher, o.Progress, o.Members = ob, ob, []string{"agent3"}
	r, err := Rollout(t.Context(), c, o)
	if err == nil || err.Error() != "obs-agent3: cordon: machine is locked" {
		t.Fatalf("error %v, want obs-agent3: cordon: machine is locked", err)
	}
	if m := member(t, r, "agent3"); m.Cordoned || unschedulable(t, "obs-agent3") {
		t.Errorf("agent3 %+v: a refused member was cordoned", m)
	}
	if want := []string{"starting agent3", "failed agent3 cordon"}; !slices.Equal(ob.calls, want) {
		t.Errorf("observed %v, want %v", ob.calls, want)
	}

	// A dry run reports no milestones and prepares nothing.
	ob = &observed{Switcher: ob.Switcher}
	o.Switcher, o.Progress, o.Members, o.DryRun = ob, ob, nil, true
	if _, err := Rollout(t.Context(), c, o); err != nil || len(ob.calls) != 0 {
		t.Errorf("dry run: %v, observed %v", err, ob.calls)
	}
}
