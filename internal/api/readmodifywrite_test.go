package api

import (
	"encoding/json"
	"testing"
)

// Two clients read the whole config, each adds a node, each PUTs the whole config back. Without If-Match the
// second PUT replaces the first's addition (each sends a whole config: that is what PUT /v1/config means); with
// If-Match the second writer gets 409, reads again and both additions land. docs/daemon.md says so.
func TestWholeConfigReadModifyWrite(t *testing.T) {
	e := newEnv(t)
	expect(t, e.putConfigYAML(readFile(t, "testdata/config.yaml")), 200, "")
	read := func() (map[string]any, string) {
		t.Helper()
		r := e.req("GET", "/v1/config", e.read, nil)
		expect(t, r, 200, "")
		var cfg map[string]any
		if err := json.Unmarshal(r.body, &cfg); err != nil {
			t.Fatal(err)
		}
		return cfg, r.header.Get("ETag")
	}
	withNode := func(cfg map[string]any, name string) map[string]any {
		cfg["nodes"].(map[string]any)[name] = map[string]any{"install": map[string]any{"disk": "/dev/sdb"}}
		return cfg
	}
	nodes := func() map[string]any {
		cfg, _ := read()
		return cfg["nodes"].(map[string]any)
	}

	t.Run("without If-Match the last whole config wins", func(t *testing.T) {
		a, _ := read()
		b, _ := read()
		expect(t, e.req("PUT", "/v1/config", e.admin, withNode(a, "from-a")), 200, "")
		expect(t, e.req("PUT", "/v1/config", e.admin, withNode(b, "from-b")), 200, "")
		got := nodes()
		if _, ok := got["from-a"]; ok {
			t.Fatalf("the first writer's node survived a whole-config PUT that did not hold it: %v", got)
		}
		if _, ok := got["from-b"]; !ok {
			t.Fatalf("the second writer's node is missing: %v", got)
		}
	})

	t.Run("with If-Match the second writer gets 409 and retries", func(t *testing.T) {
		a, etagA := read()
		b, etagB := read()
		if etagA != etagB || etagA == "" {
			t.Fatalf("two reads of one version: ETags %q %q", etagA, etagB)
		}
		expect(t, e.req("PUT", "/v1/config", e.admin, withNode(a, "from-c"), "If-Match: "+etagA), 200, "")
		expect(t, e.req("PUT", "/v1/config", e.admin, withNode(b, "from-d"), "If-Match: "+etagB), 409, "conflict")
		if _, ok := nodes()["from-d"]; ok {
			t.Fatal("the refused write was stored")
		}
		b, etagB = read()
		expect(t, e.req("PUT", "/v1/config", e.admin, withNode(b, "from-d"), "If-Match: "+etagB), 200, "")
		got := nodes()
		for _, n := range []string{"from-c", "from-d"} {
			if _, ok := got[n]; !ok {
				t.Errorf("node %s lost: %v", n, got)
			}
		}
	})
}
