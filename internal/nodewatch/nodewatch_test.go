package nodewatch

// Against a real kube-apiserver and etcd (internal/k8stest, started once for the package by the first test
// that needs it) and a real PostgreSQL with the daemon's migrations (internal/pgtest, a fresh database per
// test). No kubelet runs: the tests register Nodes and set their Ready condition as k3s's kubelet would.
// All tests share the API server, so each names its nodes after itself.

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/nix8s/nix8s/internal/cozystack"
	"github.com/nix8s/nix8s/internal/k8stest"
	"github.com/nix8s/nix8s/internal/pgtest"
	"github.com/nix8s/nix8s/internal/store"
	"github.com/nix8s/nix8s/internal/store/storetest"
)

func TestMain(m *testing.M) {
	code := pgtest.Run(m)
	if k8sEnv != nil {
		if err := k8sEnv.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "nix8s: error: stopping the API server: %v\n", err)
		}
	}
	os.Exit(code)
}

var (
	k8sOnce sync.Once
	k8sEnv  *k8stest.Env
	k8sErr  error
)

// apiServer is the package's Kubernetes API server.
func apiServer(t *testing.T) *k8stest.Env {
	t.Helper()
	k8sOnce.Do(func() { k8sEnv, k8sErr = k8stest.Start() })
	if k8sErr != nil {
		t.Fatal(k8sErr)
	}
	return k8sEnv
}

var members = map[string]string{"s1": "52:54:00:aa:00:01", "a1": "52:54:00:aa:00:02", "a2": "52:54:00:aa:00:03"}

type fixture struct {
	t      *testing.T
	ctx    context.Context
	st     *store.Store
	k8s    kubernetes.Interface
	prefix string // of this test's node names
	w      *Watcher
}

var unsafe = regexp.MustCompile(`[^a-z0-9]+`)

// setup gives a database holding cluster dev (members s1, a1, a2 with the MACs of members), the API server,
// and a Watcher on both; member m's node is <prefix>-<m>.
func setup(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	env := apiServer(t)
	st := storetest.Open(t)
	ms := map[string]any{}
	for m, mac := range members {
		role := "agent"
		if m == "s1" {
			role = "server"
		}
		ms[m] = map[string]any{"node": "vm", "role": role, "network": map[string]any{"mac": mac}}
	}
	cfg := map[string]any{"nodes": map[string]any{"vm": map[string]any{"install": map[string]any{"disk": "/dev/vda"}}},
		"clusters": map[string]any{"dev": map[string]any{"members": ms}}}
	if _, err := st.Modify(ctx, "test", func(*store.Snapshot) (map[string]any, error) { return cfg, nil }); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, ctx: ctx, st: st, k8s: env.Client, prefix: strings.Trim(unsafe.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("NIX8S_TEST_LOG") != "" {
		logger = slog.Default()
	}
	f.w = &Watcher{
		Store: st,
		Clients: func(context.Context, string) (kubernetes.Interface, error) {
			return env.Client, nil
		},
		HostNames: func(_ context.Context, cluster string) (map[string]string, error) {
			if cluster != "dev" {
				return nil, fmt.Errorf("no cluster %q", cluster)
			}
			out := map[string]string{}
			for m := range members {
				out[m] = f.node(m)
			}
			return out, nil
		},
		Logger: logger,
	}
	t.Cleanup(func() {
		for m := range members {
			k8stest.DeleteNode(context.Background(), env.Client, f.node(m))
		}
	})
	return f
}

func (f *fixture) node(member string) string { return f.prefix + "-" + member }

// machine enrols member's machine, assigns it and moves it (as actor "test") through path.
func (f *fixture) machine(member string, path ...store.State) string {
	f.t.Helper()
	mac := members[member]
	if _, err := f.st.CreateMachine(f.ctx, "test", mac, nil, ""); err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.st.UpdateMachine(f.ctx, "test", mac, store.MachineChange{Assign: &[2]string{"dev", member}}); err != nil {
		f.t.Fatal(err)
	}
	for _, s := range path {
		if _, err := f.st.UpdateMachine(f.ctx, "test", mac, store.MachineChange{State: &s}); err != nil {
			f.t.Fatal(err)
		}
	}
	return mac
}

// register creates member's Node as k3s's kubelet would, Ready or NotReady.
func (f *fixture) register(member string, ready bool) {
	f.t.Helper()
	if ready {
		if err := k8stest.AddNode(f.ctx, f.k8s, f.node(member), "v1.34.2+k3s1"); err != nil {
			f.t.Fatal(err)
		}
		return
	}
	if _, err := f.k8s.CoreV1().Nodes().Create(f.ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: f.node(member)}}, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
	f.setReady(member, false)
}

