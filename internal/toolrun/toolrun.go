// Package toolrun runs the local programs of the operations (nixos-anywhere, nixos-rebuild, nix) so that none
// of their processes outlives the job that started them: not when the job's context ends, not when the
// daemon stops, not when it is killed with SIGKILL.
//
// Each program runs in a process group of its own under a small leader, this same binary re-executed
// (/proc/self/exe; the leader mode is chosen in this package's init, before main). The leader:
//   - gets SIGTERM from the kernel when the process that started it dies (PR_SET_PDEATHSIG), so a daemon
//     killed with SIGKILL still takes its programs down: the leader ends the group as below, then exits;
//   - is a child subreaper (PR_SET_CHILD_SUBREAPER): a process that leaves the group (setsid, as ssh's
//     ControlPersist master does) is reparented to the leader instead of init once its parent exits, and
//     the leader kills it too;
//   - ends the group when the program exits, or on SIGTERM: SIGTERM to every process of the group and every
//     process it adopted, then SIGKILL to what is left after Grace.
//
// Why not Pdeathsig on the program itself: it reaches the direct child only, never the ssh and nix
// processes nixos-anywhere starts; a process group alone is not signalled when its starter dies.
package toolrun

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// DefaultGrace is how long a program's processes get between SIGTERM and SIGKILL.
const DefaultGrace = 5 * time.Second

// leaderEnv marks the re-executed binary as a leader; its value is the grace in milliseconds.
const leaderEnv = "NIX8S_TOOLRUN_LEADER"

func init() {
	if v, ok := os.LookupEnv(leaderEnv); ok {
		os.Exit(lead(v, os.Args[1:]))
	}
}

// Run starts cmd (built with exec.Command, not CommandContext: Run ends it) in a process group of its own and
// waits for it. When ctx ends, every process of the group gets SIGTERM, and SIGKILL after grace (0 means
// DefaultGrace); Run then returns once the program is gone. cmd.Path is looked up on this process's PATH, as
// exec.Command does; the error of a program that is not found wraps exec.ErrNotFound, and the exit status of
// the program is cmd's (an *exec.ExitError with its code).
func Run(ctx context.Context, cmd *exec.Cmd, grace time.Duration) error {
	if grace <= 0 {
		grace = DefaultGrace
	}
	if cmd.Err != nil {
		return cmd.Err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	wrapped, err := wrap(cmd, grace)
	if err != nil {
		return err
	}
	if err := wrapped.Start(); err != nil {
		return err
	}
	pgid := wrapped.Process.Pid
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		// The leader passes SIGTERM on and escalates on its own; the SIGKILL here is for a leader that
		// cannot (it was stopped, or is not one: no /proc/self/exe).
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(grace + time.Second):
			syscall.Kill(-pgid, syscall.SIGKILL)
		}
	}()
	err = wrapped.Wait()
	close(done)
	<-stopped
	cmd.ProcessState = wrapped.ProcessState
	cmd.Process = wrapped.Process
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%s: %w", cmd.Path, ctx.Err())
	}
	return err
}

// wrap is cmd run under a leader, or cmd itself in its own group where no leader can run.
func wrap(cmd *exec.Cmd, grace time.Duration) (*exec.Cmd, error) {
	path := cmd.Path
	if path == "" {
		return nil, errors.New("toolrun: no program")
	}
	self, err := leaderBinary()
	w := cmd
	if err == nil {
		w = exec.Command(self, append([]string{path}, cmd.Args[1:]...)...)
		env := cmd.Env
		if env == nil {
			env = os.Environ()
		}
		w.Env = append(append([]string(nil), env...), leaderEnv+"="+strconv.FormatInt(grace.Milliseconds(), 10))
		w.Dir, w.Stdin, w.Stdout, w.Stderr, w.ExtraFiles = cmd.Dir, cmd.Stdin, cmd.Stdout, cmd.Stderr, cmd.ExtraFiles
	}
	w.SysProcAttr = sysProcAttr()
	// Output pipes stay open while a process holds them: once the group is killed none does, so this only
	// bounds the wait for an escaped one.
	w.WaitDelay = grace + 5*time.Second
	return w, nil
}
