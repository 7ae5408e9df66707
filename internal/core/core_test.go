package core

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/nix8s/nix8s"
)

// requireNix returns the nix-instantiate to test against. Without it the test is skipped, except on CI
// (CI=true), where a missing Nix must fail the build rather than silently skip the eval tests.
func requireNix(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("nix-instantiate")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("nix-instantiate is not on PATH, and CI=true requires it; install it with: apt-get install nix-bin")
		}
		t.Skip("nix-instantiate is not on PATH (apt-get install nix-bin); skipping")
	}
	return p
}

func newEvaluator(t *testing.T) *Evaluator {
	t.Helper()
	requireNix(t)
	e, err := New(Options{Lib: nix8s.Lib, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// minimal is design 5.1's data, the smallest config that plans.
const minimal = `{
  "nodes": {"standard": {"network": {"mac": "aa:bb:cc:dd:ee:01"}, "install": {"disk": "/dev/sda"}}},
  "clusters": {"dev": {"k3s": {"version": "v1.31.0+k3s1"}, "members": {
    "server": {"node": "standard", "role": "server", "ip": "192.168.1.10"},
    "agent": {"node": "standard", "role": "agent", "ip": "192.168.1.20", "network": {"mac": "aa:bb:cc:dd:ee:02"}}}}}
}`

func TestValidate(t *testing.T) {
	e := newEvaluator(t)
	tests := []struct {
		name      string
		cfg       string
		wantPaths []string // error paths, in the core's order
	}{
		{"minimal config is valid", minimal, nil},
		{"unknown node and bad role are both reported",
			`{"nodes": {"a": {}}, "clusters": {"c": {"members": {"s": {"node": "nope", "role": "boss", "ip": "10.0.0.1"}}}}}`,
			[]string{"clusters.c.members", "clusters.c.members.s.node", "clusters.c.members.s.role"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := e.Validate(context.Background(), json.RawMessage(tt.cfg))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range r.Errors {
				got = append(got, p.Path)
			}
			if strings.Join(got, " ") != strings.Join(tt.wantPaths, " ") {
				t.Errorf("error paths = %q, want %q (report %+v)", got, tt.wantPaths, r)
			}
			if r.Errors == nil || r.Warnings == nil {
				t.Errorf("report lists must be non-nil so that they encode as []")
			}
		})
	}
}

func TestPlan(t *testing.T) {
	e := newEvaluator(t)
	p, err := e.Plan(context.Background(), json.RawMessage(minimal))
	if err != nil {
		t.Fatal(err)
	}
	c, ok := p.Plan.Clusters["dev"]
	if !ok {
		t.Fatalf("no cluster dev in %s", p.JSON)
	}
	if c.FirstServer != "server" || c.APIEndpoint != "https://192.168.1.10:6443" {
		t.Errorf("firstServer %q, apiEndpoint %q", c.FirstServer, c.APIEndpoint)
	}
	if got := c.Members["agent"]; got.HostName != "dev-agent" || got.K3s.ServerAddr == nil || *got.K3s.ServerAddr != c.APIEndpoint {
		t.Errorf("agent = %+v", got)
	}
	if !c.Members["server"].K3s.ClusterInit {
		t.Errorf("the first server must initialise the cluster")
	}
	var raw map[string]any
	if err := json.Unmarshal(p.JSON, &raw); err != nil || raw["clusters"] == nil {
		t.Errorf("raw plan JSON %s: %v", p.JSON, err)
	}
	// The typed view must cover every field the core emits, or the daemon silently loses it.
	dec := json.NewDecoder(bytes.NewReader(p.JSON))
	dec.DisallowUnknownFields()
	var strict Plan
	if err := dec.Decode(&strict); err != nil {
		t.Errorf("the core's plan has a field the Go types lack: %v", err)
	}
}

func TestPlanInvalid(t *testing.T) {
	e := newEvaluator(t)
	_, err := e.Plan(context.Background(), map[string]any{
		"clusters": map[string]any{"c": map[string]any{"members": map[string]any{
			"a": map[string]any{"role": "agent", "ip": "10.0.0.300"}}}}})
	var inv *InvalidError
	if !errors.As(err, &inv) {
		t.Fatalf("Plan error = %v, want *InvalidError", err)
	}
	paths := map[string]bool{}
	for _, p := range inv.Report.Errors {
		paths[p.Path] = true
	}
	for _, want := range []string{"clusters.c.members.a.ip", "clusters.c.members"} {
		if !paths[want] {
			t.Errorf("no error at %s in %+v", want, inv.Report.Errors)
		}
	}
}

// PlanStored is Plan with the daemon's stricter rules: a secret value that Plan only warns about is an error
// with its path and the fix; a config without one plans exactly as with Plan.
func TestPlanStored(t *testing.T) {
	e := newEvaluator(t)
	ctx := context.Background()
	secret := strings.Replace(minimal, `"dev": {`, `"dev": {"secrets": {"agentToken": "hunter2"}, `, 1)
	p, err := e.Plan(ctx, json.RawMessage(secret))
	if err != nil || len(p.Warnings) != 1 || p.Warnings[0].Path != "clusters.dev.secrets.agentToken" {
		t.Fatalf("Plan of a config with a secret value: %v, %+v; want a plan and the warning", err, p)
	}
	_, err = e.PlanStored(ctx, json.RawMessage(secret))
	var inv *InvalidError
	if !errors.As(err, &inv) || len(inv.Report.Errors) != 1 || len(inv.Report.Warnings) != 0 {
		t.Fatalf("PlanStored error = %v, want an *InvalidError with one error and no warning", err)
	}
	if got := inv.Report.Errors[0]; got.Path != "clusters.dev.secrets.agentToken" ||
		!strings.HasPrefix(got.Message, "nix8sd does not store secret values") ||
		!strings.Contains(got.Message, "set secrets.agentTokenFile to its path") {
		t.Errorf("PlanStored error = %+v", got)
	}
	stored, err := e.PlanStored(ctx, json.RawMessage(minimal))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := e.Plan(ctx, json.RawMessage(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stored.JSON, plain.JSON) {
		t.Errorf("PlanStored's plan differs from Plan's:\n%s\n%s", stored.JSON, plain.JSON)
	}
}

// pxeConfig is minimal served by a PXE server on its network, with a second cluster that has no MACs.
const pxeConfig = `{
  "nodes": {"standard": {"network": {"mac": "AA:BB:CC:DD:EE:01"}, "install": {"disk": "/dev/sda"}},
            "bare": {"install": {"disk": "/dev/sda"}}},
  "clusters": {
    "dev": {"members": {
      "server": {"node": "standard", "role": "server", "ip": "192.168.1.10"},
      "agent": {"node": "standard", "role": "agent", "ip": "192.168.1.20", "network": {"mac": "aa:bb:cc:dd:ee:02"}}}},
    "lab": {"members": {"s": {"node": "bare", "role": "server", "ip": "192.168.1.30"}}}},
  "provisioning": {"pxe": {"server": {"ip": "192.168.1.1", "dhcp": {"subnet": "192.168.1.0/24"}}}}
}`

func TestPXE(t *testing.T) {
	e := newEvaluator(t)
	p, err := e.PXE(context.Background(), json.RawMessage(pxeConfig), []string{"dev"})
	if err != nil {
		t.Fatal(err)
	}
	want := []PXEMachine{
		{MAC: "aa:bb:cc:dd:ee:01", Cluster: "dev", Member: "server", HostName: "dev-server", Role: "server", IP: "192.168.1.10", Wave: 0},
		{MAC: "aa:bb:cc:dd:ee:02", Cluster: "dev", Member: "agent", HostName: "dev-agent", Role: "agent", IP: "192.168.1.20", Wave: 1},
	}
	if !reflect.DeepEqual(p.Machines, want) {
		t.Errorf("machines = %+v, want %+v", p.Machines, want)
	}
	if p.Server.Mode != "proxy" || p.Server.IP == nil || *p.Server.IP != "192.168.1.1" || p.Server.Interface != nil || p.Server.Gateway != nil {
		t.Errorf("server = %+v, want proxy mode from 192.168.1.1, no interface, no gateway", p.Server)
	}
	if p.Errors == nil || p.Warnings == nil {
		t.Errorf("report lists must be non-nil so that they encode as []")
	}
	// The typed view must cover every field the core emits.
	out, err := e.Eval(context.Background(), json.RawMessage(pxeConfig), `core.pxe cfg [ "dev" ]`)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	var strict PXEPlan
	if err := dec.Decode(&strict); err != nil {
		t.Errorf("the core's PXE view has a field the Go types lack: %v", err)
	}
}

func TestPXEInvalid(t *testing.T) {
	e := newEvaluator(t)
	tests := []struct {
		name      string
		clusters  []string
		wantPaths []string // in the core's order
	}{
		{"a cluster that does not exist, named with characters Nix strings escape", []string{"dev", `x"${y}\`},
			[]string{`clusters."x\"${y}\\"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.PXE(context.Background(), json.RawMessage(pxeConfig), tt.clusters)
			var inv *InvalidError
			if !errors.As(err, &inv) {
				t.Fatalf("PXE error = %v, want *InvalidError", err)
			}
			var got []string
			for _, p := range inv.Report.Errors {
				got = append(got, p.Path)
			}
			if strings.Join(got, " ") != strings.Join(tt.wantPaths, " ") {
				t.Errorf("error paths = %q, want %q (report %+v)", got, tt.wantPaths, inv.Report)
			}
		})
	}
}

// A served member without a MAC is not an error (a discovered machine may be assigned to it) but comes back
// as unmatched, with its path.
func TestPXEUnmatched(t *testing.T) {
	e := newEvaluator(t)
	p, err := e.PXE(context.Background(), json.RawMessage(pxeConfig), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Unmatched) != 1 || p.Unmatched[0].Path != "clusters.lab.members.s.network.mac" || !strings.Contains(p.Unmatched[0].Message, "assign a discovered machine") {
		t.Fatalf("unmatched: %+v", p.Unmatched)
	}
}

func TestSchema(t *testing.T) {
	e := newEvaluator(t)
	s, err := e.Schema(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(s, &v); err != nil || v["$schema"] == nil {
		t.Errorf("schema %.200s: %v", s, err)
	}
}

func TestEvalError(t *testing.T) {
	e := newEvaluator(t)
	_, err := e.Eval(context.Background(), nil, `throw "nix8s: clusters.x: broken\n  second line"`)
	var ee *EvalError
	if !errors.As(err, &ee) {
		t.Fatalf("error = %v, want *EvalError", err)
	}
	if want := "clusters.x: broken\n  second line"; ee.Message != want {
		t.Errorf("message = %q, want %q", ee.Message, want)
	}
}

func TestTimeout(t *testing.T) {
	requireNix(t)
	e, err := New(Options{Lib: nix8s.Lib, CacheDir: t.TempDir(), Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.Eval(context.Background(), nil, `builtins.foldl' builtins.add 0 (builtins.genList (x: x) 200000000)`)
	if err == nil || !strings.Contains(err.Error(), "timed out after 300ms") {
		t.Errorf("error = %v, want a timeout", err)
	}
}

// TestTimeoutStopsNix: an evaluation that outlives its timeout is stopped, not waited for. The nix-instantiate
// is a stand-in that would run for an hour (a real evaluation that long would first exhaust the machine's
// memory), so Eval returning at all proves the process was killed; no clock is read.
func TestTimeoutStopsNix(t *testing.T) {
	nix := filepath.Join(t.TempDir(), "nix-instantiate")
	if err := os.WriteFile(nix, []byte("#!/bin/sh\nexec sleep 3600\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	e, err := New(Options{Lib: nix8s.Lib, CacheDir: t.TempDir(), NixInstantiate: nix, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Eval(context.Background(), nil, "1"); err == nil || !strings.Contains(err.Error(), "timed out after 300ms") {
		t.Errorf("error = %v, want a timeout", err)
	}
}

func TestMissingNix(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := New(Options{Lib: nix8s.Lib, CacheDir: t.TempDir()})
	var h *HintError
	if !errors.As(err, &h) || !strings.Contains(h.Hint, "apt-get install nix-bin") {
		t.Errorf("New without nix = %v, want a hint to install nix-bin", err)
	}
}

func TestLibDirOverride(t *testing.T) {
	nix := requireNix(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "default.nix"), []byte(`{ schema = { dev = true; }; }`), 0o644)
	e, err := New(Options{LibDir: dir, NixInstantiate: nix})
	if err != nil {
		t.Fatal(err)
	}
	s, err := e.Schema(context.Background())
	if err != nil || string(s) != `{"dev":true}` {
		t.Errorf("Schema with --lib = %s, %v", s, err)
	}
	if _, err := New(Options{LibDir: t.TempDir(), NixInstantiate: nix}); err == nil || !strings.Contains(err.Error(), "has no default.nix") {
		t.Errorf("New with an empty lib dir = %v", err)
	}
}

// Concurrent processes (here goroutines) materialising the same lib agree on one complete directory.
func TestMaterialiseConcurrent(t *testing.T) {
	lib := fstest.MapFS{
		"default.nix": {Data: []byte(`import ./sub/x.nix`)},
		"sub/x.nix":   {Data: []byte(`{ x = 1; }`)},
	}
	cache := t.TempDir()
	dirs := make([]string, 16)
	errs := make([]error, 16)
	var wg sync.WaitGroup
	for i := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dirs[i], errs[i] = materialise(lib, cache)
		}()
	}
	wg.Wait()
	for i := range dirs {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if dirs[i] != dirs[0] {
			t.Errorf("materialise returned %s and %s", dirs[0], dirs[i])
		}
	}
	if b, err := os.ReadFile(filepath.Join(dirs[0], "sub", "x.nix")); err != nil || string(b) != `{ x = 1; }` {
		t.Errorf("materialised sub/x.nix = %q, %v", b, err)
	}
	entries, _ := os.ReadDir(cache)
	if len(entries) != 1 {
		t.Errorf("cache holds %d entries, want only the lib (temporary copies removed)", len(entries))
	}
	// Different content, different directory.
	lib["sub/x.nix"] = &fstest.MapFile{Data: []byte(`{ x = 2; }`)}
	other, err := materialise(lib, cache)
	if err != nil || other == dirs[0] {
		t.Errorf("changed lib materialised to %s (%v), same as before", other, err)
	}
}

func TestNixMessage(t *testing.T) {
	tests := []struct {
		name, stderr, want string
	}{
		{"throw from the core",
			"error: nix8s: the config has 1 error:\n         - a: b\n(use '--show-trace' to show detailed location information)\n",
			"the config has 1 error:\n  - a: b"},
		{"position in the lib is kept, relative to lib/",
			"error: attribute 'x' missing\n\n       at /cache/lib-1/plan.nix:3:5:\n\n            2| \n            3|   a.x\n             |     ^\n",
			"attribute 'x' missing\n\nat lib/plan.nix:3:5"},
		{"position in the wrapper expression is dropped",
			"error: assertion 'false' failed\n\n       at «string»:1:14:\n\n            1| x\n",
			"assertion 'false' failed"},
		{"abort", "error: evaluation aborted with the following error message: 'boom'\n", "boom"},
		{"trace lines before the error are skipped", "trace: hello\nerror: bad\n", "bad"},
		{"no error line", "something odd\n", "something odd"},
		{"nothing at all", "", "nix-instantiate failed without a message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nixMessage(tt.stderr, "/cache/lib-1"); got != tt.want {
				t.Errorf("nixMessage:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// A relative cache directory (nix8sd --state-dir st) still gives Nix the absolute lib path it requires.
func TestRelativeCacheDir(t *testing.T) {
	requireNix(t)
	t.Chdir(t.TempDir())
	e, err := New(Options{Lib: nix8s.Lib, CacheDir: filepath.Join("st", "cache")})
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(e.LibDir()) {
		t.Errorf("LibDir = %q, want an absolute path", e.LibDir())
	}
	var cfg map[string]any
	json.Unmarshal([]byte(minimal), &cfg)
	if _, err := e.Plan(context.Background(), cfg); err != nil {
		t.Errorf("planning with a relative cache directory: %v", err)
	}
}
