package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix8s/nix8s/internal/pgtest"
	"github.com/nix8s/nix8s/internal/store"
)

func getStatus(t *testing.T, url, token string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// A token from --admin-token-file revoked with `nix8sd token revoke` stays revoked: the next serve with the same
// file refuses to start and says how to fix it; with a new token in the file it starts and only the new one works.
func TestRevokedTokenFileStaysRevoked(t *testing.T) {
	ctx := context.Background()
	state := t.TempDir()
	tokFile := filepath.Join(state, "admin-token")
	old, _ := store.NewToken()
	if err := os.WriteFile(tokFile, []byte(old+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"DATABASE_URL": pgtest.Database(t)}
	url, stop := serve(t, vars, "--state-dir", state, "--admin-token-file", tokFile)
	if code := getStatus(t, url+"/v1/config", old); code != 200 {
		t.Fatalf("GET /v1/config with the file's token: %d", code)
	}
	if code, stderr := stop(); code != 0 {
		t.Fatalf("stop: %d\n%s", code, stderr)
	}

	st, err := store.Open(ctx, vars["DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	tok, err := st.LookupToken(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCmd(t, ctx, vars, "token", "revoke", fmt.Sprint(tok.ID))
	if code != 0 || !strings.Contains(stderr, "--admin-token-file") || !strings.Contains(stderr, "stays revoked") {
		t.Fatalf("token revoke: exit %d, want 0 and a hint about the token file:\n%s", code, stderr)
	}

	// The restart with the same file: refused before anything is served, with the file and the fix. (A daemon
	// that started instead would serve until the timeout, then stop with exit 0.)
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	code, _, stderr = runCmd(t, rctx, vars, "serve", "--listen", freeAddr(t), "--state-dir", state, "--admin-token-file", tokFile)
	for _, want := range []string{"nix8sd: error: " + tokFile, "revoked", "token create --print-only"} {
		if code == 0 || !strings.Contains(stderr, want) {
			t.Fatalf("serve with a revoked token file: exit %d, stderr lacks %q:\n%s", code, want, stderr)
		}
	}
	if _, err := st.LookupToken(ctx, old); err == nil {
		t.Fatal("the refused start brought the revoked token back")
	}

	fresh, _ := store.NewToken()
	if err := os.WriteFile(tokFile, []byte(fresh+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url, stop = serve(t, vars, "--state-dir", state, "--admin-token-file", tokFile)
	defer stop()
	if code := getStatus(t, url+"/v1/config", old); code != 401 {
		t.Errorf("the revoked token after the restart: %d, want 401", code)
	}
	if code := getStatus(t, url+"/v1/config", fresh); code != 200 {
		t.Errorf("the new token: %d, want 200", code)
	}
}
