package cozystack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/k8stest"
)

// The tests run bootstrap and status against a real kube-apiserver and etcd (internal/k8stest). Cozystack
// itself cannot run here (no kubelet, no images, no network), so the test plays what would answer: the
// deployment controller and kubelet (the operator's Deployment becomes Available), the operator (it installs
// Flux's HelmRelease CRD, creates the platform PackageSource, reconciles the Package into HelmReleases and
// marks it Ready), Flux (HelmReleases become Ready) and the CNI (nodes become Ready once the platform's
// networking release is). The API server itself establishes the CRDs and validates every object applied.

var env *k8stest.Env

func TestMain(m *testing.M) {
	e, err := k8stest.Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "nix8s: error: %v\n", err)
		os.Exit(1)
	}
	env = e
	code := m.Run()
	if err := e.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "nix8s: error: stopping the API server: %v\n", err)
	}
	os.Exit(code)
}

// examplePlan is the core's plan of examples/cozystack (cluster prod: server, worker1, worker2).
func examplePlan(t *testing.T) core.Cluster {
	t.Helper()
	cmd := exec.Command("nix-instantiate", "--eval", "--strict", "--json", "--expr",
		"(import ./lib).plan (import ./examples/cozystack/config.nix)")
	cmd.Dir = filepath.Join("..", "..")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-instantiate: %v\n%s", err, stderr.String())
	}
	var p core.Plan
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	c := p.Clusters["prod"]
	if c.Cozystack == nil {
		t.Fatal("the example's plan has no cozystack")
	}
	return c
}

// manifests are the files a test serves: the CRDs (the real v1.6.2 ones when NIX8S_COZYSTACK_GIT names a
// clone of cozystack/cozystack, else testdata's) and the operator manifest (always testdata's: the real one is
// a helm render this machine cannot make).
type manifests struct {
	crds, operator, helmReleaseCRD []byte
	real                           bool
}

func readManifests(t *testing.T) manifests {
	t.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	m := manifests{crds: read("crds.yaml"), operator: read("operator.yaml"), helmReleaseCRD: read("helmrelease-crd.yaml")}
	if git := os.Getenv("NIX8S_COZYSTACK_GIT"); git != "" {
		show := func(path string) []byte {
			out, err := exec.Command("git", "--git-dir="+git, "show", "v1.6.2:"+path).Output()
			if err != nil {
				t.Fatalf("git show v1.6.2:%s in %s: %v", path, git, err)
			}
			return out
		}
		// cozystack-crds.yaml is this concatenation (cozystack Makefile: cat internal/crdinstall/manifests/*.yaml).
		m.crds = append(show("internal/crdinstall/manifests/cozystack.io_packages.yaml"), show("internal/crdinstall/manifests/cozystack.io_packagesources.yaml")...)
		m.real = true
	}
	return m
}

// pin points the plan's manifests at a local server holding m, with their hashes (the real CRDs keep the
// core's pinned hash, which must then match).
func pin(t *testing.T, c core.Cluster, m manifests) core.Cluster {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/cozystack-crds.yaml":
			w.Write(m.crds)
		case "/cozystack-operator-generic.yaml":
			w.Write(m.operator)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	cz := *c.Cozystack
	crdHash, opHash := SRI(m.crds), SRI(m.operator)
	if m.real {
		if *cz.Manifests.CRDs.Hash != crdHash {
			t.Fatalf("the core pins %s for v1.6.2's CRDs, the tag's concatenation hashes to %s", *cz.Manifests.CRDs.Hash, crdHash)
		}
	}
	cz.Manifests.CRDs = core.Pinned{URL: srv.URL + "/cozystack-crds.yaml", Hash: &crdHash}
	cz.Manifests.Operator = core.Pinned{URL: srv.URL + "/cozystack-operator-generic.yaml", Hash: &opHash}
	c.Cozystack = &cz
	return c
}

// operator plays the Deployment controller, Cozystack's operator, Flux and the CNI (see the top of the file).
// It records what it saw in which order; hold names HelmReleases Flux must leave not Ready.
type operator struct {
	m    manifests
	mu   sync.Mutex
	seen []string
	hold map[string]string // helmrelease name -> reason it stays not Ready
	bad  []string
}

func (o *operator) saw(what string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range o.seen {
		if s == what {
			return
		}
	}
	o.seen = append(o.seen, what)
}

func (o *operator) violation(f string, args ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.bad = append(o.bad, fmt.Sprintf(f, args...))
}

