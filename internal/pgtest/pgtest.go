// Package pgtest gives each test package one real PostgreSQL server and each test a fresh database in it.
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//	func TestX(t *testing.T) { url := pgtest.Database(t) ... }
//
// The server is started by internal/pgembed from the machine's PostgreSQL binaries. With NIX8S_TEST_DATABASE_URL
// set (a URL with the right to CREATE DATABASE), tests use that server instead.
package pgtest

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nix8s/nix8s/internal/pgembed"
)

var (
	adminURL string
	counter  atomic.Int64
)

// Main starts the server, runs the tests, stops the server and exits.
func Main(m *testing.M) {
	os.Exit(Run(m))
}

// Run is Main without the exit, for a TestMain with more to clean up; it returns the exit code.
func Run(m *testing.M) int {
	if u := os.Getenv("NIX8S_TEST_DATABASE_URL"); u != "" {
		adminURL = u
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "nix8s-pgtest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	_ = os.Chmod(dir, 0o711)
	srv, err := pgembed.Start(ctx, pgembed.Options{Dir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		return 1
	}
	defer srv.Stop()
	adminURL = srv.URL("postgres")
	return m.Run()
}

var unsafe = regexp.MustCompile(`[^a-z0-9_]+`)

// Database creates an empty database for t, dropped when t ends, and returns its URL.
func Database(t testing.TB) string {
	t.Helper()
	if adminURL == "" {
		t.Fatal("pgtest: no server; call pgtest.Main from TestMain")
	}
	name := unsafe.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	name = fmt.Sprintf("t%d_%d_%s", os.Getpid(), counter.Add(1), name)
	ctx := context.Background()
	u, err := pgembed.CreateDatabase(ctx, adminURL, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pgembed.DropDatabase(context.Background(), adminURL, name); err != nil {
			t.Logf("pgtest: dropping %s: %v", name, err)
		}
	})
	return u
}
