package api

import (
	"strings"
	"testing"
)

// The limits of core.DecodeAt answered over HTTP: 400 with the value's path in the config, before the core
// evaluates anything; and a refused object leaves the stored config writable.
func TestDecodeLimitsOverHTTP(t *testing.T) {
	e := newEnv(t)
	yaml := func(path, body string) resp {
		return e.req("PUT", path, e.admin, body, "Content-Type: application/yaml")
	}
	deepPath := "nodes.x.a" + strings.Repeat(`."0"`, 62)
	tests := []struct {
		name, method, path, body, yaml string
		wantPath                       string
		wantMsg                        string
	}{
		{name: "config nested 9,000 deep (18 KB)", path: "/v1/config", yaml: "nodes:\n  x:\n    a: " + strings.Repeat("[", 9000) + strings.Repeat("]", 9000) + "\n",
			wantPath: deepPath, wantMsg: "nested deeper than 64 levels"},
		{name: "node nested 9,998 deep", path: "/v1/nodes/x", yaml: "a: " + strings.Repeat("[", 9998) + strings.Repeat("]", 9998) + "\n",
			wantPath: deepPath, wantMsg: "nested deeper than 64 levels"},
		{name: "NUL in a JSON string", path: "/v1/nodes/x", body: `{"install": {"disk": "/dev/sda\u0000"}}`,
			wantPath: "nodes.x.install.disk", wantMsg: "contains a NUL character"},
		{name: "NUL in a key", path: "/v1/clusters/c/members/m", body: `{"a\u0000": 1}`,
			wantPath: "clusters.c.members.m", wantMsg: "contains a NUL character"},
		{name: "invalid UTF-8 in a JSON body", path: "/v1/config", body: "{\"nodes\": {\"x\": {\"y\": \"\xff\"}}}",
			wantMsg: "not UTF-8"},
		{name: "integer past 64 bits", path: "/v1/nodes/x", body: `{"n": 9223372036854775808}`,
			wantPath: "nodes.x.n", wantMsg: "beyond the 64-bit integers"},
		{name: "NUL in a machine body", method: "POST", path: "/v1/machines", body: `{"mac": "52:54:00:00:00:01\u0000"}`,
			wantPath: "mac", wantMsg: "contains a NUL character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r resp
			method := tt.method
			if method == "" {
				method = "PUT"
			}
			if tt.yaml != "" {
				r = yaml(tt.path, tt.yaml)
			} else {
				r = e.req(method, tt.path, e.admin, tt.body)
			}
			m := expect(t, r, 400, "bad_request")
			if msg, _ := m["message"].(string); !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("message %q does not say %q", msg, tt.wantMsg)
			}
			if tt.wantPath != "" {
				if p := paths(m); len(p) != 1 || p[0] != tt.wantPath {
					t.Errorf("details paths %q, want [%s]", p, tt.wantPath)
				}
			}
		})
	}

	// After a refused deep node, node writes and the YAML read still work (they answered 500 when a node
	// nested 9,998 deep had been stored).
	yaml("/v1/nodes/x", "a: "+strings.Repeat("[", 9998)+strings.Repeat("]", 9998)+"\n")
	expect(t, e.req("PUT", "/v1/nodes/y", e.admin, `{"install": {"disk": "/dev/sda"}}`), 201, "")
	r := e.req("GET", "/v1/config", e.read, nil, "Accept: application/yaml")
	if r.status != 200 || !strings.Contains(string(r.body), "/dev/sda") {
		t.Fatalf("GET /v1/config as YAML: %d %s", r.status, r.body)
	}
}

// NUL and invalid UTF-8 in URL paths and queries answer 400 on every route, /boot and /machine/v1 included,
// instead of reaching PostgreSQL.
func TestBadTextInURL(t *testing.T) {
	e := newEnv(t)
	for _, tt := range []struct{ name, method, path, want string }{
		{"NUL in an object name", "GET", "/v1/nodes/a%00b", "contains a NUL character"},
		{"invalid UTF-8 in an object name", "PUT", "/v1/nodes/a%ffb", "is not valid UTF-8"},
		{"NUL in a MAC", "GET", "/v1/machines/52:54:00:00:00:01%00", "contains a NUL character"},
		{"invalid UTF-8 in a cursor", "GET", "/v1/nodes?after=%ff", "query parameter after"},
		{"NUL in a query name", "GET", "/v1/machines?a%00=1", "contains a NUL character"},
		{"NUL in a boot path", "GET", "/boot/a%00.ipxe", "contains a NUL character"},
		{"invalid UTF-8 in a machine report", "POST", "/machine/v1/discover?mac=%ff", "is not valid UTF-8"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := expect(t, e.req(tt.method, tt.path, e.admin, nil), 400, "bad_request")
			if msg, _ := m["message"].(string); !strings.Contains(msg, tt.want) {
				t.Errorf("message %q does not say %q", msg, tt.want)
			}
		})
	}
}
