//go:build linux

package toolrun

import (
	"bytes"
	"context"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Exec says what went wrong with a program the same way for every tool; the programs are real shells.
func TestExecMapsAProgramsEnd(t *testing.T) {
	tests := []struct {
		name    string
		script  string
		timeout time.Duration
		want    string // the error; "" for none
		lines   string // what Line got, joined by |
	}{
		{name: "success, every line of both streams", script: "echo out; echo err >&2", lines: "out|err"},
		{name: "an exit code with the last line of stderr", script: "echo first >&2; echo 'error: it broke' >&2; echo later; exit 3",
			want: "tool exited with code 3: error: it broke", lines: "first|error: it broke|later"},
		{name: "an exit code without stderr", script: "exit 2", want: "tool exited with code 2"},
		{name: "a timeout", script: "echo waiting; exec sleep 100", timeout: 200 * time.Millisecond,
			want: "tool timed out after 200ms", lines: "waiting"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var lines []string
			err := Exec(t.Context(), Tool{Name: "tool", Cmd: exec.Command("/bin/sh", "-c", tt.script), Timeout: tt.timeout,
				Line: func(l string) { mu.Lock(); lines = append(lines, l); mu.Unlock() }})
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("error %q, want %q", got, tt.want)
			}
			// stdout and stderr are copied by two goroutines: compare the lines as a set.
			gotLines := strings.Join(sorted(lines), "|")
			if want := strings.Join(sorted(strings.Split(tt.lines, "|")), "|"); tt.lines != "" && gotLines != want {
				t.Errorf("lines %q, want %q", gotLines, want)
			}
		})
	}
}

func TestExecLeavesStdoutToTheCaller(t *testing.T) {
	var out bytes.Buffer
	var lines []string
	cmd := exec.Command("/bin/sh", "-c", "echo /nix/store/x; echo 'warning: no nixbld group' >&2")
	cmd.Stdout = &out
	if err := Exec(t.Context(), Tool{Name: "nix build", Cmd: cmd, Line: func(l string) { lines = append(lines, l) }}); err != nil {
		t.Fatal(err)
	}
	if out.String() != "/nix/store/x\n" || strings.Join(lines, "|") != "warning: no nixbld group" {
		t.Errorf("stdout %q, lines %q: data must come from stdout only", out.String(), lines)
	}
}

func TestExecNamesAMissingProgramAndHowToGetIt(t *testing.T) {
	err := Exec(context.Background(), Tool{Name: "nixos-rebuild", Cmd: exec.Command("nix8s-test-no-such-program"), Install: "pass --nixos-rebuild"})
	if err == nil || err.Error() != "nix8s-test-no-such-program not found on PATH (pass --nixos-rebuild)" {
		t.Errorf("error %v", err)
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	slices.Sort(out)
	return out
}
