package api

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nix8s/nix8s/internal/inventory"
	"github.com/nix8s/nix8s/internal/pgembed"
	"github.com/nix8s/nix8s/internal/store"
)

// syncBuffer is a log sink the server's handlers write to from their goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// PostgreSQL stops under a running API (a private server of this test, really stopped): authenticated calls
// answer 503 unavailable in the /v1 error shape, with a right token and with a wrong one alike (the token table
// cannot be read, so the two cannot be told apart); calls that need no database keep their answers; /readyz
// says 503 without the database's user, name, host or port, which the log keeps.
func TestDatabaseDown(t *testing.T) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "nix8s-pgdown-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	_ = os.Chmod(dir, 0o711) // the server runs as an unprivileged user when the test runs as root
	pg, err := pgembed.Start(ctx, pgembed.Options{Dir: dir, Port: 5499})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Stop() })
	const dbname = "nix8s_down_db"
	url, err := pg.CreateDatabase(ctx, dbname)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	srv := New(Options{Store: st, Inventory: inventory.New(inventory.Options{Store: st, Core: theCore(t)}),
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	e := &env{t: t, url: hs.URL, st: st, srv: srv}
	if e.admin, err = st.CreateToken(ctx, "admin", store.ScopeAdmin); err != nil {
		t.Fatal(err)
	}
	if e.read, err = st.CreateToken(ctx, "read", store.ScopeRead); err != nil {
		t.Fatal(err)
	}
	expect(t, e.req("GET", "/readyz", "", nil), 200, "")
	expect(t, e.req("GET", "/v1/config", e.read, nil), 200, "")
	wrong, _ := store.NewToken()
	expect(t, e.req("GET", "/v1/config", wrong, nil), 401, "unauthorized")

	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	// The pool's idle connections die with the server; the next calls find out, each in its own way (a dead
	// connection, then no server to dial).
	for _, tc := range []struct {
		name, method, path, token string
		body                      any
		status                    int
		code                      string
	}{
		{"a read with a read token", "GET", "/v1/config", e.read, nil, 503, "unavailable"},
		{"the same read again", "GET", "/v1/config", e.read, nil, 503, "unavailable"},
		{"a list with an admin token", "GET", "/v1/machines", e.admin, nil, 503, "unavailable"},
		{"a write with an admin token", "PUT", "/v1/nodes/x", e.admin, `{"install": {"disk": "/dev/sda"}}`, 503, "unavailable"},
		{"a write with a read token", "PUT", "/v1/nodes/x", e.read, `{}`, 503, "unavailable"},
		{"a wrong nix8s token", "GET", "/v1/config", wrong, nil, 503, "unavailable"},
		{"a revoked-looking token", "GET", "/v1/jobs", e.read + "x", nil, 503, "unavailable"},
		// Refused without the database: not a nix8s token, or no token at all.
		{"not a nix8s token", "GET", "/v1/config", "abc", nil, 401, "unauthorized"},
		{"no token", "GET", "/v1/config", "", nil, 401, "unauthorized"},
		{"readyz", "GET", "/readyz", "", nil, 503, "unavailable"},
		{"healthz", "GET", "/healthz", "", nil, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.req(tc.method, tc.path, tc.token, tc.body)
			expect(t, r, tc.status, tc.code)
			if tc.status == 503 {
				if r.header.Get("Retry-After") == "" && tc.path != "/readyz" {
					t.Errorf("503 without Retry-After")
				}
				for _, secret := range []string{dir, dbname, "5499", "user=", pgembed.Superuser + "@", "dial", "failed to connect"} {
					if strings.Contains(string(r.body), secret) {
						t.Errorf("the answer names %q: %s", secret, r.body)
					}
				}
			}
		})
	}
	// What the answers leave out, the log has: how the database was reached and what failed.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), dir) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if l := logs.String(); !strings.Contains(l, dir) || !strings.Contains(l, "unavailable") || !strings.Contains(l, "not ready") {
		t.Errorf("the log lacks the database's address or the failures:\n%s", l)
	}
}
