package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"golang.org/x/term"
)

// For renders on w: live (Terminal) when w is a terminal, plain lines (Lines) otherwise.
func For(w io.Writer) Reporter {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return NewTerminal(w, func() int {
			width, _, err := term.GetSize(int(f.Fd()))
			if err != nil {
				return 0
			}
			return width
		})
	}
	return NewLines(w)
}

// Terminal renders events live: one line per member in flight at the bottom, redrawn in place with the
// member's latest message or output line; above them, the lines that stay: what the operation as a whole
// says, warnings, and each member's end (done, skipped, failed). A program's output is only ever shown on its
// member's live line, so a terminal is not flooded with nixos-anywhere's copy progress; the job log and a
// pipe (Lines) keep every line.
type Terminal struct {
	w     io.Writer
	width func() int // columns; 0: unknown, lines are not cut

	mu     sync.Mutex
	order  []string          // nodes in flight, in the order they started
	latest map[string]string // node -> its live line
	drawn  int               // live lines on the screen now
}

// NewTerminal renders on w, a terminal; width says how many columns it has (nil or 0: unknown).
func NewTerminal(w io.Writer, width func() int) *Terminal {
	return &Terminal{w: w, width: width, latest: map[string]string{}}
}

// Report implements Reporter.
func (t *Terminal) Report(e Event) {
	if e.Message == "" && !e.Final() {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var b strings.Builder
	t.clear(&b)
	switch {
	case e.Node == "" || e.Status == Warning:
		b.WriteString(e.Line() + "\n")
	case e.Final():
		t.remove(e.Node)
		if line := e.Line(); line != "" {
			b.WriteString(line + "\n")
		}
	default:
		if _, ok := t.latest[e.Node]; !ok {
			t.order = append(t.order, e.Node)
		}
		t.latest[e.Node] = e.Line()
	}
	t.draw(&b)
	io.WriteString(t.w, b.String())
}

// clear moves the cursor up over the live lines and erases them.
func (t *Terminal) clear(b *strings.Builder) {
	if t.drawn > 0 {
		fmt.Fprintf(b, "\x1b[%dA", t.drawn)
	}
	b.WriteString("\r\x1b[J")
	t.drawn = 0
}

// draw writes the live lines, one per member in flight, each cut to the terminal's width.
func (t *Terminal) draw(b *strings.Builder) {
	width := 0
	if t.width != nil {
		width = t.width()
	}
	for _, n := range t.order {
		line := "  " + t.latest[n]
		if width > 1 {
			if r := []rune(line); len(r) > width-1 {
				line = string(r[:width-2]) + "…"
			}
		}
		b.WriteString(line + "\n")
		t.drawn++
	}
}

func (t *Terminal) remove(node string) {
	delete(t.latest, node)
	for i, n := range t.order {
		if n == node {
			t.order = append(t.order[:i], t.order[i+1:]...)
			return
		}
	}
}