func (o *operator) run(ctx context.Context, c core.Cluster) {
	cl, err := newClients(env.Config)
	if err != nil {
		o.violation("clients: %v", err)
		return
	}
	for ctx.Err() == nil {
		o.step(ctx, cl, c)
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (o *operator) step(ctx context.Context, cl *clients, c core.Cluster) {
	kube := env.Client
	_, crdErr := cl.dyn.Resource(crdGVR).Get(ctx, "packages.cozystack.io", metav1.GetOptions{})
	if crdErr == nil {
		o.saw("crds")
	}
	d, err := kube.AppsV1().Deployments("cozy-system").Get(ctx, "cozystack-operator", metav1.GetOptions{})
	if err != nil {
		return
	}
	o.saw("operator")
	if crdErr != nil {
		o.violation("the operator was applied before cozystack-crds.yaml")
	}
	if !deploymentAvailable(d) {
		d.Status.Replicas, d.Status.ReadyReplicas, d.Status.AvailableReplicas = 1, 1, 1
		d.Status.Conditions = []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, Reason: "MinimumReplicasAvailable"}}
		if _, err := kube.AppsV1().Deployments("cozy-system").UpdateStatus(ctx, d, metav1.UpdateOptions{}); err != nil {
			return
		}
	}
	// The operator: Flux with its CRDs, then the platform PackageSource.
	objs, _ := objects(o.m.helmReleaseCRD)
	if err := applyAll(ctx, cl, objs); err != nil {
		return
	}
	ps := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "cozystack.io/v1alpha1", "kind": "PackageSource",
		"metadata": map[string]any{"name": c.Cozystack.PackageSource, "annotations": map[string]any{"operator.cozystack.io/skip-cozystack-values": "true"}},
		"spec": map[string]any{
			"sourceRef": map[string]any{"kind": "OCIRepository", "name": "cozystack-platform", "namespace": "cozy-system"},
			"variants":  []any{map[string]any{"name": "isp-full-generic", "components": []any{map[string]any{"name": "platform", "path": "core/platform"}}}},
		},
	}}
	if _, err := cl.dyn.Resource(packageSrcGVR).Apply(ctx, ps.GetName(), ps, metav1.ApplyOptions{FieldManager: "cozystack-operator", Force: true}); err != nil {
		return
	}
	setReady(ctx, cl, packageSrcGVR, "", ps.GetName(), "True", "ArtifactReady", "artifact is ready")
	o.saw("packagesource")

	pkg, err := cl.dyn.Resource(packageGVR).Get(ctx, c.Cozystack.PackageSource, metav1.GetOptions{})
	if err != nil {
		return
	}
	o.saw("package")
	// The reconciler: one HelmRelease per component of the variant, then Ready (which says only that much).
	for _, name := range []string{"cozystack-platform", "cozystack-networking", "cozystack-linstor"} {
		hr := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
			"metadata": map[string]any{"name": name, "namespace": "cozy-system", "labels": map[string]any{"cozystack.io/package": pkg.GetName()}},
			"spec":     map[string]any{"releaseName": name, "interval": "5m"},
		}}
		if _, err := cl.dyn.Resource(helmReleaseGVR).Namespace("cozy-system").Apply(ctx, name, hr, metav1.ApplyOptions{FieldManager: "cozystack-operator", Force: true}); err != nil {
			return
		}
	}
	setReady(ctx, cl, packageGVR, "", pkg.GetName(), "True", "ReconciliationSucceeded", "reconciliation succeeded, generated 3 helmrelease(s)")
	// Flux: releases become Ready unless held; the CNI comes up with the networking release.
	o.mu.Lock()
	hold := map[string]string{}
	for k, v := range o.hold {
		hold[k] = v
	}
	o.mu.Unlock()
	for _, name := range []string{"cozystack-platform", "cozystack-networking", "cozystack-linstor"} {
		if reason, held := hold[name]; held {
			setReady(ctx, cl, helmReleaseGVR, "cozy-system", name, "False", reason, "dependency 'cozy-system/cozystack-networking' is not ready")
		} else {
			setReady(ctx, cl, helmReleaseGVR, "cozy-system", name, "True", "InstallSucceeded", "Helm install succeeded")
		}
	}
	if _, held := hold["cozystack-networking"]; !held {
		for _, m := range members(c) {
			if n, err := kube.CoreV1().Nodes().Get(ctx, m.HostName, metav1.GetOptions{}); err == nil && !nodeReady(n) {
				k8stest.SetNodeStatus(ctx, kube, m.HostName, true, "")
			}
		}
	}
}

