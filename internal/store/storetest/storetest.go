// Package storetest gives tests a migrated store on a fresh database of the test binary's PostgreSQL
// (internal/pgtest; call pgtest.Main from TestMain).
package storetest

import (
	"context"
	"testing"

	"github.com/nix8s/nix8s/internal/pgtest"
	"github.com/nix8s/nix8s/internal/store"
)

// Open returns a store on a new database with the daemon's migrations applied, closed when the test ends.
func Open(t testing.TB) *store.Store {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, pgtest.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}
