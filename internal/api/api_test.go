package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nix8s/nix8s"
	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/inventory"
	"github.com/nix8s/nix8s/internal/nixgen"
	"github.com/nix8s/nix8s/internal/pgtest"
	"github.com/nix8s/nix8s/internal/store"
	"github.com/nix8s/nix8s/internal/store/storetest"
)

func TestMain(m *testing.M) {
	if os.Getenv("NIX8S_TEST_LOG") == "" {
		slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	}
	dir, err := os.MkdirTemp("", "nix8s-api-core-")
	if err != nil {
		panic(err)
	}
	coreCache = dir
	code := pgtest.Run(m)
	stopAPIServer()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	coreCache string
	evalOnce  sync.Once
	realCore  *core.Evaluator
	coreErr   error
)

// theCore is the real Nix core (nix-instantiate on the embedded lib/), as the daemon uses it.
func theCore(t testing.TB) *core.Evaluator {
	evalOnce.Do(func() {
		realCore, coreErr = core.New(core.Options{Lib: nix8s.Lib, CacheDir: coreCache})
	})
	if coreErr != nil {
		t.Fatalf("the nix8s core: %v", coreErr)
	}
	return realCore
}

type env struct {
	t           testing.TB
	url         string
	st          *store.Store
	inv         *inventory.Inventory
	srv         *Server
	admin, read string
	ws          string
}

// newEnv is a server on a new database with the real core and a workspace; each of with may change its
// Options first (the job runner, the boot handler, another inventory), given the env's store and inventory.
func newEnv(t testing.TB, with ...func(e *env, o *Options)) *env {
	t.Helper()
	ctx := context.Background()
	st := storetest.Open(t)
	ws := filepath.Join(t.TempDir(), "flake")
	e := &env{t: t, st: st, ws: ws}
	e.inv = inventory.New(inventory.Options{Store: st, Core: theCore(t), Workspace: &nixgen.Workspace{Dir: ws}})
	o := Options{Store: st, Inventory: e.inv}
	for _, w := range with {
		w(e, &o)
	}
	e.inv = o.Inventory
	e.srv = New(o)
	hs := httptest.NewServer(e.srv)
	t.Cleanup(hs.Close)
	e.url = hs.URL
	var err error
	if e.admin, err = st.CreateToken(ctx, "admin", store.ScopeAdmin); err != nil {
		t.Fatal(err)
	}
	if e.read, err = st.CreateToken(ctx, "read", store.ScopeRead); err != nil {
		t.Fatal(err)
	}
	return e
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(r.body))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		t.Fatalf("status %d, body not a JSON object: %s", r.status, r.body)
	}
	return m
}

// req sends a request; headers are "Name: value" strings; body is sent as is (string or []byte) or as JSON.
func (e *env) req(method, path, token string, body any, headers ...string) resp {
	e.t.Helper()
	var rd io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
		ct = "application/json"
	case []byte:
		rd = bytes.NewReader(b)
		ct = "application/json"
	default:
		data, _ := json.Marshal(b)
		rd = bytes.NewReader(data)
		ct = "application/json"
	}
	r, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if ct != "" {
		r.Header.Set("Content-Type", ct)
	}
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		r.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	checkContract(e.t, r, res, data)
	return resp{res.StatusCode, res.Header, data}
}

// expect fails unless the response has status; for errors it also checks the error shape and code.
func expect(t testing.TB, r resp, status int, code string) map[string]any {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if r.status == http.StatusNoContent {
		return nil
	}
	m := r.json(t)
	if status >= 400 {
		if m["code"] != code {
			t.Fatalf("error code %v, want %s: %s", m["code"], code, r.body)
		}
		if msg, _ := m["message"].(string); msg == "" {
			t.Fatalf("error without message: %s", r.body)
		}
		if _, ok := m["details"].([]any); !ok {
			t.Fatalf("error without details list: %s", r.body)
		}
	}
	return m
}

