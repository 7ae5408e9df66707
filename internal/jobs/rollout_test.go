//go:build linux

package jobs

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/k8stest"
	"github.com/nix8s/nix8s/internal/store"
	"github.com/nix8s/nix8s/internal/toolrun"
)

// nixosRebuildSleeper is a stand-in nixos-rebuild (the real one builds a NixOS system and activates it on the
// node, which cannot happen here): it records its pid, starts a child in its process group and waits for it,
// as nixos-rebuild waits for its nix copy and ssh.
const nixosRebuildSleeper = `#!/bin/sh
echo $$ > "$0.pid"
sleep 60 &
wait
`

// A rollout whose member lock is lost while nixos-rebuild switches the member (PostgreSQL ends the
// connection holding the lock, as when the daemon's database connection dies): the switch stops with every
// process of its group, and the member fails with the lost lock as its cause, like an install
// (TestInstallUnderTheMemberLock). Real kube-apiserver (internal/k8stest) for the cordon and drain, real
// PostgreSQL; nixos-rebuild is the stand-in above.
func TestRolloutStopsWhenTheMemberLockIsLost(t *testing.T) {
	k8s, err := k8stest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k8s.Stop() })
	kctx, kcancel := context.WithCancel(context.Background())
	t.Cleanup(kcancel)
	go k8stest.RunKubelet(kctx, k8s.Client)
	ctx := context.Background()
	if err := k8stest.AddNode(ctx, k8s.Client, "t-a1", ""); err != nil {
		t.Fatal(err)
	}

	st := newStore(t)
	cfg := map[string]any{"clusters": map[string]any{"t": map[string]any{"members": map[string]any{
		"a1": map[string]any{"role": "agent", "ip": "10.9.1.1"},
	}}}}
	if _, err := st.Modify(ctx, "test", func(*store.Snapshot) (map[string]any, error) { return cfg, nil }); err != nil {
		t.Fatal(err)
	}
	mac := "52:54:00:dd:02:01"
	if _, err := st.CreateMachine(ctx, "test", mac, nil, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateMachine(ctx, "test", mac, store.MachineChange{Assign: &[2]string{"t", "a1"}}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []store.State{store.StateInstalling, store.StateJoined, store.StateReady} {
		if _, err := st.UpdateMachine(ctx, "test", mac, store.MachineChange{State: &s, Reason: "test"}); err != nil {
			t.Fatal(err)
		}
	}

	rebuild := filepath.Join(t.TempDir(), "nixos-rebuild")
	if err := os.WriteFile(rebuild, []byte(nixosRebuildSleeper), 0o755); err != nil {
		t.Fatal(err)
	}
	c := core.Cluster{Name: "t", Agents: []string{"a1"}, Provision: [][]string{{"a1"}}, Rollout: []string{"a1"}, RolloutWaves: [][]string{{"a1"}},
		Members: map[string]core.Member{"a1": {Name: "a1", HostName: "t-a1", Role: "agent", IP: "10.9.1.1",
			SSH: core.SSH{Host: "10.9.1.1", Port: 22, User: "root"}}}}
	r := &Runner{Store: st, Planner: plan{c: c}, Worker: "w", Poll: 50 * time.Millisecond,
		Config: Config{NixosRebuild: rebuild, APIServer: k8s.Config, LockWait: time.Second, DrainTimeout: 5 * time.Second,
			WaitTimeout: 10 * time.Second, WaitInterval: 50 * time.Millisecond}}
	start(t, r)
	cl := "t"
	j, err := st.NewJob(ctx, KindRollout, &cl, nil, json.RawMessage(`{"members": ["a1"]}`))
	if err != nil {
		t.Fatal(err)
	}
	r.Wake()

	// The stand-in runs: its pid file is there and it is alive.
	var group toolrun.Stat
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, _ := os.ReadFile(rebuild + ".pid")
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			if s, ok := toolrun.ProcStat(pid); ok {
				group = s
				break
			}
		}
		if cur, _ := st.Job(ctx, j.ID); cur != nil && cur.Status != "queued" && cur.Status != "running" {
			t.Fatalf("the rollout ended before nixos-rebuild ran: %s %v\n%s", cur.Status, cur.Error, cur.Log)
		}
		if time.Now().After(deadline) {
			t.Fatal("the stand-in nixos-rebuild never ran")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(groupMembers(group.PGID)); n < 2 {
		t.Fatalf("the stand-in's process group %d has %d live processes, want it and its sleep", group.PGID, n)
	}
	holder := "w job " + strconv.FormatInt(j.ID, 10)
	tag, err := st.Pool().Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, holder)
	if err != nil {
		t.Fatal(err)
	}
	if tag.RowsAffected() != 1 {
		t.Fatalf("%d connections named %q hold the lock, want 1", tag.RowsAffected(), holder)
	}

	j = waitJob(t, st, j.ID)
	const cause = `nixos-rebuild stopped: member a1 of cluster "t": the connection holding its member lock failed`
	if j.Status != "failed" || j.Error == nil || !strings.Contains(*j.Error, "t-a1: switch: "+cause) {
		t.Errorf("rollout whose lock was lost: %s %v\n%s", j.Status, j.Error, j.Log)
	}
	var report struct {
		Members []struct{ Name, Status, Phase, Error string } `json:"members"`
	}
	result, err := st.JobResult(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(result, &report); err != nil || len(report.Members) != 1 {
		t.Fatalf("the job's result: %v\n%s", err, result)
	}
	if m := report.Members[0]; m.Name != "a1" || m.Status != "failed" || m.Phase != "switch" || !strings.Contains(m.Error, cause) {
		t.Errorf("member a1 in the report: %+v", m)
	}
	if alive := groupMembers(group.PGID); len(alive) > 0 {
		t.Errorf("processes of the stand-in's group %d alive after the switch stopped: %v", group.PGID, alive)
	}
	m, err := st.Machine(ctx, mac)
	if err != nil {
		t.Fatal(err)
	}
	if m.State != "rebuild_failed" {
		t.Errorf("machine %s after the lost lock, want rebuild_failed", m.State)
	}
	evs, err := st.Events(ctx, mac, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if last := evs[len(evs)-1]; last.NewState == nil || *last.NewState != "rebuild_failed" || !strings.Contains(last.Reason, cause) {
		t.Errorf("the machine's last event: %+v", last)
	}
}
