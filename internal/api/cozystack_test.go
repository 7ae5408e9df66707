package api

// POST /v1/clusters/{name}/cozystack/bootstrap and GET .../cozystack/status against the real kube-apiserver
// and etcd the package's rollout tests use (internal/k8stest) and real PostgreSQL, through the real core.
// The manifests are internal/cozystack's test ones, served on loopback with their hashes pinned in the
// config. Cozystack itself cannot run here (no kubelet, images or network) and nothing plays its operator,
// so the bootstrap job gets as far as a real API server takes it: the CRDs applied and Established, the
// operator applied, and then a timeout waiting for its Deployment, which names it. internal/cozystack's
// tests play the operator and cover the whole bootstrap.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nix8s/nix8s/internal/cozystack"
	"github.com/nix8s/nix8s/internal/jobs"
	"github.com/nix8s/nix8s/internal/k8stest"
)

func TestCozystackBootstrapEndpoint(t *testing.T) {
	k8s := apiServer(t)
	files := map[string][]byte{}
	for name, src := range map[string]string{"cozystack-crds.yaml": "crds.yaml", "cozystack-operator-generic.yaml": "operator.yaml"} {
		b, err := os.ReadFile(filepath.Join("..", "cozystack", "testdata", src))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = b
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b, ok := files[strings.TrimPrefix(r.URL.Path, "/")]; ok {
			w.Write(b)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)

	var runner *jobs.Runner
	e := newEnv(t, func(env *env, o *Options) {
		runner = &jobs.Runner{Store: env.st, Planner: o.Inventory, Worker: "test-daemon", Poll: 100 * time.Millisecond,
			Config: jobs.Config{Flake: env.ws, APIServer: k8s.Config, WaitTimeout: 5 * time.Second, WaitInterval: 50 * time.Millisecond}}
		o.Operations = runner
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); runner.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })

	pinned := func(name string) string {
		return fmt.Sprintf("{ url: %q, hash: %q }", srv.URL+"/"+name, cozystack.SRI(files[name]))
	}
	cfg := `nodes:
  std:
    install:
      disk: /dev/sda
clusters:
  z:
    domain: cozy.example.com
    k3s: { version: "v1.34.2+k3s1" }
    cozystack:
      enable: true
      manifests:
        crds: ` + pinned("cozystack-crds.yaml") + `
        operator: ` + pinned("cozystack-operator-generic.yaml") + `
    members:
      s1: { node: std, role: server, ip: 10.9.3.1 }
      a1: { node: std, role: agent, ip: 10.9.3.2 }
  u:
    domain: cozy.example.com
    k3s: { version: "v1.34.2+k3s1" }
    cozystack: { enable: true }
    members:
      s1: { node: std, role: server, ip: 10.9.4.1 }
  plain:
    members:
      s1: { node: std, role: server, ip: 10.9.5.1 }
provisioning:
  nixos-anywhere:
    ssh:
      user: root
`
	expect(t, e.putConfigYAML([]byte(cfg)), 200, "")
	wait := func(id any) map[string]any { return (&opsEnv{env: e}).wait(t, id) }

	t.Run("refusals", func(t *testing.T) {
		expect(t, e.req("POST", "/v1/clusters/z/cozystack/bootstrap", e.read, `{}`), 403, "forbidden")
		expect(t, e.req("POST", "/v1/clusters/nope/cozystack/bootstrap", e.admin, `{}`), 404, "not_found")
		m := expect(t, e.req("POST", "/v1/clusters/z/cozystack/bootstrap", e.admin, `{"timeout": "soon"}`), 400, "bad_request")
		if d := details(m); len(d) != 1 || d[0]["path"] != "timeout" {
			t.Errorf("bad timeout: details %v", m["details"])
		}
		expect(t, e.req("POST", "/v1/clusters/z/cozystack/bootstrap", e.admin, `{"wait": "1m"}`), 400, "bad_request")
		m = expect(t, e.req("POST", "/v1/clusters/plain/cozystack/bootstrap", e.admin, nil), 422, "invalid_config")
		if d := details(m); len(d) != 1 || d[0]["path"] != "clusters.plain.cozystack.enable" {
			t.Errorf("no Cozystack: details %v", m["details"])
		}
		expect(t, e.req("GET", "/v1/clusters/plain/cozystack/status", e.read, nil), 422, "invalid_config")
		// The core pins no hash for v1.6.2's operator manifest: refused before a job exists, saying how to pin it.
		m = expect(t, e.req("POST", "/v1/clusters/u/cozystack/bootstrap", e.admin, `{}`), 422, "invalid_config")
		d := details(m)
		if len(d) != 1 || d[0]["path"] != "clusters.u.cozystack.manifests" {
			t.Fatalf("unpinned operator manifest: %v", m)
		}
		msg, _ := d[0]["message"].(string)
		for _, want := range []string{"no hash is pinned for cozystack-operator-generic.yaml v1.6.2",
			"nix store prefetch-file --json https://github.com/cozystack/cozystack/releases/download/v1.6.2/cozystack-operator-generic.yaml",
			"nix-prefetch-url", "clusters.u.cozystack.manifests.operator = { url = ", "clusters.u.cozystack.manifests.crds = { url = "} {
			if !strings.Contains(msg, want) {
				t.Errorf("the refusal lacks %q: %s", want, msg)
			}
		}
		page := expect(t, e.req("GET", "/v1/jobs?kind=cozystack-bootstrap", e.read, nil), 200, "")
		if items := page["items"].([]any); len(items) != 0 {
			t.Errorf("refused requests queued jobs: %v", items)
		}
	})

	t.Run("a job that times out at the api step names the unregistered nodes", func(t *testing.T) {
		res := e.req("POST", "/v1/clusters/z/cozystack/bootstrap", e.admin, `{"timeout": "1s"}`)
		j := expect(t, res, 202, "")
		if j["kind"] != "cozystack-bootstrap" || j["cluster"] != "z" || res.header.Get("Location") != fmt.Sprintf("/v1/jobs/%v", j["id"]) {
			t.Fatalf("queued %v, Location %s", j, res.header.Get("Location"))
		}
		j = wait(j["id"])
		want := "cozystack bootstrap of z, step api: timed out after 1s: not ready: node z-s1: not registered; node z-a1: not registered"
		if j["status"] != "failed" || j["error"] != want {
			t.Fatalf("job %v: %v\nwant error %s\n%s", j["status"], j["error"], want, j["log"])
		}
		if got := stepsOf(j); got != "api=failed" {
			t.Errorf("result steps %s", got)
		}
	})

	for _, n := range []string{"z-s1", "z-a1"} {
		if err := k8stest.AddNode(t.Context(), k8s.Client, n, "v1.34.2+k3s1"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { k8stest.DeleteNode(context.Background(), k8s.Client, n) })
	}

	t.Run("with the nodes registered it applies the CRDs and the operator, then waits for the operator", func(t *testing.T) {
		j := expect(t, e.req("POST", "/v1/clusters/z/cozystack/bootstrap", e.admin, `{"timeout": "3s"}`), 202, "")
		j = wait(j["id"])
		errMsg, _ := j["error"].(string)
		if j["status"] != "failed" || !strings.Contains(errMsg, "step operator: timed out after 3s: not ready: deployment cozy-system/cozystack-operator: not Available") {
			t.Fatalf("job %v: %v\n%s", j["status"], j["error"], j["log"])
		}
		if got := stepsOf(j); got != "api=ok crds=ok operator=failed" {
			t.Errorf("result steps %s", got)
		}
		log, _ := j["log"].(string)
		if !strings.Contains(log, "nix8s: cozystack crds done: ") || !strings.Contains(log, "nix8s: cozystack operator failed: ") {
			t.Errorf("the log lacks the steps:\n%s", log)
		}
		d, err := k8s.Client.AppsV1().Deployments("cozy-system").Get(t.Context(), "cozystack-operator", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("the operator's Deployment was not applied: %v", err)
		}
		var host string
		for _, v := range d.Spec.Template.Spec.Containers[0].Env {
			if v.Name == "KUBERNETES_SERVICE_HOST" {
				host = v.Value
			}
		}
		if host != "10.9.3.1" {
			t.Errorf("the operator's KUBERNETES_SERVICE_HOST is %q, want the cluster's endpoint 10.9.3.1", host)
		}
	})

	t.Run("status reads the platform now", func(t *testing.T) {
		m := expect(t, e.req("GET", "/v1/clusters/z/cozystack/status", e.read, nil), 200, "")
		nr, _ := m["notReady"].([]any)
		if m["ready"] != false || m["cluster"] != "z" || !containsAny(nr, "package cozystack.cozystack-platform: not Ready (NotFound: not applied yet)") {
			t.Fatalf("status %v", m)
		}
	})

	t.Run("a rollout of a Cozystack cluster not bootstrapped is refused, naming the bootstrap", func(t *testing.T) {
		j := expect(t, e.req("POST", "/v1/clusters/z/rollout", e.admin, `{"all": true}`), 202, "")
		j = wait(j["id"])
		errMsg, _ := j["error"].(string)
		if j["status"] != "failed" || !strings.Contains(errMsg, cozystack.NotBootstrappedError("z", "rollout").Error()) {
			t.Fatalf("job %v: %v\n%s", j["status"], j["error"], j["log"])
		}
		for _, n := range []string{"z-s1", "z-a1"} {
			if node, err := k8s.Client.CoreV1().Nodes().Get(t.Context(), n, metav1.GetOptions{}); err != nil || node.Spec.Unschedulable {
				t.Errorf("node %s after the refused rollout: %v, cordoned %t", n, err, err == nil && node.Spec.Unschedulable)
			}
		}
	})
}

func details(m map[string]any) []map[string]any {
	var out []map[string]any
	ds, _ := m["details"].([]any)
	for _, d := range ds {
		if dm, ok := d.(map[string]any); ok {
			out = append(out, dm)
		}
	}
	return out
}

// stepsOf renders a cozystack-bootstrap job's result as "api=ok crds=failed".
func stepsOf(j map[string]any) string {
	res, _ := j["result"].(map[string]any)
	steps, _ := res["steps"].([]any)
	var out []string
	for _, s := range steps {
		sm, _ := s.(map[string]any)
		state := "failed"
		if sm["ok"] == true {
			state = "ok"
		}
		out = append(out, fmt.Sprintf("%v=%s", sm["step"], state))
	}
	return strings.Join(out, " ")
}

func containsAny(xs []any, want string) bool {
	for _, x := range xs {
		if x == want {
			return true
		}
	}
	return false
}