func paths(m map[string]any) []string {
	var out []string
	ds, _ := m["details"].([]any)
	for _, d := range ds {
		out = append(out, fmt.Sprint(d.(map[string]any)["path"]))
	}
	return out
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (e *env) putConfigYAML(data []byte) resp {
	return e.req("PUT", "/v1/config", e.admin, data, "Content-Type: application/yaml")
}

func TestHealthAndOpenAPI(t *testing.T) {
	e := newEnv(t)
	expect(t, e.req("GET", "/healthz", "", nil), 200, "")
	expect(t, e.req("GET", "/readyz", "", nil), 200, "")
	r := e.req("GET", "/v1/openapi.yaml", "", nil)
	if r.status != 200 || !bytes.HasPrefix(r.body, []byte("openapi: 3")) {
		t.Fatalf("openapi: %d %.40s", r.status, r.body)
	}
	expect(t, e.req("GET", "/v1/nothing", e.read, nil), 404, "not_found")
	expect(t, e.req("GET", "/boot/ipxe?mac=aa:bb:cc:dd:ee:ff", "", nil), 501, "not_implemented")
}

func TestReadyzWithPendingMigrations(t *testing.T) {
	e := newEnv(t)
	if err := e.st.MigrateDown(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	expect(t, e.req("GET", "/readyz", "", nil), 503, "unavailable")
}

func TestAuth(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name, method, path, token string
		status                    int
		code                      string
	}{
		{"no token", "GET", "/v1/config", "", 401, "unauthorized"},
		{"wrong token", "GET", "/v1/config", e.read + "x", 401, "unauthorized"},
		{"not a nix8s token", "GET", "/v1/machines", "abc", 401, "unauthorized"},
		{"read token reads", "GET", "/v1/config", e.read, 200, ""},
		{"read token cannot write", "PUT", "/v1/nodes/x", e.read, 403, "forbidden"},
		{"read token cannot delete", "DELETE", "/v1/machines/aa:bb:cc:dd:ee:ff", e.read, 403, "forbidden"},
		{"admin token reads", "GET", "/v1/jobs", e.admin, 200, ""},
		{"no token on a write", "POST", "/v1/machines", "", 401, "unauthorized"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.req(tc.method, tc.path, tc.token, nil)
			expect(t, r, tc.status, tc.code)
			if tc.status == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without WWW-Authenticate: Bearer")
			}
		})
	}
	// Revoked tokens stop working.
	e.st.Pool().Exec(context.Background(), "UPDATE api_tokens SET revoked_at = now() WHERE scope = 'read'")
	expect(t, e.req("GET", "/v1/config", e.read, nil), 401, "unauthorized")
}

// Every example of the design goes in as YAML and comes back equal, as JSON and as YAML.
func TestConfigRoundTripExamples(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*/config.yaml")
	files = append(files, "testdata/config.yaml")
	if len(files) < 2 {
		t.Fatal("no example configs found")
	}
	e := newEnv(t)
	for _, f := range files {
		t.Run(filepath.Base(filepath.Dir(f)), func(t *testing.T) {
			data := readFile(t, f)
			want, err := core.Decode(data)
			if err != nil {
				t.Fatal(err)
			}
			m := expect(t, e.putConfigYAML(data), 200, "")
			if ws, _ := m["warnings"].([]any); ws == nil {
				t.Errorf("no warnings list: %v", m)
			}
			got := e.req("GET", "/v1/config", e.read, nil)
			v, err := core.Decode(got.body)
			if err != nil || !store.Equal(v, want) {
				t.Fatalf("JSON round trip differs:\n got %s", got.body)
			}
			gotYAML := e.req("GET", "/v1/config", e.read, nil, "Accept: application/yaml")
			if ct := gotYAML.header.Get("Content-Type"); ct != "application/yaml" {
				t.Errorf("Content-Type %q", ct)
			}
			v, err = core.Decode(gotYAML.body)
			if err != nil || !store.Equal(v, want) {
				t.Fatalf("YAML round trip differs (%v):\n%s", err, gotYAML.body)
			}
			// And JSON in gives the same.
			expect(t, e.req("PUT", "/v1/config", e.admin, got.body), 200, "")
			again := e.req("GET", "/v1/config", e.read, nil)
			v, _ = core.Decode(again.body)
			if !store.Equal(v, want) {
				t.Fatalf("JSON in, JSON out differs: %s", again.body)
			}
		})
	}
	// The flake workspace follows the inventory.
	inv := readFile(t, filepath.Join(e.ws, nixgen.InventoryFile))
	v, _ := core.Decode(inv)
	last, _ := core.Decode(readFile(t, "testdata/config.yaml"))
	if !store.Equal(v, last) {
		t.Errorf("workspace inventory.json is not the stored inventory: %s", inv)
	}
}