func (f *fixture) setReady(member string, ready bool) {
	f.t.Helper()
	if err := k8stest.SetNodeStatus(f.ctx, f.k8s, f.node(member), ready, "v1.34.2+k3s1"); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) sync() {
	f.t.Helper()
	if err := f.w.Sync(f.ctx, "dev"); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) wantState(mac string, want store.State) {
	f.t.Helper()
	m, err := f.st.Machine(f.ctx, mac)
	if err != nil {
		f.t.Fatal(err)
	}
	if m.State != want {
		f.t.Fatalf("machine %s is %s, want %s", mac, m.State, want)
	}
}

// watcherEvents are the machine's state events by the watcher, as "old->new: reason".
func (f *fixture) watcherEvents(mac string) []string {
	f.t.Helper()
	evs, err := f.st.Events(f.ctx, mac, 0, 1000)
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		if e.Actor == "test" {
			continue
		}
		if e.Actor != DefaultActor || e.Kind != "state" {
			f.t.Errorf("unexpected event %+v", *e)
			continue
		}
		out = append(out, fmt.Sprintf("%s->%s: %s", *e.OldState, *e.NewState, e.Reason))
	}
	return out
}

func (f *fixture) wantEvents(mac string, want ...string) {
	f.t.Helper()
	got := f.watcherEvents(mac)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		f.t.Fatalf("watcher events of %s:\n%s\nwant:\n%s", mac, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestInstallingJoinedReady(t *testing.T) {
	f := setup(t)
	mac := f.machine("a1", "installing")
	f.sync() // no node yet
	f.wantState(mac, "installing")

	f.register("a1", false)
	f.sync()
	f.wantState(mac, "joined")
	f.sync() // NotReady: nothing more
	f.wantState(mac, "joined")
	f.wantEvents(mac, "installing->joined: node "+f.node("a1")+" registered")

	f.setReady("a1", true)
	f.sync()
	f.wantState(mac, "ready")
	f.sync()
	f.wantEvents(mac, "installing->joined: node "+f.node("a1")+" registered", "joined->ready: node "+f.node("a1")+" is Ready")
}

func TestReadyInOnePass(t *testing.T) {
	f := setup(t)
	mac := f.machine("s1", "installing")
	f.register("s1", true)
	f.sync()
	f.wantState(mac, "ready")
	f.wantEvents(mac, "installing->joined: node "+f.node("s1")+" registered", "joined->ready: node "+f.node("s1")+" is Ready")
}

// A network install that has not reported done (still armed) is not joined by any Node of its name, however
// new: its disk is not written yet. Once the installer reports done, the Node counts.
func TestArmedInstallWaitsForDone(t *testing.T) {
	f := setup(t)
	mac := f.machine("a1")
	m, err := f.st.ArmInstall(f.ctx, "test", mac, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	f.register("a1", true)
	f.sync()
	f.wantState(mac, "installing")
	tok := sha256.Sum256([]byte("token"))
	if err := f.st.ClaimInstallToken(f.ctx, "test", mac, m.InstallGeneration, tok); err != nil {
		t.Fatal(err)
	}
	if err := f.st.ReportInstall(f.ctx, "test", mac, tok, store.InstallReport{Generation: m.InstallGeneration, Phase: "done", Done: true}); err != nil {
		t.Fatal(err)
	}
	f.sync()
	f.wantState(mac, "ready")
}

// A Node older than the install (left over from the machine's previous install, Ready still) does not count.
func TestNodeOlderThanInstall(t *testing.T) {
	f := setup(t)
	f.register("a1", true)
	mac := f.machine("a1", "installing")
	// The install began two minutes after the Node registered: more than Slack. Node creation times cannot be
	// set, so the machine's state_changed_at moves instead (the database sets it only on a state change).
	if _, err := f.st.Pool().Exec(f.ctx, `UPDATE machines SET state_changed_at = state_changed_at + interval '2 minutes' WHERE mac = $1::macaddr`, mac); err != nil {
		t.Fatal(err)
	}
	f.sync()
	f.wantState(mac, "installing")
	f.wantEvents(mac)

	// Forgotten and registered again by the new install: it counts.
	if err := Forget(f.ctx, f.k8s, f.node("a1")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Pool().Exec(f.ctx, `UPDATE machines SET state_changed_at = now() WHERE mac = $1::macaddr`, mac); err != nil {
		t.Fatal(err)
	}
	f.register("a1", true)
	f.sync()
	f.wantState(mac, "ready")
}

// join_failed: the node registered during the install (before the machine failed), and became Ready late.
// join_failed never goes back to joined.
func TestJoinFailedToReady(t *testing.T) {
	f := setup(t)
	mac := f.machine("a2", "installing")
	f.register("a2", false)
	f.sync()
	f.wantState(mac, "joined")
	// The deadline passed (machines_expire would do the same).
	s := store.StateJoinFailed
	if _, err := f.st.UpdateMachine(f.ctx, "test", mac, store.MachineChange{State: &s, Reason: "deadline exceeded"}); err != nil {
		t.Fatal(err)
	}
	// ... 30 minutes after the node registered: what counts is the start of the install, not of join_failed.
	if _, err := f.st.Pool().Exec(f.ctx, `UPDATE machines SET state_changed_at = state_changed_at + interval '30 minutes' WHERE mac = $1::macaddr`, mac); err != nil {
		t.Fatal(err)
	}
	f.sync()
	f.wantState(mac, "join_failed")

	f.setReady("a2", true)
	f.sync()
	f.wantState(mac, "ready")
	f.wantEvents(mac, "installing->joined: node "+f.node("a2")+" registered", "join_failed->ready: node "+f.node("a2")+" is Ready")
}

// ready and rebuilding machines are not touched, whatever their node says; nothing moves back.
func TestOtherStatesUntouched(t *testing.T) {
	f := setup(t)
	ready := f.machine("s1", "installing", "joined", "ready")
	rebuilding := f.machine("a1", "installing", "joined", "ready", "rebuilding")
	f.register("s1", false)
	f.register("a1", true)
	f.sync()
	f.wantState(ready, "ready")
	f.wantState(rebuilding, "rebuilding")
	f.wantEvents(ready)
	f.wantEvents(rebuilding)

	// joined with its node gone: stays joined.
	joined := f.machine("a2", "installing", "joined")
	f.sync()
	f.wantState(joined, "joined")
	f.wantEvents(joined)
}

// staleStore changes each machine (its facts) right after Sync read it, as another writer would.
type staleStore struct {
	*store.Store
	t *testing.T
}

func (s staleStore) MachinesOfCluster(ctx context.Context, cluster string) (map[string]*store.Machine, error) {
	ms, err := s.Store.MachinesOfCluster(ctx, cluster)
	for _, m := range ms {
		if _, err := s.Store.UpdateMachine(ctx, "test", m.MAC, store.MachineChange{Facts: json.RawMessage(`{"touched": true}`)}); err != nil {
			s.t.Fatal(err)
		}
	}
	return ms, err
}

func TestConflictSkipped(t *testing.T) {
	f := setup(t)
	mac := f.machine("a1", "installing")
	f.register("a1", true)
	f.w.Store = staleStore{f.st, t}
	f.sync() // no error: the machine is left to the next pass
	f.wantState(mac, "installing")
	f.wantEvents(mac)

	f.w.Store = f.st
	f.sync()
	f.wantState(mac, "ready")
}

func TestForget(t *testing.T) {
	f := setup(t)
	f.register("s1", true)
	secret := f.node("s1") + ".node-password.k3s"
	if got := NodePasswordSecret(strings.ToUpper(f.node("s1"))); got != secret {
		t.Fatalf("NodePasswordSecret = %q, want %q", got, secret)
	}
	if err := k8stest.EnsureNamespace(f.ctx, f.k8s, metav1.NamespaceSystem); err != nil {
		t.Fatal(err)
	}
	if _, err := f.k8s.CoreV1().Secrets(metav1.NamespaceSystem).Create(f.ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: secret},
		Immutable:  ptr.To(true),
		Data:       map[string][]byte{"hash": []byte("$1:scrypt-hash")},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := Forget(f.ctx, f.k8s, f.node("s1")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.k8s.CoreV1().Nodes().Get(f.ctx, f.node("s1"), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("node after Forget: %v, want NotFound", err)
	}
	if _, err := f.k8s.CoreV1().Secrets(metav1.NamespaceSystem).Get(f.ctx, secret, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("secret after Forget: %v, want NotFound", err)
	}
	// Both gone already: fine.
	if err := Forget(f.ctx, f.k8s, f.node("s1")); err != nil {
		t.Fatal(err)
	}
}

// Run finds the clusters with waiting machines, drops a client that failed and keeps one that works.
func TestRun(t *testing.T) {
	f := setup(t)
	a1 := f.machine("a1", "installing")
	a2 := f.machine("a2", "installing") // never registers: keeps the cluster watched
	f.machine("s1", "installing", "joined", "ready")
	f.register("a1", true)
	var calls atomic.Int32
	good := f.w.Clients
	f.w.Clients = func(ctx context.Context, cluster string) (kubernetes.Interface, error) {
		if calls.Add(1) == 1 { // an API server that is not there
			return kubernetes.NewForConfig(&rest.Config{Host: "http://127.0.0.1:1", Timeout: time.Second})
		}
		return good(ctx, cluster)
	}
	f.w.Interval = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan struct{})
	go func() { f.w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	deadline := time.Now().Add(20 * time.Second)
	for {
		m, err := f.st.Machine(f.ctx, a1)
		if err != nil {
			t.Fatal(err)
		}
		if m.State == "ready" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("machine %s still %s", a1, m.State)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(10 * f.w.Interval) // more passes, through the cached client
	cancel()
	<-done
	if n := calls.Load(); n != 2 {
		t.Errorf("Clients called %d times, want 2 (the failed client dropped, the good one cached)", n)
	}
	f.wantState(a2, "installing")
	f.wantEvents(a1, "installing->joined: node "+f.node("a1")+" registered", "joined->ready: node "+f.node("a1")+" is Ready")
}

// An armed reinstall forgets its member's old Node (and password secret) in the background, through the
// watcher's HostNames and Clients; a machine of no member of the plan changes nothing.
func TestForgetOldNode(t *testing.T) {
	f := setup(t)
	f.register("a1", true)
	f.register("a2", true)
	f.w.ForgetOldNode(f.ctx, &store.Machine{MAC: members["a2"], Cluster: ptr.To("dev"), Member: ptr.To("nope")})
	f.w.ForgetOldNode(f.ctx, &store.Machine{MAC: members["a1"]}) // not assigned
	f.w.ForgetOldNode(f.ctx, &store.Machine{MAC: members["a1"], Cluster: ptr.To("dev"), Member: ptr.To("a1")})
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := f.k8s.CoreV1().Nodes().Get(f.ctx, f.node("a1"), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s still there after ForgetOldNode: %v", f.node("a1"), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := f.k8s.CoreV1().Nodes().Get(f.ctx, f.node("a2"), metav1.GetOptions{}); err != nil {
		t.Errorf("node %s of another member: %v, want it kept", f.node("a2"), err)
	}
}

// A Cozystack cluster has no CNI until its platform is bootstrapped, so no node is Ready: until bootstrap's
// marker (cozystack.Bootstrapped) exists a registered node moves its machine on to ready; after, only a
// Ready one does.
func TestCozystackRegisteredIsReadyUntilBootstrapped(t *testing.T) {
	f := setup(t)
	f.w.Cozystack = func(_ context.Context, cluster string) (bool, error) { return cluster == "dev", nil }
	cms := f.k8s.CoreV1().ConfigMaps(cozystack.MarkerNamespace)
	if _, err := cms.Get(f.ctx, cozystack.MarkerName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the marker exists before the test: %v", err)
	}

	mac := f.machine("a1", "installing")
	f.register("a1", false)
	f.sync()
	f.wantState(mac, "ready")
	f.wantEvents(mac, "installing->joined: node "+f.node("a1")+" registered",
		"joined->ready: node "+f.node("a1")+" registered; Cozystack is not bootstrapped yet, so there is no CNI and no node is Ready: registered counts as ready")

	// Bootstrapped: the next member waits for a Ready node again.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: cozystack.MarkerNamespace}}
	if _, err := f.k8s.CoreV1().Namespaces().Create(f.ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if _, err := cms.Create(f.ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: cozystack.MarkerName},
		Data: map[string]string{"version": "v1.6.2"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cms.Delete(context.Background(), cozystack.MarkerName, metav1.DeleteOptions{}) })
	mac2 := f.machine("a2", "installing")
	f.register("a2", false)
	f.sync()
	f.wantState(mac2, "joined")
	f.setReady("a2", true)
	f.sync()
	f.wantEvents(mac2, "installing->joined: node "+f.node("a2")+" registered", "joined->ready: node "+f.node("a2")+" is Ready")

	// A cluster the plan gives no Cozystack is not asked about the marker at all.
	f.w.Cozystack = func(context.Context, string) (bool, error) { return false, nil }
	if err := cms.Delete(f.ctx, cozystack.MarkerName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	mac3 := f.machine("s1", "installing")
	f.register("s1", false)
	f.sync()
	f.wantState(mac3, "joined")
}
