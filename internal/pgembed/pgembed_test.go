package pgembed

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestStartCreateDropStop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "nix8s-pgembed-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o711)
	defer os.RemoveAll(dir)

	s, err := Start(ctx, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	u, err := s.CreateDatabase(ctx, "first")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	var db string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil || db != "first" {
		t.Fatalf("current_database = %q, %v", db, err)
	}
	conn.Close(ctx)
	if err := DropDatabase(ctx, s.URL("postgres"), "first"); err != nil {
		t.Fatal(err)
	}

	// A second start on the same directory reuses the data (the daemon's state directory case).
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	s2, err := Start(ctx, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Stop()
}
