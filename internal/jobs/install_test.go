//go:build linux

package jobs

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/sshtest"
	"github.com/nix8s/nix8s/internal/store"
	"github.com/nix8s/nix8s/internal/toolrun"
)

// standInsRunning are the stand-in nixos-anywhere processes alive (zombies aside) of this machine.
func standInsRunning(t *testing.T, si *sshtest.StandIns) []int {
	t.Helper()
	prog := filepath.Join(si.LocalBin, "nixos-anywhere")
	return toolrun.Live(func(pid int, _ toolrun.Stat) bool { return toolrun.Runs(pid, prog) })
}

// groupMembers are the live processes of process group pgid.
func groupMembers(pgid int) []int {
	return toolrun.Live(func(_ int, st toolrun.Stat) bool { return st.PGID == pgid })
}

func starts(t *testing.T, si *sshtest.StandIns, host string) int {
	n := 0
	for _, l := range si.Log(t) {
		if strings.HasPrefix(l, "start "+host+" ") {
			n++
		}
	}
	return n
}

// An install job against a member whose install lock an earlier attempt holds (a daemon that died with it,
// whose connection PostgreSQL has not ended yet) starts no nixos-anywhere and says who holds it; once the lock
// is free, the machine that attempt left installing is failed and installed again, clearly; and an install
// whose lock is lost stops its nixos-anywhere, with every process of it. Real sshd (internal/sshtest), real
// PostgreSQL; nixos-anywhere is the stand-in (it cannot run here).
func TestInstallUnderTheMemberLock(t *testing.T) {
	n := sshtest.Start(t, "s1")
	si := n.StandIns(t)
	st := newStore(t)
	ctx := context.Background()

	cfg := map[string]any{"clusters": map[string]any{"t": map[string]any{"members": map[string]any{
		"s1": map[string]any{"role": "server", "ip": n.Node("s1").IP},
	}}}}
	if _, err := st.Modify(ctx, "test", func(*store.Snapshot) (map[string]any, error) { return cfg, nil }); err != nil {
		t.Fatal(err)
	}
	mac := "52:54:00:dd:01:01"
	if _, err := st.CreateMachine(ctx, "test", mac, nil, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateMachine(ctx, "test", mac, store.MachineChange{Assign: &[2]string{"t", "s1"}}); err != nil {
		t.Fatal(err)
	}
	// The earlier attempt: it moved the machine to installing and holds the lock.
	installing := store.StateInstalling
	if _, err := st.UpdateMachine(ctx, "job:1", mac, store.MachineChange{State: &installing, Reason: "install job 1: nixos-anywhere starts"}); err != nil {
		t.Fatal(err)
	}
	earlier, err := st.LockMember(ctx, "t", "s1", "nix8sd:gone:1 job 1", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer earlier.Release()

	c := core.Cluster{Name: "t", FirstServer: "s1", Servers: []string{"s1"}, Provision: [][]string{{"s1"}},
		Members: map[string]core.Member{"s1": {Name: "s1", HostName: "t-s1", Role: "server", IP: n.Node("s1").IP, SSH: n.Endpoint("s1")}}}
	r := &Runner{Store: st, Planner: plan{c: c}, Worker: "w",
		Poll: 50 * time.Millisecond, Config: Config{
			KnownHostsFile: n.KnownHostsFile, SSHConfigFile: "none", ConnectTimeout: 2 * time.Second,
			NixosAnywhere: filepath.Join(si.LocalBin, "nixos-anywhere"), LockWait: time.Second,
			WaitTimeout: 5 * time.Second, WaitInterval: 50 * time.Millisecond,
		}}
	start(t, r)
	install := func(params string) *store.Job {
		t.Helper()
		cl := "t"
		j, err := st.NewJob(ctx, KindInstall, &cl, nil, json.RawMessage(params))
		if err != nil {
			t.Fatal(err)
		}
		r.Wake()
		return j
	}
	state := func() store.State {
		m, err := st.Machine(ctx, mac)
		if err != nil {
			t.Fatal(err)
		}
		return m.State
	}

	// 1. The lock is held: no second nixos-anywhere.
	j := waitJob(t, st, install(`{"members": ["s1"]}`).ID)
	if j.Status != "failed" || j.Error == nil || !strings.Contains(*j.Error, `member s1 of cluster "t": nix8sd:gone:1 job 1 (connected since `) ||
		!strings.Contains(*j.Error, "no second attempt starts while an earlier one may still run") {
		t.Errorf("install while the lock is held: %s %v\n%s", j.Status, j.Error, j.Log)
	}
	if !strings.Contains(j.Log, "t-s1: waiting up to 1s for nix8sd:gone:1 job 1 to let go of the member's lock") {
		t.Errorf("the log does not say what it waited for:\n%s", j.Log)
	}
	if n := starts(t, si, "t-s1"); n != 0 {
		t.Errorf("nixos-anywhere started %d times while the earlier attempt held the lock", n)
	}
	if s := state(); s != "installing" {
		t.Errorf("machine %s, want it left installing for the earlier attempt", s)
	}

	// 2. The earlier attempt's connection ends: the machine it left installing is failed, then installed.
	earlier.Release()
	j = waitJob(t, st, install(`{"members": ["s1"]}`).ID)
	if j.Status != "succeeded" {
		t.Fatalf("install after the lock was freed: %s %v\n%s", j.Status, j.Error, j.Log)
	}
	if want := "t-s1: machine " + mac + " was left installing by an earlier attempt that is gone"; !strings.Contains(j.Log, want) {
		t.Errorf("the log lacks %q:\n%s", want, j.Log)
	}
	if n := starts(t, si, "t-s1"); n != 1 {
		t.Errorf("nixos-anywhere started %d times, want 1", n)
	}
	evs, err := st.Events(ctx, mac, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var moves []string
	for _, e := range evs {
		if e.NewState != nil && e.OldState != nil && *e.OldState != *e.NewState {
			moves = append(moves, string(*e.NewState))
		}
	}
	if got := strings.Join(moves, " "); !strings.HasSuffix(got, "installing install_failed installing joined ready") {
		t.Errorf("machine moves %q, want ... installing install_failed installing joined ready", got)
	}

	// 3. The lock is lost while nixos-anywhere runs (PostgreSQL ends the connection holding it): the install
	// stops, and no process of the stand-in is left.
	si.SetSleep(t, "60")
	j = install(`{"members": ["s1"], "reinstall": true}`)
	deadline := time.Now().Add(30 * time.Second)
	for len(standInsRunning(t, si)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the stand-in nixos-anywhere never ran")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The stand-in's process group: its sleep and ssh children are in it.
	pid := standInsRunning(t, si)[0]
	group, _ := toolrun.ProcStat(pid)
	holder := "w job " + strconv.FormatInt(j.ID, 10)
	if _, err := st.Pool().Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, holder); err != nil {
		t.Fatal(err)
	}
	j = waitJob(t, st, j.ID)
	if j.Status != "failed" || j.Error == nil || !strings.Contains(*j.Error, "nixos-anywhere stopped: member s1 of cluster \"t\": the connection holding its member lock failed") {
		t.Errorf("install whose lock was lost: %s %v\n%s", j.Status, j.Error, j.Log)
	}
	if alive := standInsRunning(t, si); len(alive) > 0 {
		t.Errorf("stand-in processes alive after the install stopped: %v", alive)
	}
	if alive := groupMembers(group.PGID); group.PGID == 0 || len(alive) > 0 {
		t.Errorf("processes of the stand-in's group %d alive after the install stopped: %v", group.PGID, alive)
	}
	if s := state(); s != "install_failed" {
		t.Errorf("machine %s after the lost lock, want install_failed", s)
	}
}
