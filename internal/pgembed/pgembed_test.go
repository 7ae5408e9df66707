package pgembed

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
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

func TestListenTCPAndAttach(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "nix8s-pgembed-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o711)
	defer os.RemoveAll(dir)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s, err := Start(ctx, Options{Dir: dir, Port: port, ListenTCP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s@127.0.0.1:%d/postgres?sslmode=disable", Superuser, port))
	if err != nil {
		t.Fatalf("over TCP: %v", err)
	}
	conn.Close(ctx)
	// A second Start on the same directory uses the running server, and its Stop leaves it running.
	s2, err := Start(ctx, Options{Dir: dir, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	s2.Stop()
	if _, err := s.CreateDatabase(ctx, "still_up"); err != nil {
		t.Fatalf("the first server stopped: %v", err)
	}
}

func TestSocketPathTooLong(t *testing.T) {
	_, err := Start(context.Background(), Options{Dir: "/tmp/" + strings.Repeat("x", 120)})
	if err == nil || !strings.Contains(err.Error(), "longer than unix sockets allow") {
		t.Fatalf("err = %v", err)
	}
}