func TestPutConfigRejected(t *testing.T) {
	e := newEnv(t)
	good := readFile(t, "testdata/config.yaml")
	expect(t, e.putConfigYAML(good), 200, "")
	before := e.req("GET", "/v1/config", e.read, nil)

	bad := strings.Replace(string(good), "role: agent", "role: worker", 1)
	bad = strings.Replace(bad, "node: standard, role: server", "node: missing, role: server", 1)
	m := expect(t, e.putConfigYAML([]byte(bad)), 422, "invalid_config")
	got := strings.Join(paths(m), " ")
	for _, p := range []string{"clusters.dev.members.agent.role", "clusters.dev.members.server.node"} {
		if !strings.Contains(got, p) {
			t.Errorf("422 details lack %s: %s", p, got)
		}
	}
	// A secret value is only a warning for the core, but the daemon never stores one.
	secret := strings.Replace(string(good), "clusters:\n  dev:\n", "clusters:\n  dev:\n    secrets: { token: hunter2 }\n", 1)
	if secret == string(good) {
		t.Fatal("testdata/config.yaml no longer starts its clusters with dev")
	}
	m = expect(t, e.putConfigYAML([]byte(secret)), 422, "invalid_config")
	if got := strings.Join(paths(m), " "); got != "clusters.dev.secrets.token" {
		t.Errorf("422 details for a secret value: %s", got)
	}
	if ds, _ := m["details"].([]any); len(ds) != 1 || !strings.Contains(fmt.Sprint(ds[0].(map[string]any)["message"]), "set secrets.tokenFile to its path") {
		t.Errorf("422 details for a secret value lack the fix: %v", m["details"])
	}
	for _, tc := range []struct {
		name, body, ct string
		status         int
		code           string
	}{
		{"malformed JSON", `{"nodes": `, "application/json", 400, "bad_request"},
		{"JSON that is not an object", `[1, 2]`, "application/json", 400, "bad_request"},
		{"malformed YAML", "nodes: [\n", "application/yaml", 400, "bad_request"},
		// The core's rule (lib/validate.nix), with its path, like every other config error.
		{"unknown top-level key", `{"nodes": {}, "extra": 1}`, "application/json", 422, "invalid_config"},
		{"unsupported content type", `nodes: {}`, "text/plain", 415, "unsupported_media_type"},
		{"section of the wrong shape", `{"nodes": []}`, "application/json", 422, "invalid_config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expect(t, e.req("PUT", "/v1/config", e.admin, tc.body, "Content-Type: "+tc.ct), tc.status, tc.code)
		})
	}
	after := e.req("GET", "/v1/config", e.read, nil)
	if !bytes.Equal(before.body, after.body) {
		t.Fatalf("a rejected write changed the inventory:\n%s\n%s", before.body, after.body)
	}
	// If-Match on the whole inventory.
	expect(t, e.putConfigYAML(good), 200, "")
	stale := e.req("PUT", "/v1/config", e.admin, good, "Content-Type: application/yaml", `If-Match: "1"`)
	expect(t, stale, 409, "conflict")
	cur := e.req("GET", "/v1/config", e.read, nil).header.Get("ETag")
	expect(t, e.req("PUT", "/v1/config", e.admin, good, "Content-Type: application/yaml", "If-Match: "+cur), 200, "")
	expect(t, e.req("PUT", "/v1/config", e.admin, good, "Content-Type: application/yaml", "If-Match: x"), 400, "bad_request")
}

// Rules the core owns reach REST clients as 422 with the core's paths, and nothing is stored: an unknown top-level
// key, and a member written with another member's MAC (once a 200 with a warning, after which serve --pxe refused
// to start).
func TestCoreRulesRefuseWrites(t *testing.T) {
	e := newEnv(t)
	expect(t, e.putConfigYAML(readFile(t, "testdata/config.yaml")), 200, "")
	before := e.req("GET", "/v1/config", e.read, nil)

	m := expect(t, e.req("PUT", "/v1/config", e.admin, `{"nodes": {}, "$schema": "x"}`), 422, "invalid_config")
	if got := strings.Join(paths(m), " "); got != `"$schema"` {
		t.Errorf("unknown top-level key: details %s, want the key's path alone", got)
	}

	// agent comes before server: the error is server's, and names agent.
	m = expect(t, e.req("PUT", "/v1/clusters/dev/members/agent", e.admin,
		`{"node": "standard", "role": "agent", "ip": "192.168.1.20", "network": {"mac": "AA:BB:CC:DD:EE:01"}}`), 422, "invalid_config")
	ds, _ := m["details"].([]any)
	if len(ds) != 1 {
		t.Fatalf("shared MAC: details %v, want one problem", m["details"])
	}
	d := ds[0].(map[string]any)
	if d["path"] != "clusters.dev.members.server.network.mac" || !strings.Contains(fmt.Sprint(d["message"]), "is also the MAC of clusters.dev.members.agent (set at clusters.dev.members.agent.network.mac)") {
		t.Errorf("shared MAC: %v", d)
	}

	// The usual way it happens: a template's MAC, taken by a member that has none of its own.
	m = expect(t, e.req("PUT", "/v1/nodes/standard", e.admin, `{"install": {"disk": "/dev/sda"}, "network": {"mac": "aa:bb:cc:dd:ee:01"}}`), 422, "invalid_config")
	if got := strings.Join(paths(m), " "); got != "clusters.dev.members.server.network.mac" {
		t.Errorf("template MAC shared with a member's own: details %s", got)
	}
	after := e.req("GET", "/v1/config", e.read, nil)
	if !bytes.Equal(before.body, after.body) {
		t.Fatalf("a refused write changed the inventory:\n%s\n%s", before.body, after.body)
	}
	// A MAC of its own is fine.
	expect(t, e.req("PUT", "/v1/clusters/dev/members/agent", e.admin,
		`{"node": "standard", "role": "agent", "ip": "192.168.1.20", "network": {"mac": "aa:bb:cc:dd:ee:02"}}`), 200, "")
}