func (o *operator) setHold(name, reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if reason == "" {
		delete(o.hold, name)
	} else {
		o.hold[name] = reason
	}
}

func deploymentAvailable(d *appsv1.Deployment) bool {
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func setReady(ctx context.Context, cl *clients, gvr schema.GroupVersionResource, ns, name, status, reason, msg string) {
	u, err := cl.dyn.Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return
	}
	if st, r, _ := condition(u, "Ready"); st == status && r == reason {
		return
	}
	unstructured.SetNestedSlice(u.Object, []any{map[string]any{
		"type": "Ready", "status": status, "reason": reason, "message": msg,
		"lastTransitionTime": time.Now().UTC().Format(time.RFC3339), "observedGeneration": u.GetGeneration(),
	}}, "status", "conditions")
	cl.dyn.Resource(gvr).Namespace(ns).UpdateStatus(ctx, u, metav1.UpdateOptions{})
}

func stepNames(steps []Step) (names []string, ok bool) {
	ok = true
	for _, s := range steps {
		names = append(names, s.Step)
		ok = ok && s.OK
	}
	return names, ok
}

func resourceVersions(t *testing.T, ctx context.Context, cl *clients) map[string]string {
	t.Helper()
	rv := map[string]string{}
	for _, x := range []struct {
		key string
		get func() (metav1.Object, error)
	}{
		{"crd", func() (metav1.Object, error) {
			return cl.dyn.Resource(crdGVR).Get(ctx, "packages.cozystack.io", metav1.GetOptions{})
		}},
		{"deployment", func() (metav1.Object, error) {
			return env.Client.AppsV1().Deployments("cozy-system").Get(ctx, "cozystack-operator", metav1.GetOptions{})
		}},
		{"package", func() (metav1.Object, error) {
			return cl.dyn.Resource(packageGVR).Get(ctx, "cozystack.cozystack-platform", metav1.GetOptions{})
		}},
		{"marker", func() (metav1.Object, error) {
			return env.Client.CoreV1().ConfigMaps(MarkerNamespace).Get(ctx, MarkerName, metav1.GetOptions{})
		}},
	} {
		o, err := x.get()
		if err != nil {
			t.Fatalf("%s: %v", x.key, err)
		}
		rv[x.key] = o.GetResourceVersion()
	}
	return rv
}

