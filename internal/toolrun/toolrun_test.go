//go:build linux

package toolrun

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The programs here are real process trees: a shell stand-in for nixos-anywhere (which cannot run here)
// that starts a sleeping child in its group, and one that leaves it with setsid, as ssh's ControlPersist
// master does.

const standIn = `#!/bin/sh
echo $$ > "$DIR/pid"
sleep 1000 &
echo $! > "$DIR/child"
setsid sh -c 'echo $$ > "$DIR/escaped"; exec sleep 1000' &
echo started
wait
`

func TestMain(m *testing.M) {
	// The test binary plays the daemon: it runs the stand-in and waits, until the test kills it.
	if dir := os.Getenv("TOOLRUN_TEST_DAEMON"); dir != "" {
		cmd := exec.Command(filepath.Join(dir, "nixos-anywhere"))
		cmd.Env = append(os.Environ(), "DIR="+dir)
		Run(context.Background(), cmd, time.Second)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func writeStandIn(t *testing.T) string {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "nixos-anywhere"), []byte(standIn), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// pids reads the stand-in's pid files, waiting until it wrote all of them.
func pids(t *testing.T, dir string) map[string]int {
	t.Helper()
	out := map[string]int{}
	deadline := time.Now().Add(30 * time.Second)
	for _, name := range []string{"pid", "child", "escaped"} {
		for {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if n, cerr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && cerr == nil {
				out[name] = n
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the stand-in wrote no %s file", name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return out
}

// survivors are the processes still alive (zombies count as gone) among pids, or in process group pgid.
func survivors(pids map[string]int, pgid int) []string {
	var alive []string
	for name, pid := range pids {
		if st, ok := ProcStat(pid); ok && st.State != "Z" {
			alive = append(alive, name+"="+strconv.Itoa(pid))
		}
	}
	for _, pid := range Live(func(_ int, st Stat) bool { return st.PGID == pgid }) {
		alive = append(alive, "group member "+strconv.Itoa(pid))
	}
	return alive
}

// waitGone waits (bounded) until nothing of the tree is alive and returns what still is at the end.
func waitGone(pids map[string]int, pgid int) []string {
	deadline := time.Now().Add(20 * time.Second)
	for {
		alive := survivors(pids, pgid)
		if len(alive) == 0 || time.Now().After(deadline) {
			return alive
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestContextEndKillsTheWholeTree(t *testing.T) {
	dir := writeStandIn(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.Command(filepath.Join(dir, "nixos-anywhere"))
	cmd.Env = append(os.Environ(), "DIR="+dir)
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, cmd, 500*time.Millisecond) }()
	p := pids(t, dir)
	st, ok := ProcStat(p["pid"])
	if !ok {
		t.Fatal("the stand-in is gone already")
	}
	if esc, _ := ProcStat(p["escaped"]); esc.PGID == st.PGID {
		t.Fatalf("setsid did not leave the group (pgid %d)", esc.PGID)
	}
	if self := syscall.Getpgrp(); st.PGID == self {
		t.Fatalf("the stand-in runs in the test's own process group %d", self)
	}
	cancel()
	err := <-errc
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run: %v, want context.Canceled", err)
	}
	if alive := waitGone(p, st.PGID); len(alive) > 0 {
		t.Errorf("still alive after the context ended: %v", alive)
	}
}

func TestKilledDaemonTakesTheTreeDown(t *testing.T) {
	dir := writeStandIn(t)
	daemon := exec.Command(os.Args[0], "-test.run=^$")
	daemon.Env = append(os.Environ(), "TOOLRUN_TEST_DAEMON="+dir)
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	p := pids(t, dir)
	st, _ := ProcStat(p["pid"])
	if err := daemon.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	daemon.Wait()
	if alive := waitGone(p, st.PGID); len(alive) > 0 {
		t.Errorf("still alive after the daemon was killed with SIGKILL: %v", alive)
	}
}

func TestExitAndLeftovers(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "tool")
	// Exits 3 at once, leaving a sleeping child behind in its group.
	os.WriteFile(script, []byte("#!/bin/sh\nsleep 1000 &\necho $! > \"$DIR/child\"\necho out\necho err >&2\nexit 3\n"), 0o755)
	cmd := exec.Command(script)
	cmd.Env = append(os.Environ(), "DIR="+dir)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := Run(context.Background(), cmd, 200*time.Millisecond)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("Run: %v, want exit code 3", err)
	}
	if out.String() != "out\n" || errb.String() != "err\n" {
		t.Errorf("stdout %q, stderr %q", out.String(), errb.String())
	}
	b, _ := os.ReadFile(filepath.Join(dir, "child"))
	child, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if alive := waitGone(map[string]int{"child": child}, -1); len(alive) > 0 {
		t.Errorf("the program's leftover child survived it: %v", alive)
	}

	err = Run(context.Background(), exec.Command("nix8s-no-such-program"), 0)
	if !errors.Is(err, exec.ErrNotFound) {
		t.Errorf("missing program: %v, want exec.ErrNotFound", err)
	}
}