func TestObjectsCRUD(t *testing.T) {
	e := newEnv(t)
	expect(t, e.putConfigYAML(readFile(t, "testdata/config.yaml")), 200, "")

	// nodes
	r := e.req("PUT", "/v1/nodes/big", e.admin, `{"install": {"disk": "/dev/nvme0n1"}}`)
	m := expect(t, r, 201, "")
	if r.header.Get("ETag") != `"1"` || m["version"] != json.Number("1") {
		t.Fatalf("create: ETag %s body %v", r.header.Get("ETag"), m)
	}
	r = e.req("GET", "/v1/nodes/big", e.read, nil)
	if m := expect(t, r, 200, ""); m["install"].(map[string]any)["disk"] != "/dev/nvme0n1" {
		t.Fatalf("get node: %s", r.body)
	}
	r = e.req("PUT", "/v1/nodes/big", e.admin, "install:\n  disk: /dev/sdb\n", "Content-Type: application/yaml", `If-Match: "1"`)
	expect(t, r, 200, "")
	expect(t, e.req("PUT", "/v1/nodes/big", e.admin, `{"install": {"disk": "/dev/sdc"}}`, `If-Match: "1"`), 409, "conflict")
	expect(t, e.req("PUT", "/v1/nodes/big", e.admin, `[]`), 400, "bad_request")
	m = expect(t, e.req("PUT", "/v1/nodes/big", e.admin, `{"install": {"disk": "/dev/sda"}, "disko": {"devices": {}}}`), 422, "invalid_config")
	if !strings.Contains(strings.Join(paths(m), " "), "nodes.big") {
		t.Errorf("422 paths: %v", paths(m))
	}
	// A node that members use cannot go: the core reports the dangling references.
	m = expect(t, e.req("DELETE", "/v1/nodes/standard", e.admin, nil), 422, "invalid_config")
	if !strings.Contains(strings.Join(paths(m), " "), "clusters.dev.members.agent.node") {
		t.Errorf("delete in-use node: %v", paths(m))
	}
	expect(t, e.req("DELETE", "/v1/nodes/big", e.admin, nil), 200, "")
	expect(t, e.req("GET", "/v1/nodes/big", e.read, nil), 404, "not_found")
	expect(t, e.req("DELETE", "/v1/nodes/big", e.admin, nil), 404, "not_found")

	// members
	r = e.req("PUT", "/v1/clusters/dev/members/agent2", e.admin, `{"node": "standard", "role": "agent", "ip": "192.168.1.21"}`)
	expect(t, r, 201, "")
	m = expect(t, e.req("PUT", "/v1/clusters/dev/members/agent3", e.admin, `{"node": "standard", "role": "agent", "ip": "192.168.1.21"}`), 422, "invalid_config")
	if len(paths(m)) == 0 {
		t.Error("duplicate IP: no paths")
	}
	expect(t, e.req("PUT", "/v1/clusters/nope/members/a", e.admin, `{"node": "standard", "role": "agent", "ip": "192.168.1.22"}`), 404, "not_found")
	m = expect(t, e.req("GET", "/v1/clusters/dev/members", e.read, nil), 200, "")
	if n := len(m["items"].([]any)); n != 3 {
		t.Fatalf("%d members", n)
	}
	expect(t, e.req("GET", "/v1/clusters/nope/members", e.read, nil), 404, "not_found")

	// clusters carry their members (not in lists), and a member change moves the cluster's version.
	m = expect(t, e.req("GET", "/v1/clusters", e.read, nil), 200, "")
	if spec := m["items"].([]any)[0].(map[string]any)["spec"].(map[string]any); spec["members"] != nil || spec["k3s"] == nil {
		t.Errorf("cluster in a list: %v", spec)
	}
	c1 := e.req("GET", "/v1/clusters/dev", e.read, nil)
	expect(t, c1, 200, "")
	if ms := c1.json(t)["members"].(map[string]any); len(ms) != 3 {
		t.Fatalf("cluster members: %v", ms)
	}
	expect(t, e.req("DELETE", "/v1/clusters/dev/members/agent2", e.admin, nil), 200, "")
	c2 := e.req("GET", "/v1/clusters/dev", e.read, nil)
	if c1.header.Get("ETag") == c2.header.Get("ETag") {
		t.Error("cluster ETag unchanged after a member was deleted")
	}
	r = e.req("PUT", "/v1/clusters/staging", e.admin, `{"members": {"s": {"node": "standard", "role": "server", "ip": "10.0.0.1"}}}`)
	expect(t, r, 201, "")
	expect(t, e.req("DELETE", "/v1/clusters/staging", e.admin, nil), 200, "")

	// provisioning
	expect(t, e.req("PUT", "/v1/provisioning/nixos-anywhere", e.admin, `{"ssh": {"user": "root"}}`), 201, "")
	m = expect(t, e.req("GET", "/v1/provisioning", e.read, nil), 200, "")
	if n := len(m["items"].([]any)); n != 2 {
		t.Fatalf("%d provisioners", n)
	}
	expect(t, e.req("DELETE", "/v1/provisioning/lima", e.admin, nil), 200, "")

	// pagination
	for _, n := range []string{"a", "b", "c", "d"} {
		expect(t, e.req("PUT", "/v1/nodes/"+n, e.admin, `{}`), 201, "")
	}
	var names []string
	after := ""
	for i := 0; i < 10; i++ {
		m := expect(t, e.req("GET", "/v1/nodes?limit=2&after="+after, e.read, nil), 200, "")
		for _, it := range m["items"].([]any) {
			names = append(names, it.(map[string]any)["name"].(string))
		}
		next, ok := m["next"].(string)
		if !ok {
			break
		}
		after = next
	}
	if strings.Join(names, ",") != "a,b,c,d,standard" {
		t.Fatalf("paged nodes: %v", names)
	}
	y := e.req("GET", "/v1/nodes?limit=2", e.read, nil, "Accept: application/yaml")
	if v, err := core.Decode(y.body); y.status != 200 || err != nil || len(v.(map[string]any)["items"].([]any)) != 2 {
		t.Fatalf("nodes as YAML: %d %v\n%s", y.status, err, y.body)
	}
	expect(t, e.req("GET", "/v1/nodes?limit=0", e.read, nil), 400, "bad_request")
	expect(t, e.req("GET", "/v1/nodes?limit=x", e.read, nil), 400, "bad_request")
}

