package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nix8s/nix8s/internal/pgtest"
	"github.com/nix8s/nix8s/internal/store"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func runCmd(t *testing.T, ctx context.Context, vars map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(ctx, args, &out, &errb, env(vars))
	return code, out.String(), errb.String()
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no command", nil, 2, "Usage:"},
		{"unknown command", []string{"fly"}, 2, `unknown command "fly"`},
		{"token without create", []string{"token"}, 2, "token create"},
		{"token revoke without ID", []string{"token", "revoke"}, 2, "token's ID"},
		{"token with a bad scope", []string{"token", "create", "--scope", "root"}, 2, "--scope must be admin or read"},
		{"migrate direction", []string{"migrate", "sideways"}, 2, `migrate "sideways"`},
		{"bad log level", []string{"serve", "--log-level", "loud"}, 2, "--log-level"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCmd(t, context.Background(), nil, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.msg) {
				t.Fatalf("exit %d (want %d), stderr:\n%s", code, tc.code, stderr)
			}
		})
	}
}

func TestMigrateAndToken(t *testing.T) {
	ctx := context.Background()
	vars := map[string]string{"DATABASE_URL": pgtest.Database(t)}
	for _, args := range [][]string{{"migrate"}, {"migrate", "down-all"}, {"migrate", "up"}} {
		if code, _, stderr := runCmd(t, ctx, vars, args...); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
	}
	if code, out, _ := runCmd(t, ctx, vars, "migrate", "status"); code != 0 || out != "up to date\n" {
		t.Fatalf("status: %d %q", code, out)
	}
	code, out, stderr := runCmd(t, ctx, vars, "token", "create", "--scope", "read", "--name", "ci")
	if code != 0 || !strings.HasPrefix(out, store.TokenPrefix) || !strings.Contains(stderr, "only this once") {
		t.Fatalf("token create: %d %q %q", code, out, stderr)
	}
	st, err := store.Open(ctx, vars["DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	tok, err := st.LookupToken(ctx, strings.TrimSpace(out))
	if err != nil || tok.Scope != "read" {
		t.Fatalf("stored token: %+v %v", tok, err)
	}
	if code, out, _ := runCmd(t, ctx, vars, "token", "list"); code != 0 || !strings.Contains(out, "ci") || !strings.Contains(out, "read") {
		t.Fatalf("token list: %d\n%s", code, out)
	}
	if code, _, stderr := runCmd(t, ctx, vars, "token", "revoke", fmt.Sprint(tok.ID)); code != 0 {
		t.Fatalf("token revoke: %d %s", code, stderr)
	}
	if _, err := st.LookupToken(ctx, strings.TrimSpace(out)); err == nil {
		t.Fatal("revoked token still accepted")
	}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// serve runs `nix8sd serve` until the test ends or stop is called, and returns its base URL.
func serve(t *testing.T, vars map[string]string, args ...string) (string, func() (int, string)) {
	t.Helper()
	return serveAt(t, freeAddr(t), vars, args...)
}

// serveAt is serve listening on addr.
func serveAt(t *testing.T, addr string, vars map[string]string, args ...string) (string, func() (int, string)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		code   int
		stderr string
	}
	done := make(chan result, 1)
	go func() {
		var out, errb bytes.Buffer
		code := run(ctx, append([]string{"serve", "--listen", addr, "--log-format", "text"}, args...), &out, &errb, env(vars))
		done <- result{code, errb.String()}
	}()
	stop := func() (int, string) {
		cancel()
		select {
		case r := <-done:
			return r.code, r.stderr
		case <-time.After(60 * time.Second):
			t.Fatal("serve did not stop within 60s of SIGTERM")
		}
		return 0, ""
	}
	url := "http://" + addr
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := http.Get(url + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		select {
		case r := <-done:
			t.Fatalf("serve exited early (%d):\n%s", r.code, r.stderr)
		default:
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatal("serve not ready within 60s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return url, stop
}

func put(t *testing.T, url, token, ct string, body []byte) int {
	req, _ := http.NewRequest("PUT", url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", ct)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Logf("PUT %s: %s", url, b)
	}
	return res.StatusCode
}

func TestServeWithDatabaseURLAndTokenFile(t *testing.T) {
	state := t.TempDir()
	tok, _ := store.NewToken()
	tokFile := filepath.Join(state, "admin-token")
	os.WriteFile(tokFile, []byte(tok+"\n"), 0o600)
	vars := map[string]string{"DATABASE_URL": pgtest.Database(t)}
	url, stop := serve(t, vars, "--state-dir", state, "--admin-token-file", tokFile)
	cfg, err := os.ReadFile("../../examples/minimal/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if code := put(t, url+"/v1/config", tok, "application/yaml", cfg); code != 200 {
		t.Fatalf("PUT /v1/config with the token from the file: %d", code)
	}
	if _, err := os.Stat(filepath.Join(state, "flake", "inventory.json")); err != nil {
		t.Errorf("no flake workspace: %v", err)
	}
	// The job runner is wired in: a dry-run install job runs, planned on the flake workspace.
	req, _ := http.NewRequest("POST", url+"/v1/clusters/dev/install", strings.NewReader(`{"all": true, "dryRun": true}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 202 {
		t.Fatalf("POST install: %d", res.StatusCode)
	}
	var job struct {
		Status string `json:"status"`
		Result struct {
			Members []struct {
				Steps []string `json:"steps"`
			} `json:"members"`
		} `json:"result"`
	}
	for deadline := time.Now().Add(30 * time.Second); job.Status != "succeeded"; time.Sleep(50 * time.Millisecond) {
		req, _ := http.NewRequest("GET", url+res.Header.Get("Location"), nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(r.Body).Decode(&job)
		r.Body.Close()
		if err != nil || job.Status == "failed" || time.Now().After(deadline) {
			t.Fatalf("install job: %s (%v)", job.Status, err)
		}
	}
	installs := func(steps []string) bool {
		return slices.ContainsFunc(steps, func(s string) bool {
			return strings.HasPrefix(s, "nixos-anywhere --flake "+filepath.Join(state, "flake")+"#dev-server ")
		})
	}
	if m := job.Result.Members; len(m) != 2 || !installs(m[0].Steps) {
		t.Errorf("dry-run steps %+v", job.Result.Members)
	}
	code, stderr := stop()
	if code != 0 || !strings.Contains(stderr, "stopped") {
		t.Fatalf("graceful stop: exit %d\n%s", code, stderr)
	}
}

// Without DATABASE_URL, serve starts a private PostgreSQL in the state directory and says so.
func TestServeEmbeddedDatabase(t *testing.T) {
	state, err := os.MkdirTemp("", "nix8sd-state-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(state)
	os.Chmod(state, 0o711) // the PostgreSQL user must reach its directory when the tests run as root
	url, stop := serve(t, nil, "--state-dir", state)
	if _, err := os.Stat(filepath.Join(state, "flake", "flake.nix")); err != nil {
		t.Errorf("no flake workspace rendered at start: %v", err)
	}
	// The token command reaches the running embedded server.
	code, out, stderr := runCmd(t, context.Background(), nil, "token", "create", "--scope", "admin", "--state-dir", state)
	if code != 0 {
		t.Fatalf("token create beside serve: %d %s", code, stderr)
	}
	if c := put(t, url+"/v1/nodes/a", strings.TrimSpace(out), "application/json", []byte(`{"install": {"disk": "/dev/sda"}}`)); c != 201 && c != 200 {
		t.Fatalf("PUT node: %d", c)
	}
	code, serr := stop()
	if code != 0 || !strings.Contains(serr, "embedded PostgreSQL") || !strings.Contains(serr, "DATABASE_URL") {
		t.Fatalf("exit %d, stderr:\n%s", code, serr)
	}
	if _, err := os.Stat(filepath.Join(state, "postgres", "data", "PG_VERSION")); err != nil {
		t.Fatal(err)
	}
}
