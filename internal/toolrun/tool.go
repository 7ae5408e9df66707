package toolrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/nix8s/nix8s/internal/progress"
)

// Tool is one run of a local program of an operation (nixos-anywhere, nixos-rebuild, nix build), for Exec.
type Tool struct {
	// Name names the program in errors: "nixos-anywhere".
	Name string
	// Cmd is the program, made with exec.Command; Exec sets its Stderr, and its Stdout unless set (a caller
	// that reads data from stdout sets its own).
	Cmd *exec.Cmd
	// Timeout bounds the run; 0 means no bound besides the context.
	Timeout time.Duration
	// Line, when set, gets each line of the program's output (stdout, unless the caller took it, and stderr).
	Line func(line string)
	// Install says how to get the program when it is not on PATH: "nix run nixpkgs#nixos-rebuild, or pass
	// --nixos-rebuild".
	Install string
}

// tailSize bounds the stderr Exec keeps for the error of a program that failed.
const tailSize = 8 << 10

// Exec runs t.Cmd as Run does, and says what went wrong the same way for every program: `<name> timed out
// after <timeout>`, `<name> exited with code <n>: <last line of its stderr>`, `<program> not found on PATH
// (<install>)`, or ctx's own error when ctx ended first.
func Exec(ctx context.Context, t Tool) error {
	runCtx := ctx
	if t.Timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, t.Timeout)
		defer cancel()
	}
	line := t.Line
	if line == nil {
		line = func(string) {}
	}
	out := progress.NewLineWriter(func(lines []string) {
		for _, l := range lines {
			line(l)
		}
	})
	tail := &tailBuffer{max: tailSize}
	if t.Cmd.Stdout == nil {
		t.Cmd.Stdout = out
	}
	t.Cmd.Stderr = io.MultiWriter(out, tail)
	err := Run(runCtx, t.Cmd, DefaultGrace)
	out.Flush()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(runCtx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%s timed out after %s", t.Name, t.Timeout)
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if msg := tail.lastLine(); msg != "" {
			return fmt.Errorf("%s exited with code %d: %s", t.Name, exit.ExitCode(), msg)
		}
		return fmt.Errorf("%s exited with code %d", t.Name, exit.ExitCode())
	}
	if errors.Is(err, exec.ErrNotFound) {
		if t.Install != "" {
			return fmt.Errorf("%s not found on PATH (%s)", t.Cmd.Path, t.Install)
		}
		return fmt.Errorf("%s not found on PATH", t.Cmd.Path)
	}
	return err
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

// lastLine is the last line that is not blank.
func (b *tailBuffer) lastLine() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	lines := strings.Split(string(b.buf), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return l
		}
	}
	return ""
}