// One cluster, one API server: the cases run in order, each starting from what the previous left.
func TestBootstrap(t *testing.T) {
	ctx := context.Background()
	m := readManifests(t)
	plan := examplePlan(t)
	c := pin(t, plan, m)
	cl, err := newClients(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	base := Options{Cluster: c, Config: env.Config, Poll: 100 * time.Millisecond}

	t.Run("the core's v1.6.2 operator manifest has no hash, so nothing is applied", func(t *testing.T) {
		// The example pins a placeholder; without manifests in the config the core pins no operator hash.
		o := base
		cz := *plan.Cozystack
		cz.Manifests.Operator.Hash = nil
		o.Cluster.Cozystack = &cz
		o.CRDs = Source{File: writeTemp(t, m.crds)}
		_, err := Bootstrap(ctx, o)
		want := "no hash is pinned for cozystack-operator-generic.yaml v1.6.2 (" + cz.Manifests.Operator.URL + "), so it is not applied: download it and check it, then take its hash with " +
			"`nix store prefetch-file --json " + cz.Manifests.Operator.URL + "`"
		if err == nil || !strings.HasPrefix(err.Error(), want) ||
			!strings.Contains(err.Error(), "`nix hash to-sri --type sha256 $(nix-prefetch-url "+cz.Manifests.Operator.URL+")`") ||
			!strings.Contains(err.Error(), "set clusters.prod.cozystack.manifests.operator = { url = \""+cz.Manifests.Operator.URL+"\"; hash = \"sha256-...\"; } with clusters.prod.cozystack.manifests.crds = { url = ") {
			t.Fatalf("want the missing hash named with how to pin it and where, got %v", err)
		}
		assertNoCRD(t, ctx, cl)
	})

	t.Run("the example's placeholder hash is refused: the file's own hash is named", func(t *testing.T) {
		o := base
		cz := *plan.Cozystack
		crdHash := SRI(m.crds) // the test's CRDs, unless NIX8S_COZYSTACK_GIT gives the real ones
		cz.Manifests.CRDs.Hash = &crdHash
		o.Cluster.Cozystack = &cz
		o.CRDs = Source{File: writeTemp(t, m.crds)}
		o.Operator = Source{File: writeTemp(t, m.operator)}
		_, err := Bootstrap(ctx, o)
		if err == nil || !strings.Contains(err.Error(), "has hash "+SRI(m.operator)+", but clusters.prod.cozystack.manifests.operator pins sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=: nothing was applied") {
			t.Fatalf("want the placeholder refused, got %v", err)
		}
		assertNoCRD(t, ctx, cl)
	})

	t.Run("a manifest whose bytes do not have the pinned hash is refused before anything is applied", func(t *testing.T) {
		o := base
		o.Operator = Source{File: writeTemp(t, append([]byte("# changed\n"), m.operator...))}
		_, err := Bootstrap(ctx, o)
		if err == nil || !strings.Contains(err.Error(), "nothing was applied") || !strings.Contains(err.Error(), "clusters.prod.cozystack.manifests.operator") {
			t.Fatalf("want a hash mismatch naming the setting, got %v", err)
		}
		assertNoCRD(t, ctx, cl)
	})

	t.Run("an operator manifest without the placeholder is refused", func(t *testing.T) {
		o := base
		other := bytes.ReplaceAll(m.operator, []byte(`"REPLACE_ME"`), []byte(`"10.0.0.1"`))
		h := SRI(other)
		cz := *c.Cozystack
		cz.Manifests.Operator.Hash = &h
		o.Cluster.Cozystack = &cz
		o.Operator = Source{File: writeTemp(t, other)}
		_, err := Bootstrap(ctx, o)
		if err == nil || !strings.Contains(err.Error(), `holds "REPLACE_ME" 0 times`) {
			t.Fatalf("want the missing placeholder reported, got %v", err)
		}
	})

	t.Run("with members not registered it times out at the first step, naming them", func(t *testing.T) {
		o := base
		o.Timeout = time.Second
		steps, err := Bootstrap(ctx, o)
		names, _ := stepNames(steps)
		if err == nil || !reflect.DeepEqual(names, []string{StepAPI}) || !strings.Contains(err.Error(), "timed out after 1s") ||
			!strings.Contains(err.Error(), "node prod-server: not registered") || !strings.Contains(err.Error(), "node prod-worker2: not registered") {
			t.Fatalf("want a timeout of step api naming the nodes, got steps %v, err %v", names, err)
		}
		assertNoCRD(t, ctx, cl)
	})

	// The nodes register NotReady: there is no CNI until Cozystack installs one.
	for _, mem := range members(c) {
		if err := k8stest.AddNode(ctx, env.Client, mem.HostName, "v1.34.2+k3s1"); err != nil {
			t.Fatal(err)
		}
		if err := k8stest.SetNodeStatus(ctx, env.Client, mem.HostName, false, ""); err != nil {
			t.Fatal(err)
		}
	}
	op := &operator{m: m, hold: map[string]string{}}
	octx, stop := context.WithCancel(ctx)
	defer stop()
	go op.run(octx, c)

	t.Run("installs CRDs, operator, Package in order and ends when nodes and HelmReleases are Ready", func(t *testing.T) {
		if done, err := Bootstrapped(ctx, env.Client); err != nil || done {
			t.Fatalf("Bootstrapped before bootstrap: %t, %v", done, err)
		}
		o := base
		o.Timeout = time.Minute
		var reported []string
		o.Report = func(s Step) { reported = append(reported, s.Step) }
		steps, err := Bootstrap(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		names, ok := stepNames(steps)
		want := []string{StepAPI, StepCRDs, StepOperator, StepPackageSource, StepPackage, StepReady}
		if !ok || !reflect.DeepEqual(names, want) || !reflect.DeepEqual(reported, want) {
			t.Fatalf("steps %+v, reported %v; want %v all ok", steps, reported, want)
		}
		op.mu.Lock()
		seen, bad := op.seen, op.bad
		op.mu.Unlock()
		if len(bad) != 0 || !reflect.DeepEqual(seen[:4], []string{"crds", "operator", "packagesource", "package"}) {
			t.Fatalf("order seen by the operator %v, violations %v", seen, bad)
		}
		d, err := env.Client.AppsV1().Deployments("cozy-system").Get(ctx, "cozystack-operator", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var host string
		for _, e := range d.Spec.Template.Spec.Containers[0].Env {
			if e.Name == "KUBERNETES_SERVICE_HOST" {
				host = e.Value
			}
		}
		if host != "192.168.2.10" {
			t.Errorf("KUBERNETES_SERVICE_HOST = %q, want the cluster's endpoint host 192.168.2.10", host)
		}
		pkg, err := cl.dyn.Resource(packageGVR).Get(ctx, "cozystack.cozystack-platform", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if want := c.Cozystack.Package["spec"]; !reflect.DeepEqual(pkg.Object["spec"], want) {
			t.Errorf("the Package's spec is %v, want the plan's %v", pkg.Object["spec"], want)
		}
		r, err := Status(ctx, env.Config, c)
		if err != nil || !r.Ready || len(r.Nodes) != 3 || len(r.HelmReleases) != 3 {
			t.Fatalf("status after bootstrap: %+v, %v", r, err)
		}
		// The marker nix8sd's readiness rules read (docs/cozystack.md).
		if done, err := Bootstrapped(ctx, env.Client); err != nil || !done {
			t.Fatalf("Bootstrapped after bootstrap: %t, %v", done, err)
		}
		if !strings.HasSuffix(steps[len(steps)-1].Detail, "; recorded in configmap cozy-system/nix8s-cozystack-bootstrap") {
			t.Errorf("the ready step does not say it recorded the bootstrap: %q", steps[len(steps)-1].Detail)
		}
	})

	t.Run("running it again applies the same objects and changes nothing", func(t *testing.T) {
		before := resourceVersions(t, ctx, cl)
		steps, err := Bootstrap(ctx, base)
		if err != nil {
			t.Fatal(err)
		}
		if names, ok := stepNames(steps); !ok || len(names) != 6 {
			t.Fatalf("steps %+v", steps)
		}
		if after := resourceVersions(t, ctx, cl); !reflect.DeepEqual(before, after) {
			t.Errorf("resource versions changed: %v -> %v", before, after)
		}
	})

	t.Run("a Ready Package is not enough: a HelmRelease not Ready fails the ready step by name", func(t *testing.T) {
		op.setHold("cozystack-linstor", "DependencyNotReady")
		waitFor(t, func() bool {
			r, err := Status(ctx, env.Config, c)
			return err == nil && !r.Ready
		})
		r, err := Status(ctx, env.Config, c)
		if err != nil {
			t.Fatal(err)
		}
		wantNR := []string{"helmrelease cozy-system/cozystack-linstor: not Ready (DependencyNotReady: dependency 'cozy-system/cozystack-networking' is not ready)"}
		if !reflect.DeepEqual(r.NotReady, wantNR) {
			t.Fatalf("status not ready %v, want %v", r.NotReady, wantNR)
		}
		o := base
		o.Timeout = 2 * time.Second
		steps, err := Bootstrap(ctx, o)
		names, _ := stepNames(steps)
		if err == nil || names[len(names)-1] != StepReady || steps[len(steps)-1].OK ||
			!strings.Contains(err.Error(), "step ready: timed out after 2s: not ready: "+wantNR[0]) {
			t.Fatalf("want the ready step to time out naming the release, got steps %v, err %v", names, err)
		}
		for _, s := range steps[:len(steps)-1] {
			if !s.OK {
				t.Errorf("step %s failed: %s", s.Step, s.Detail)
			}
		}
		op.setHold("cozystack-linstor", "")
		waitFor(t, func() bool {
			r, err := Status(ctx, env.Config, c)
			return err == nil && r.Ready
		})
	})

	t.Run("a node that is not Ready is named", func(t *testing.T) {
		op.setHold("cozystack-networking", "InstallFailed")
		if err := k8stest.SetNodeStatus(ctx, env.Client, "prod-worker1", false, ""); err != nil {
			t.Fatal(err)
		}
		r, err := Status(ctx, env.Config, c)
		if err != nil {
			t.Fatal(err)
		}
		if r.Ready || !contains(r.NotReady, "node prod-worker1: not Ready (KubeletNotReady: container runtime is down)") {
			t.Fatalf("status %v", r.NotReady)
		}
		op.setHold("cozystack-networking", "")
	})
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// waitFor waits for what the operator goroutine does next; its own bound is not what a case asserts.
func waitFor(t *testing.T, f func() bool) {
	t.Helper()
	for i := 0; i < 600; i++ {
		if f() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the test's operator did not get there")
}

func assertNoCRD(t *testing.T, ctx context.Context, cl *clients) {
	t.Helper()
	if _, err := cl.dyn.Resource(crdGVR).Get(ctx, "packages.cozystack.io", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("packages.cozystack.io should not exist: %v", err)
	}
}

func writeTemp(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "manifest.yaml")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