// Writers that read the same version: one wins, the others get 409; writers of different objects all land.
func TestConcurrentWriters(t *testing.T) {
	e := newEnv(t)
	expect(t, e.putConfigYAML(readFile(t, "testdata/config.yaml")), 200, "")
	etag := e.req("GET", "/v1/nodes/standard", e.read, nil).header.Get("ETag")
	const n = 6
	codes := make(chan int, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r := e.req("PUT", "/v1/nodes/standard", e.admin, fmt.Sprintf(`{"install": {"disk": "/dev/sd%c"}}`, 'b'+i), "If-Match: "+etag)
			codes <- r.status
		}(i)
	}
	wg.Wait()
	close(codes)
	won := 0
	for c := range codes {
		switch c {
		case 200:
			won++
		case 409:
		default:
			t.Errorf("status %d", c)
		}
	}
	if won != 1 {
		t.Fatalf("%d writers won with the same If-Match, want 1", won)
	}

	var wg2 sync.WaitGroup
	for i := 0; i < n; i++ {
		wg2.Add(1)
		go func(i int) {
			defer wg2.Done()
			expect(t, e.req("PUT", fmt.Sprintf("/v1/nodes/n%d", i), e.admin, `{"install": {"disk": "/dev/sda"}}`), 201, "")
		}(i)
	}
	wg2.Wait()
	m := expect(t, e.req("GET", "/v1/nodes", e.read, nil), 200, "")
	if got := len(m["items"].([]any)); got != n+1 {
		t.Fatalf("%d nodes after %d concurrent creates, want %d", got, n, n+1)
	}
}

