// Package progress carries what the operations (install, rollout) report as they go: structured events, one
// per step of a member, that each caller renders its own way. The CLI draws them live on a terminal (one line
// per member in flight) or as plain lines; the daemon's jobs move machine states on the milestones and append
// the same plain lines to the job log. Modelled on talosctl's reporter: the operation says what happened, never
// how it is shown.
package progress

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Status says what an event is.
type Status string

const (
	// Running is a step under way: the message says what it does now.
	Running Status = "running"
	// Output is one line of a program's output (nixos-anywhere, nixos-rebuild, kubectl's drain).
	Output Status = "output"
	// Done is a phase (or, with no Phase, the member) that finished.
	Done Status = "done"
	// Skipped is a member left as it was.
	Skipped Status = "skipped"
	// Failed is a phase (or, with no Phase, the member) that failed; the message is the error.
	Failed Status = "failed"
	// Warning is something the operation goes on after, but a person should read.
	Warning Status = "warning"
)

// Event is one thing that happened to a member of a cluster, or to the operation as a whole.
type Event struct {
	// Time is when it happened; Report fills it in when zero.
	Time time.Time
	// Cluster is the cluster's name.
	Cluster string
	// Member is the member's name in the config; empty for the operation as a whole.
	Member string
	// Node is the member's host name (`<cluster>-<member>`), which prefixes its lines.
	Node string
	// Phase is the step of the member's operation (provision.PhaseInstall, rollout.PhaseDrain, ...); empty for
	// the member as a whole.
	Phase string
	// Status says what the event is.
	Status Status
	// Message is what to tell a person.
	Message string
	// Err is a Failed event's error, as the operation's report holds it.
	Err error
}

// Final says whether e ends its member's part of the operation: its failure (in the phase that failed), or
// its end with no phase (done, skipped).
func (e Event) Final() bool {
	return e.Member != "" && (e.Status == Failed || e.Phase == "" && (e.Status == Done || e.Status == Skipped))
}

// Line is e as one plain line: `[<node>] <line>` for a program's output, else `nix8s: <node>: <message>`
// (`nix8s: <message>` for the operation as a whole; `nix8s: warning: ...` for a warning). An event without a
// message is a milestone for the machines' states alone (a phase done): its line is "", which no renderer
// prints.
func (e Event) Line() string {
	if e.Message == "" {
		return ""
	}
	if e.Status == Output {
		return "[" + e.Node + "] " + e.Message
	}
	var b strings.Builder
	b.WriteString("nix8s: ")
	if e.Status == Warning {
		b.WriteString("warning: ")
	}
	if e.Node != "" {
		b.WriteString(e.Node + ": ")
	}
	b.WriteString(e.Message)
	return b.String()
}

// Reporter receives the events of an operation. Report may be called from several goroutines (members in
// flight at once); a member's own events come in order.
type Reporter interface {
	Report(Event)
}

// Func is a Reporter that is a function.
type Func func(Event)

// Report implements Reporter.
func (f Func) Report(e Event) { f(e) }

// Discard drops every event.
var Discard Reporter = Func(func(Event) {})

// Tee hands each event to every reporter in turn.
func Tee(rs ...Reporter) Reporter {
	return Func(func(e Event) {
		for _, r := range rs {
			r.Report(e)
		}
	})
}

// Lines renders events as plain lines (Event.Line) on w, whole lines only: the form of a log file, a pipe,
// and the job log.
type Lines struct {
	mu sync.Mutex
	w  io.Writer
}

// NewLines renders on w.
func NewLines(w io.Writer) *Lines { return &Lines{w: w} }

// Report implements Reporter.
func (l *Lines) Report(e Event) {
	if e.Message == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	io.WriteString(l.w, e.Line()+"\n")
}

// Writer is an io.Writer whose every line becomes an event made by event (for a program's output, or for a
// part that prints its own lines, such as remote delivery's log).
func Writer(r Reporter, event func(line string) Event) *LineWriter {
	return NewLineWriter(func(lines []string) {
		for _, l := range lines {
			r.Report(event(l))
		}
	})
}

// LineWriter hands the whole lines written to it to emit, without their newlines: all the lines one Write
// completed in one call. It is the stdout and stderr of a program at once (exec copies them from two
// goroutines), so lines never interleave mid-line. Flush hands on an unfinished last line.
type LineWriter struct {
	emit func(lines []string)
	mu   sync.Mutex
	buf  []byte
}

// NewLineWriter calls emit with each run of whole lines.
func NewLineWriter(emit func(lines []string)) *LineWriter { return &LineWriter{emit: emit} }

// Write implements io.Writer.
func (w *LineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	last := bytes.LastIndexByte(w.buf, '\n')
	if last < 0 {
		return len(p), nil
	}
	text := string(w.buf[:last])
	w.buf = append(w.buf[:0], w.buf[last+1:]...)
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSuffix(l, "\r")
	}
	w.emit(lines)
	return len(p), nil
}

// Flush hands on what is left without a newline.
func (w *LineWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit([]string{strings.TrimSuffix(string(w.buf), "\r")})
		w.buf = nil
	}
}

// Emitter is a helper for operations: it stamps events with the cluster and the time.
type Emitter struct {
	Reporter Reporter
	Cluster  string
}

// Emit reports e, filling in Cluster and Time.
func (em Emitter) Emit(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if e.Cluster == "" {
		e.Cluster = em.Cluster
	}
	if em.Reporter != nil {
		em.Reporter.Report(e)
	}
}

// Say reports a message of the operation as a whole.
func (em Emitter) Say(format string, args ...any) {
	em.Emit(Event{Status: Running, Message: fmt.Sprintf(format, args...)})
}

// Counts renders "3 done, 1 skipped" for the statuses of items present, in the order given: an operation's
// summary.
func Counts[T any, S ~string](items []T, status func(T) S, order ...S) string {
	n := map[S]int{}
	for _, it := range items {
		n[status(it)]++
	}
	var parts []string
	for _, s := range order {
		if n[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n[s], s))
		}
	}
	return strings.Join(parts, ", ")
}
