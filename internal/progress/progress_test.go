package progress

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

func TestLineWriterHandsOnWholeLines(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   []string
	}{
		{"one line in pieces", []string{"abc", "def\n"}, []string{"abcdef"}},
		{"several lines in one write", []string{"a\nb\nc"}, []string{"a", "b", "c"}},
		{"carriage returns are dropped", []string{"a\r\n"}, []string{"a"}},
		{"an empty line stays", []string{"\n\n"}, []string{"", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			w := NewLineWriter(func(lines []string) { got = append(got, lines...) })
			for _, s := range tt.writes {
				w.Write([]byte(s))
			}
			w.Flush()
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("lines %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLinesRendersEachEventAsTheOperationsPrintedThem(t *testing.T) {
	tests := []struct {
		name string
		e    Event
		want string
	}{
		{"a member's message", Event{Member: "a1", Node: "t-a1", Phase: "install", Status: Running, Message: "installing"}, "nix8s: t-a1: installing\n"},
		{"a program's output", Event{Member: "a1", Node: "t-a1", Status: Output, Message: "copying"}, "[t-a1] copying\n"},
		{"the operation as a whole", Event{Cluster: "t", Status: Running, Message: "t: wave 1/2: s1"}, "nix8s: t: wave 1/2: s1\n"},
		{"a warning", Event{Node: "t-a1", Status: Warning, Message: "late"}, "nix8s: warning: t-a1: late\n"},
		{"a milestone prints nothing", Event{Member: "a1", Node: "t-a1", Phase: "install", Status: Done}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			NewLines(&b).Report(tt.e)
			if b.String() != tt.want {
				t.Errorf("got %q, want %q", b.String(), tt.want)
			}
		})
	}
}

func TestFinalIsAFailureOrAMembersEnd(t *testing.T) {
	tests := []struct {
		name string
		e    Event
		want bool
	}{
		{"done without phase", Event{Member: "a", Status: Done}, true},
		{"skipped", Event{Member: "a", Status: Skipped}, true},
		{"failed in a phase", Event{Member: "a", Phase: "drain", Status: Failed, Err: errors.New("x")}, true},
		{"a phase done", Event{Member: "a", Phase: "install", Status: Done}, false},
		{"the operation's message", Event{Status: Done}, false},
	}
	for _, tt := range tests {
		if got := tt.e.Final(); got != tt.want {
			t.Errorf("%s: Final() = %v", tt.name, got)
		}
	}
}

func TestCounts(t *testing.T) {
	type S string
	if got := Counts([]S{"done", "failed", "done"}, func(s S) S { return s }, "done", "skipped", "failed"); got != "2 done, 1 failed" {
		t.Errorf("got %q", got)
	}
}

// The live renderer on a real pseudo-terminal (github.com/creack/pty): For must see a terminal there, and what
// reaches the other side must redraw one line per member in flight, each finished member leaving a line.
func TestTerminalOnAPseudoTerminal(t *testing.T) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	defer ptmx.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 24, Cols: 40}); err != nil {
		t.Fatal(err)
	}
	var screen bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(&screen, ptmx)
	}()

	r := For(tty)
	if _, ok := r.(*Terminal); !ok {
		t.Fatalf("For(a pty) = %T, want *Terminal", r)
	}
	if _, ok := For(&bytes.Buffer{}).(*Lines); !ok {
		t.Errorf("For(a buffer) is not Lines")
	}
	r.Report(Event{Status: Running, Message: "t: wave 1/1: a1, a2"})
	r.Report(Event{Member: "a1", Node: "t-a1", Phase: "install", Status: Running, Message: "installing"})
	r.Report(Event{Member: "a2", Node: "t-a2", Phase: "install", Status: Running, Message: "installing"})
	r.Report(Event{Member: "a1", Node: "t-a1", Phase: "install", Status: Output, Message: strings.Repeat("x", 60)})
	r.Report(Event{Member: "a1", Node: "t-a1", Status: Done, Message: "done in 1s"})
	r.Report(Event{Member: "a2", Node: "t-a2", Phase: "install", Status: Failed, Message: "failed: boom", Err: errors.New("boom")})
	tty.Close()
	// The reader ends with EIO once the last slave descriptor closed and the output is drained.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		ptmx.Close()
		<-done
	}
	out := strings.ReplaceAll(screen.String(), "\r\n", "\n") // the tty's ONLCR
	want := "\r\x1b[J" + "nix8s: t: wave 1/1: a1, a2\n" +
		"\r\x1b[J" + "  nix8s: t-a1: installing\n" +
		"\x1b[1A\r\x1b[J" + "  nix8s: t-a1: installing\n  nix8s: t-a2: installing\n" +
		"\x1b[2A\r\x1b[J" + "  [t-a1] " + strings.Repeat("x", 29) + "…\n  nix8s: t-a2: installing\n" +
		"\x1b[2A\r\x1b[J" + "nix8s: t-a1: done in 1s\n  nix8s: t-a2: installing\n" +
		"\x1b[1A\r\x1b[J" + "nix8s: t-a2: failed: boom\n"
	if out != want {
		t.Errorf("screen:\n%q\nwant:\n%q", out, want)
	}
}

func TestForIsPlainOffATerminal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, ok := For(f).(*Lines); !ok {
		t.Errorf("For(a file) is not Lines")
	}
}