func TestMachines(t *testing.T) {
	e := newEnv(t)
	expect(t, e.putConfigYAML(readFile(t, "testdata/config.yaml")), 200, "")
	mac := "aa:bb:cc:dd:ee:01"
	m := expect(t, e.req("POST", "/v1/machines", e.admin, `{"mac": "AA-BB-CC-DD-EE-01", "facts": {"cpus": 8}}`), 201, "")
	if m["mac"] != mac || m["state"] != "discovered" {
		t.Fatalf("created %v", m)
	}
	expect(t, e.req("POST", "/v1/machines", e.admin, `{"mac": "aa:bb:cc:dd:ee:01"}`), 409, "conflict")
	expect(t, e.req("POST", "/v1/machines", e.admin, `{"mac": "nope"}`), 400, "bad_request")
	m = expect(t, e.req("POST", "/v1/machines", e.admin, `{"mac": "aa:bb:cc:dd:ee:09", "colour": "red"}`), 400, "bad_request")
	if p := paths(m); len(p) != 1 || p[0] != "colour" {
		t.Errorf("unknown field paths: %v", p)
	}
	expect(t, e.req("POST", "/v1/machines", e.admin, `{"mac": "aa:bb:cc:dd:ee:09", "facts": [1]}`), 400, "bad_request")
	expect(t, e.req("POST", "/v1/machines", e.admin, `{"mac": `), 400, "bad_request")
	expect(t, e.req("POST", "/v1/machines", e.admin, `{"mac": "aa:bb:cc:dd:ee:02"}`), 201, "")
	expect(t, e.req("POST", "/v1/machines", e.admin, `{"mac": "aa:bb:cc:dd:ee:03"}`), 201, "")

	// The state machine, through the API: the database's refusals are 409 with its reason.
	m = expect(t, e.req("POST", "/v1/machines/"+mac+"/transition", e.admin, `{"state": "installing"}`), 409, "conflict")
	if !strings.Contains(m["message"].(string), "must be assigned") {
		t.Errorf("install unassigned: %v", m["message"])
	}
	expect(t, e.req("POST", "/v1/machines/"+mac+"/assign", e.admin, `{"cluster": "dev"}`), 400, "bad_request")
	expect(t, e.req("POST", "/v1/machines/"+mac+"/assign", e.admin, `{"cluster": "dev", "member": "ghost"}`), 422, "invalid_config")
	r := e.req("POST", "/v1/machines/"+mac+"/assign", e.admin, `{"cluster": "dev", "member": "server", "reason": "rack 1"}`)
	m = expect(t, r, 200, "")
	if m["member"] != "server" {
		t.Fatalf("assign: %v", m)
	}
	expect(t, e.req("POST", "/v1/machines/aa:bb:cc:dd:ee:02/assign", e.admin, `{"cluster": "dev", "member": "server"}`), 409, "conflict")
	expect(t, e.req("POST", "/v1/machines/"+mac+"/lock", e.admin, `{"reason": "production"}`), 200, "")
	m = expect(t, e.req("POST", "/v1/machines/"+mac+"/transition", e.admin, `{"state": "installing"}`), 409, "conflict")
	if !strings.Contains(m["message"].(string), "locked") {
		t.Errorf("install locked: %v", m["message"])
	}
	expect(t, e.req("DELETE", "/v1/machines/"+mac, e.admin, nil), 409, "conflict")
	r = e.req("POST", "/v1/machines/"+mac+"/unlock", e.admin, nil)
	expect(t, r, 200, "")
	expect(t, e.req("POST", "/v1/machines/"+mac+"/transition", e.admin, `{"state": "installing", "version": 1}`), 409, "conflict")
	expect(t, e.req("POST", "/v1/machines/"+mac+"/transition", e.admin, `{"state": "installing"}`, "If-Match: "+r.header.Get("ETag")), 200, "")
	m = expect(t, e.req("POST", "/v1/machines/"+mac+"/transition", e.admin, `{"state": "ready"}`), 409, "conflict")
	if !strings.Contains(m["message"].(string), "no transition from installing to ready") {
		t.Errorf("skip joined: %v", m["message"])
	}
	expect(t, e.req("POST", "/v1/machines/"+mac+"/transition", e.admin, `{"state": "joined"}`), 200, "")
	expect(t, e.req("POST", "/v1/machines/"+mac+"/transition", e.admin, `{"state": "flying"}`), 409, "conflict")
	expect(t, e.req("POST", "/v1/machines/"+mac+"/transition", e.admin, `{}`), 400, "bad_request")
	expect(t, e.req("POST", "/v1/machines/"+mac+"/unassign", e.admin, nil), 409, "conflict")
	expect(t, e.req("DELETE", "/v1/machines/"+mac, e.admin, nil), 409, "conflict") // joined is in progress

	// A member with a machine in use cannot be deleted (the database refuses; the core has no objection).
	expect(t, e.req("PUT", "/v1/clusters/dev/members/server2", e.admin, `{"node": "standard", "role": "server", "ip": "192.168.1.11"}`), 201, "")
	expect(t, e.req("DELETE", "/v1/clusters/dev/members/server", e.admin, nil), 409, "conflict")

	// list, filters, pagination
	m = expect(t, e.req("GET", "/v1/machines?state=joined", e.read, nil), 200, "")
	if items := m["items"].([]any); len(items) != 1 || items[0].(map[string]any)["mac"] != mac {
		t.Fatalf("state filter: %v", items)
	}
	m = expect(t, e.req("GET", "/v1/machines?cluster=dev", e.read, nil), 200, "")
	if n := len(m["items"].([]any)); n != 1 {
		t.Fatalf("cluster filter: %d", n)
	}
	m = expect(t, e.req("GET", "/v1/machines?unassigned=true", e.read, nil), 200, "")
	if n := len(m["items"].([]any)); n != 2 {
		t.Fatalf("unassigned filter: %d", n)
	}
	m = expect(t, e.req("GET", "/v1/machines?limit=2", e.read, nil), 200, "")
	if m["next"] != "aa:bb:cc:dd:ee:02" || len(m["items"].([]any)) != 2 {
		t.Fatalf("page 1: %v", m)
	}
	m = expect(t, e.req("GET", "/v1/machines?limit=2&after=aa:bb:cc:dd:ee:02", e.read, nil), 200, "")
	if _, more := m["next"]; more || len(m["items"].([]any)) != 1 {
		t.Fatalf("page 2: %v", m)
	}
	expect(t, e.req("GET", "/v1/machines?state=flying", e.read, nil), 400, "bad_request")
	expect(t, e.req("GET", "/v1/machines?unassigned=maybe", e.read, nil), 400, "bad_request")
	expect(t, e.req("GET", "/v1/machines/zz", e.read, nil), 400, "bad_request")
	expect(t, e.req("GET", "/v1/machines/aa:bb:cc:dd:ee:99", e.read, nil), 404, "not_found")
	m = expect(t, e.req("GET", "/v1/machine-states", e.read, nil), 200, "")
	if n := len(m["items"].([]any)); n != 10 {
		t.Fatalf("%d states", n)
	}

	// events
	m = expect(t, e.req("GET", "/v1/machines/"+mac+"/events", e.read, nil), 200, "")
	var kinds []string
	for _, it := range m["items"].([]any) {
		ev := it.(map[string]any)
		kinds = append(kinds, fmt.Sprintf("%s:%v", ev["kind"], ev["newState"]))
		if !strings.HasPrefix(ev["actor"].(string), "api:token/1(admin)") {
			t.Errorf("actor %v", ev["actor"])
		}
	}
	want := "created:discovered assigned:discovered locked:discovered unlocked:discovered state:installing state:joined"
	if strings.Join(kinds, " ") != want {
		t.Fatalf("events: %s\nwant:   %s", strings.Join(kinds, " "), want)
	}
	m = expect(t, e.req("GET", "/v1/machines/"+mac+"/events?limit=2", e.read, nil), 200, "")
	if m["next"] == nil {
		t.Error("events: no next page")
	}
	expect(t, e.req("GET", "/v1/machines/aa:bb:cc:dd:ee:99/events", e.read, nil), 404, "not_found")

	// forget
	expect(t, e.req("DELETE", "/v1/machines/aa:bb:cc:dd:ee:03", e.admin, nil), 204, "")
	expect(t, e.req("GET", "/v1/machines/aa:bb:cc:dd:ee:03", e.read, nil), 404, "not_found")
	expect(t, e.req("DELETE", "/v1/machines/aa:bb:cc:dd:ee:03", e.admin, nil), 404, "not_found")
}

