//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix8s/nix8s/internal/pgtest"
	"github.com/nix8s/nix8s/internal/sshtest"
	"github.com/nix8s/nix8s/internal/store"
	"github.com/nix8s/nix8s/internal/toolrun"
)

// The test binary is nix8sd itself when run with NIX8SD_TEST_DAEMON=1: a real daemon process the test can
// kill with SIGKILL (serve's in-process tests cannot be killed).
func init() {
	if os.Getenv("NIX8SD_TEST_DAEMON") == "1" {
		os.Unsetenv("NIX8SD_TEST_DAEMON")
		main()
	}
}

// daemon is a nix8sd serve process.
type daemon struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	url    string
}

func startDaemon(t *testing.T, dbURL string, args ...string) *daemon {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command(os.Args[0], append([]string{"serve", "--listen", addr, "--log-format", "text"}, args...)...)
	cmd.Env = append(os.Environ(), "NIX8SD_TEST_DAEMON=1", "DATABASE_URL="+dbURL)
	d := &daemon{cmd: cmd, stderr: &bytes.Buffer{}, url: "http://" + addr}
	cmd.Stdout, cmd.Stderr = d.stderr, d.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		if res, err := http.Get(d.url + "/readyz"); err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return d
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("nix8sd not ready within 60s:\n%s", d.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// standIns are the live stand-in nixos-anywhere processes (the daemon only has PROG among its flags).
func standIns(prog string) []int {
	return toolrun.Live(func(pid int, _ toolrun.Stat) bool { return toolrun.Runs(pid, prog) })
}

func inGroup(pgid int) []int {
	return toolrun.Live(func(_ int, st toolrun.Stat) bool { return st.PGID == pgid })
}

// extraFilesDirs are the install's secret temporary directories (the installed system's private host key)
// under the daemons' private temporary directories.
func extraFilesDirs(state string) []string {
	dirs, _ := filepath.Glob(filepath.Join(state, "tmp", "nix8sd-*", "nix8s-extra-files-*"))
	return dirs
}

// kill -9 of a nix8sd running an install job: no process of its nixos-anywhere survives the daemon, and the
// next start removes the secret temporary files it left. A graceful stop takes the program's processes down
// too and leaves no temporary directory. Real nix8sd process, real PostgreSQL, real sshd (internal/sshtest);
// nixos-anywhere is the stand-in, made to sleep in its install (the real one cannot run here).
func TestKilledDaemonLeavesNoInstallBehind(t *testing.T) {
	n := sshtest.Start(t, "s1")
	si := n.StandIns(t)
	si.SetSleep(t, "600")
	prog := filepath.Join(si.LocalBin, "nixos-anywhere")
	dbURL := pgtest.Database(t)
	state := t.TempDir()
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	cfg := fmt.Sprintf("nodes:\n  std:\n    install:\n      disk: /dev/sda\nclusters:\n  t:\n    members:\n      s1: { node: std, role: server, ip: %s }\n"+
		"provisioning:\n  nixos-anywhere:\n    ssh:\n      user: root\n      keyFile: %s\n", n.Node("s1").IP, n.KeyFile)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"--state-dir", state, "--config", cfgFile, "--known-hosts", n.KnownHostsFile, "--ssh-config", "none",
		"--nixos-anywhere", prog, "--secrets", "none"}
	d := startDaemon(t, dbURL, args...)

	ctx := context.Background()
	st, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	queue := func() {
		cl := "t"
		if _, err := st.NewJob(ctx, "install", &cl, nil, json.RawMessage(`{"members": ["s1"]}`)); err != nil {
			t.Fatal(err)
		}
	}
	// waitRunning waits for the stand-in and returns its process group.
	waitRunning := func(d *daemon) int {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			if pids := standIns(prog); len(pids) > 0 && len(extraFilesDirs(state)) > 0 {
				st, _ := toolrun.ProcStat(pids[0])
				return st.PGID
			}
			if time.Now().After(deadline) {
				t.Fatalf("the stand-in nixos-anywhere never ran:\n%s", d.stderr)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitGone := func(pgid int) []int {
		deadline := time.Now().Add(20 * time.Second)
		for {
			alive := append(standIns(prog), inGroup(pgid)...)
			if len(alive) == 0 || time.Now().After(deadline) {
				return alive
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	queue()
	pgid := waitRunning(d)
	if pgid == syscall.Getpgrp() || pgid == d.cmd.Process.Pid {
		t.Fatalf("nixos-anywhere runs in process group %d, not one of its own", pgid)
	}
	left := extraFilesDirs(state)
	d.cmd.Process.Signal(syscall.SIGKILL)
	d.cmd.Wait()
	if alive := waitGone(pgid); len(alive) > 0 {
		t.Errorf("processes of the install alive after kill -9 of nix8sd: %v", alive)
	}
	for _, dir := range left {
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("%s: %v; the killed daemon could not have removed it", dir, err)
		}
	}

	// The next start removes what the dead daemon left.
	d = startDaemon(t, dbURL, args...)
	for _, dir := range left {
		if _, err := os.Stat(filepath.Dir(dir)); !os.IsNotExist(err) {
			t.Errorf("%s still there after the next start (%v)", filepath.Dir(dir), err)
		}
	}
	if !strings.Contains(d.stderr.String(), "removed the temporary files of a daemon that stopped without cleaning up") {
		t.Errorf("the start does not say what it removed:\n%s", d.stderr)
	}

	// A graceful stop during an install: the program's processes go, and so does the temporary directory.
	queue()
	pgid = waitRunning(d)
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := d.cmd.Wait(); err != nil {
		t.Errorf("nix8sd after SIGTERM: %v\n%s", err, d.stderr)
	}
	if alive := waitGone(pgid); len(alive) > 0 {
		t.Errorf("processes of the install alive after nix8sd stopped: %v", alive)
	}
	if dirs, _ := filepath.Glob(filepath.Join(state, "tmp", "*")); len(dirs) > 0 {
		t.Errorf("temporary directories left after a graceful stop: %v", dirs)
	}
}
