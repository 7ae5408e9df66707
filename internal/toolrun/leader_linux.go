package toolrun

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const prSetChildSubreaper = 36 // PR_SET_CHILD_SUBREAPER, linux/prctl.h

func leaderBinary() (string, error) {
	const self = "/proc/self/exe"
	if _, err := os.Stat(self); err != nil {
		return "", err
	}
	return self, nil
}

// sysProcAttr puts the leader at the head of a new process group and has the kernel send it SIGTERM when
// the thread that started it goes (the daemon dies: Go never ends its threads otherwise).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// lead is the leader's main: it runs args, then ends the group; it returns the program's exit code.
func lead(graceMS string, args []string) int {
	ms, _ := strconv.Atoi(graceMS)
	grace := time.Duration(ms) * time.Millisecond
	if grace <= 0 {
		grace = DefaultGrace
	}
	os.Unsetenv(leaderEnv)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		fmt.Fprintf(os.Stderr, "nix8s: warning: PR_SET_CHILD_SUBREAPER: %v\n", e)
	}
	if len(args) == 0 {
		return 2
	}
	// The parent may have died between its fork and the Pdeathsig taking hold.
	if os.Getppid() == 1 {
		return 128 + int(syscall.SIGTERM)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Args[0] = filepath.Base(args[0])
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// Should the leader itself be killed, its program goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "nix8s: error: %v\n", err)
		return 127
	}
	main := cmd.Process.Pid
	exited := make(chan int, 1)
	// One reaper for the program and every process adopted as subreaper (exec.Cmd.Wait would race it).
	go func() {
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, 0, nil)
			if err == syscall.EINTR {
				continue
			}
			if err != nil { // ECHILD: nothing to reap now; the group's end may adopt more
				time.Sleep(20 * time.Millisecond)
				continue
			}
			if pid == main {
				code := ws.ExitStatus()
				if ws.Signaled() {
					code = 128 + int(ws.Signal())
				}
				exited <- code
			}
		}
	}()
	select {
	case code := <-exited:
		endGroup(grace)
		return code
	case <-sigs:
		syscall.Kill(-syscall.Getpgrp(), syscall.SIGTERM)
		endGroup(grace)
		select {
		case code := <-exited:
			return code
		case <-time.After(time.Second):
			return 128 + int(syscall.SIGTERM)
		}
	}
}

// endGroup ends every other process of this group and every process adopted: SIGTERM, then SIGKILL to what
// is left after grace.
func endGroup(grace time.Duration) {
	left := members()
	if len(left) == 0 {
		return
	}
	for _, pid := range left {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if len(members()) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Killed processes cannot fork any more, but their children are adopted as they die: repeat until none.
	for i := 0; i < 100; i++ {
		left = members()
		if len(left) == 0 {
			return
		}
		for _, pid := range left {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// members are the live processes of this process's group, or whose parent it is, but itself.
func members() []int {
	self, pgrp := os.Getpid(), syscall.Getpgrp()
	return Live(func(_ int, st Stat) bool { return st.PGID == pgrp || st.PPID == self })
}

// Live are the live processes (zombies and dying ones aside) for which match says yes, this one excepted.
func Live(match func(pid int, st Stat) bool) []int {
	self := os.Getpid()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if st, ok := ProcStat(pid); ok && st.State != "Z" && st.State != "X" && match(pid, st) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Runs reports whether process pid runs prog: as the program itself, or as the first argument of its
// interpreter (`/bin/sh PROG`, a script's #!) or of its leader (`/proc/self/exe PROG`).
func Runs(pid int, prog string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	argv := strings.SplitN(string(b), "\x00", 3)
	return argv[0] == prog || len(argv) > 1 && argv[1] == prog
}

// Stat is what /proc/<pid>/stat says of a process's place.
type Stat struct {
	State      string
	PPID, PGID int
}

// ProcStat reads /proc/<pid>/stat; false when the process is gone.
func ProcStat(pid int) (Stat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Stat{}, false
	}
	// The command name is in parentheses and may hold anything: the fields follow its last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 3 {
		return Stat{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	pgid, _ := strconv.Atoi(f[2])
	return Stat{State: f[0], PPID: ppid, PGID: pgid}, true
}