// POST /v1/machines/{mac}/reinstall arms a network install: only for an assigned machine, not while it is
// installing, with If-Match honoured; the read token may not.
func TestReinstall(t *testing.T) {
	e := newEnv(t)
	expect(t, e.putConfigYAML(readFile(t, "testdata/config.yaml")), 200, "")
	mac := "aa:bb:cc:dd:ee:01"
	expect(t, e.req("POST", "/v1/machines", e.admin, `{"mac": "`+mac+`"}`), 201, "")
	m := expect(t, e.req("POST", "/v1/machines/"+mac+"/reinstall", e.admin, nil), 409, "conflict")
	if !strings.Contains(m["message"].(string), "must be assigned") {
		t.Errorf("unassigned: %v", m["message"])
	}
	expect(t, e.req("POST", "/v1/machines/"+mac+"/assign", e.admin, `{"cluster": "dev", "member": "server"}`), 200, "")
	expect(t, e.req("POST", "/v1/machines/"+mac+"/reinstall", e.read, nil), 403, "forbidden")
	expect(t, e.req("POST", "/v1/machines/"+mac+"/reinstall", e.admin, `{}`, "If-Match: \"1\""), 409, "conflict")
	expect(t, e.req("POST", "/v1/machines/"+mac+"/reinstall", e.admin, `{"colour": 1}`), 400, "bad_request")
	r := e.req("POST", "/v1/machines/"+mac+"/reinstall", e.admin, `{"reason": "new disk"}`)
	m = expect(t, r, 200, "")
	if m["state"] != "installing" || m["installArmed"] != true || m["installGeneration"] != json.Number("1") || r.header.Get("ETag") == "" {
		t.Fatalf("armed: %v", m)
	}
	m = expect(t, e.req("POST", "/v1/machines/"+mac+"/reinstall", e.admin, nil), 409, "conflict")
	if !strings.Contains(m["message"].(string), "already installing") {
		t.Errorf("twice: %v", m["message"])
	}
	for _, to := range []string{"joined", "ready"} {
		expect(t, e.req("POST", "/v1/machines/"+mac+"/transition", e.admin, `{"state": "`+to+`"}`), 200, "")
	}
	m = expect(t, e.req("POST", "/v1/machines/"+mac+"/reinstall", e.admin, nil), 200, "")
	if m["installGeneration"] != json.Number("2") {
		t.Fatalf("re-armed from ready: %v", m)
	}
	m = expect(t, e.req("GET", "/v1/machines/"+mac+"/events", e.read, nil), 200, "")
	var armed []string
	for _, it := range m["items"].([]any) {
		if ev := it.(map[string]any); ev["kind"] == "armed" {
			armed = append(armed, fmt.Sprintf("%v:%v", ev["reason"], ev["details"].(map[string]any)["generation"]))
		}
	}
	if got := strings.Join(armed, ","); got != "new disk:1,reinstall requested:2" {
		t.Fatalf("armed events: %s", got)
	}
	expect(t, e.req("POST", "/v1/machines/aa:bb:cc:dd:ee:99/reinstall", e.admin, nil), 404, "not_found")
}

func TestPlan(t *testing.T) {
	e := newEnv(t)
	expect(t, e.putConfigYAML(readFile(t, "../../examples/ha/config.yaml")), 200, "")
	m := expect(t, e.req("GET", "/v1/clusters/prod/plan", e.read, nil), 200, "")
	if m["firstServer"] != "server1" || m["apiEndpoint"] != "https://192.168.1.100:6443" {
		t.Fatalf("plan: %v %v", m["firstServer"], m["apiEndpoint"])
	}
	expect(t, e.req("GET", "/v1/clusters/nope/plan", e.read, nil), 404, "not_found")
}

