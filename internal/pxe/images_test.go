//go:build linux

package pxe

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nix8s/nix8s/internal/toolrun"
)

// A build cancelled while nix runs (the daemon stops, or the build job's context ends) leaves no process of
// it behind: nix's evaluator and the builders it starts are in its process group, which toolrun ends. nix is
// a stand-in (real builds need nixpkgs, which cannot be had here) that starts a child in its group and waits,
// as nix waits for its builders.
func TestNixBuildCancelledLeavesNoProcess(t *testing.T) {
	dir := t.TempDir()
	nix := filepath.Join(dir, "nix")
	os.WriteFile(nix, []byte(`#!/bin/sh
echo "evaluating..." >&2
sleep 60 &
echo $$ $! > `+dir+`/pids
wait
`), 0o755)
	n := &NixBuild{Flake: "/srv/flake", Nix: nix}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	var log strings.Builder
	go func() {
		_, err := n.Build(ctx, DiscoveryInstallable, &log)
		done <- err
	}()

	var pids []int
	deadline := time.Now().Add(30 * time.Second)
	for len(pids) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the stand-in nix never started its child")
		}
		time.Sleep(20 * time.Millisecond)
		b, _ := os.ReadFile(filepath.Join(dir, "pids"))
		pids = pids[:0]
		for _, f := range strings.Fields(string(b)) {
			if p, err := strconv.Atoi(f); err == nil {
				pids = append(pids, p)
			}
		}
	}
	group, ok := toolrun.ProcStat(pids[0])
	if !ok {
		t.Fatal("the stand-in nix is gone before the build was cancelled")
	}
	if child, ok := toolrun.ProcStat(pids[1]); !ok || child.PGID != group.PGID {
		t.Fatalf("nix's child %d: %+v (alive %v), want it in nix's group %d", pids[1], child, ok, group.PGID)
	}

	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "building "+DiscoveryInstallable) {
			t.Errorf("cancelled build: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the cancelled build did not return")
	}
	if alive := toolrun.Live(func(_ int, st toolrun.Stat) bool { return st.PGID == group.PGID }); len(alive) > 0 {
		t.Errorf("processes of nix's group %d alive after the build was cancelled: %v", group.PGID, alive)
	}
	for _, pid := range pids {
		if st, ok := toolrun.ProcStat(pid); ok && st.State != "Z" {
			t.Errorf("process %d of the cancelled build is alive (%s)", pid, st.State)
		}
	}
}
