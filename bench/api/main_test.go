package main

import (
	"context"
	"testing"
	"time"
)

// The load test itself is run by hand (go run ./bench/api); this keeps it from rotting.
func TestLoadTestRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and the core")
	}
	if err := run(context.Background(), options{duration: 100 * time.Millisecond, concurrency: 2, members: 3, machines: 5}); err != nil {
		t.Fatal(err)
	}
}