func TestJobs(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		e.st.NewJob(ctx, "noop", nil, nil, nil)
	}
	j, _ := e.st.ClaimJob(ctx, "w")
	e.st.AppendJobLog(ctx, j.ID, "step 1\n")
	e.st.FinishJob(ctx, j.ID, "failed", "boom")
	m := expect(t, e.req("GET", "/v1/jobs", e.read, nil), 200, "")
	if n := len(m["items"].([]any)); n != 3 {
		t.Fatalf("%d jobs", n)
	}
	m = expect(t, e.req("GET", "/v1/jobs?status=failed", e.read, nil), 200, "")
	if n := len(m["items"].([]any)); n != 1 {
		t.Fatalf("%d failed jobs", n)
	}
	m = expect(t, e.req("GET", "/v1/jobs?limit=2", e.read, nil), 200, "")
	if m["next"] != "2" {
		t.Fatalf("jobs page: %v", m["next"])
	}
	m = expect(t, e.req("GET", fmt.Sprintf("/v1/jobs/%d", j.ID), e.read, nil), 200, "")
	if m["log"] != "step 1\n" || m["error"] != "boom" || m["status"] != "failed" {
		t.Fatalf("job: %v", m)
	}
	expect(t, e.req("GET", "/v1/jobs/999", e.read, nil), 404, "not_found")
	expect(t, e.req("GET", "/v1/jobs/x", e.read, nil), 400, "bad_request")
	expect(t, e.req("GET", "/v1/jobs?status=weird", e.read, nil), 400, "bad_request")
}

func TestMetricsAfterActivity(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	expect(t, e.putConfigYAML(readFile(t, "testdata/config.yaml")), 200, "")
	expect(t, e.req("POST", "/v1/machines", e.admin, `{"mac": "aa:bb:cc:dd:ee:01"}`), 201, "")
	expect(t, e.req("POST", "/v1/machines/aa:bb:cc:dd:ee:01/assign", e.admin, `{"cluster": "dev", "member": "server"}`), 200, "")
	expect(t, e.req("POST", "/v1/machines/aa:bb:cc:dd:ee:01/transition", e.admin, `{"state": "installing"}`), 200, "")
	expect(t, e.req("POST", "/v1/machines/aa:bb:cc:dd:ee:01/transition", e.admin, `{"state": "install_failed"}`), 200, "")
	expect(t, e.req("GET", "/v1/config", "", nil), 401, "unauthorized")
	j, _ := e.st.NewJob(ctx, "noop", nil, nil, nil)
	e.st.ClaimJob(ctx, "w")
	e.st.FinishJob(ctx, j.ID, "failed", "x")

	r := e.req("GET", "/metrics", "", nil)
	body := string(r.body)
	for _, want := range []string{
		`nix8s_machines{cluster="dev",state="install_failed"} 1`,
		`nix8s_machine_state_duration_seconds_count{state="installing",to="install_failed"} 1`,
		`nix8s_machine_failures_total{cause="operator",state="install_failed"} 1`,
		`nix8s_machine_state_duration_seconds_count{state="discovered",to="installing"} 1`,
		`nix8s_machine_transitions_total{from="discovered",to="installing"} 1`,
		`nix8s_api_requests_total{code="200",method="PUT",route="/v1/config"} 1`,
		`nix8s_api_requests_total{code="401",method="GET",route="/v1/config"} 1`,
		`nix8s_api_request_duration_seconds_bucket{method="POST",route="/v1/machines/{mac}/transition"`,
		`nix8s_job_duration_seconds_count{kind="noop",status="failed"} 1`,
		`nix8s_job_failures_total{kind="noop"} 1`,
		`nix8s_jobs{kind="noop",status="failed"} 1`,
		`nix8s_database_up 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestBodyLimits(t *testing.T) {
	e := newEnv(t, func(_ *env, o *Options) { o.MaxBody = 100 })
	big := `{"nodes": {"a": {"x": "` + strings.Repeat("y", 200) + `"}}}`
	expect(t, e.req("PUT", "/v1/config", e.admin, big), 413, "bad_request")
}

// Only the wrapper of the core is faked here: a core that fails to evaluate (say nix is broken) must not store
// anything and must not pass for a config error.
type brokenCore struct{}

func (brokenCore) Validate(context.Context, any) (core.Report, error) {
	return core.Report{}, fmt.Errorf("nix-instantiate: killed")
}
func (brokenCore) Plan(context.Context, any) (*core.Planned, error) {
	return nil, fmt.Errorf("nix-instantiate: killed")
}
func (brokenCore) PlanStored(context.Context, any) (*core.Planned, error) {
	return nil, fmt.Errorf("nix-instantiate: killed")
}

func TestBrokenCoreIsAServerError(t *testing.T) {
	e := newEnv(t, func(e *env, o *Options) {
		o.Inventory = inventory.New(inventory.Options{Store: e.st, Core: brokenCore{}})
	})
	expect(t, e.putConfigYAML(readFile(t, "testdata/config.yaml")), 500, "internal")
	m := expect(t, e.req("GET", "/v1/config", e.read, nil), 200, "")
	if len(m) != 0 {
		t.Fatalf("stored despite the core failing: %v", m)
	}
}
