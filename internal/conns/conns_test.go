package conns

import (
	"bufio"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A real http.Server on loopback behind a Limiter; clients dial from 127.0.0.1, 127.0.0.2 and 127.0.0.3 (all
// loopback on Linux), so the per-client caps see three clients.
type rig struct {
	t    *testing.T
	l    *Limiter
	addr string

	mu      sync.Mutex
	refused map[string]int
	news    atomic.Int64 // StateNew: admitted
	idles   atomic.Int64 // StateIdle: a request answered
	closes  atomic.Int64 // StateClosed
	entered chan struct{}
	unblock chan struct{}
	conns   map[string]net.Conn
	readers map[string]*bufio.Reader
}

func newRig(t *testing.T, max, perClient int) *rig {
	r := &rig{t: t, refused: map[string]int{}, entered: make(chan struct{}, 16), unblock: make(chan struct{}),
		conns: map[string]net.Conn{}, readers: map[string]*bufio.Reader{}}
	r.l = &Limiter{Max: max, PerClient: perClient, Refused: func(reason string) {
		r.mu.Lock()
		r.refused[reason]++
		r.mu.Unlock()
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/block" {
			r.entered <- struct{}{}
			<-r.unblock
		}
		io.WriteString(w, "ok")
	})
	// Long timeouts: nothing here may be closed by a timeout, only by the limiter.
	hs := Timeouts{ReadHeader: time.Minute, Read: time.Minute, Write: time.Minute, Idle: time.Minute}.Server(h, r.l)
	hs.ConnState = func(c net.Conn, s http.ConnState) {
		r.l.ConnState(c, s)
		switch s {
		case http.StateNew:
			r.news.Add(1)
		case http.StateIdle:
			r.idles.Add(1)
		case http.StateClosed:
			r.closes.Add(1)
		}
	}
	go hs.Serve(r.l.Listen(ln))
	t.Cleanup(func() {
		select {
		case <-r.unblock:
		default:
			close(r.unblock)
		}
		hs.Close()
		for _, c := range r.conns {
			c.Close()
		}
	})
	return r
}

// eventually polls cond for up to 10 s: a generous bound for "did it happen at all", not a timing assertion.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10s", what)
		}
	}
}

func (r *rig) full() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refused["full"]
}

// step runs one client action and waits until the server has seen it.
func (r *rig) step(s step) {
	t := r.t
	t.Helper()
	c := r.conns[s.name]
	switch s.op {
	case "open":
		before := r.news.Load() + int64(r.full())
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(s.from)}}
		c, err := d.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		r.conns[s.name], r.readers[s.name] = c, bufio.NewReader(c)
		eventually(t, s.name+" admitted or refused", func() bool { return r.news.Load()+int64(r.full()) > before })
	case "request":
		before := r.idles.Load()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		r.response(s.name)
		eventually(t, s.name+" idle after its request", func() bool { return r.idles.Load() > before })
	case "busy":
		io.WriteString(c, "GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
		select {
		case <-r.entered:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s's request never reached the handler", s.name)
		}
	case "partial":
		// A header that never ends (slowloris): the server has no request yet, so the connection is idle.
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n")
	case "close":
		before := r.closes.Load()
		c.Close()
		eventually(t, s.name+" closed at the server", func() bool { return r.closes.Load() > before })
	default:
		t.Fatalf("unknown op %q", s.op)
	}
}

func (r *rig) response(name string) {
	r.t.Helper()
	r.conns[name].SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(r.readers[name], nil)
	if err != nil {
		r.t.Fatalf("%s: no response: %v", name, err)
	}
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || string(b) != "ok" {
		r.t.Fatalf("%s: %d %q", name, res.StatusCode, b)
	}
}

// closedByServer: the server closed name's connection (EOF or reset), waiting up to 10 s.
func (r *rig) closedByServer(name string) bool {
	c := r.conns[name]
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := r.readers[name].ReadByte()
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// stillOpen: nothing and no close arrives on name's connection within 200 ms.
func (r *rig) stillOpen(name string) bool {
	c := r.conns[name]
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	_, err := r.readers[name].Peek(1)
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

type step struct{ op, name, from string }

const a, b, c = "127.0.0.1", "127.0.0.2", "127.0.0.3"

func open(name, from string) step { return step{"open", name, from} }
func do(op, name string) step     { return step{op: op, name: name} }

func TestLimiter(t *testing.T) {
	for _, tc := range []struct {
		name           string
		max, perClient int
		steps          []step
		closed, open   []string // connections the server closed; connections left open
		busy           []string // open connections whose blocked request is answered at the end
		refused        map[string]int
	}{
		{name: "the per-client cap closes that client's longest-idle connection", perClient: 2,
			steps:  []step{open("a1", a), open("a2", a), open("b1", b), open("a3", a)},
			closed: []string{"a1"}, open: []string{"a2", "a3", "b1"}, refused: map[string]int{"evicted": 1}},
		{name: "the overall cap closes the longest-idle connection of any client, oldest first", max: 3,
			steps:  []step{open("a1", a), open("b1", b), open("b2", b), open("c1", c), open("b3", b)},
			closed: []string{"a1", "b1"}, open: []string{"b2", "c1", "b3"}, refused: map[string]int{"evicted": 2}},
		{name: "a flood of one client stays within its cap and leaves the others their room", max: 6, perClient: 3,
			steps: []step{open("b1", b), open("a1", a), open("a2", a), open("a3", a), open("a4", a), open("a5", a),
				open("c1", c), open("c2", c)},
			closed: []string{"a1", "a2"}, open: []string{"b1", "a3", "a4", "a5", "c1", "c2"}, refused: map[string]int{"evicted": 2}},
		{name: "a keep-alive connection is idle since its last request", max: 2,
			steps:  []step{open("a1", a), open("a2", a), do("request", "a1"), open("a3", a)},
			closed: []string{"a2"}, open: []string{"a1", "a3"}, refused: map[string]int{"evicted": 1}},
		{name: "a busy connection is never closed: an idle one makes room", max: 2,
			steps:  []step{open("a1", a), do("busy", "a1"), open("a2", a), open("a3", a)},
			closed: []string{"a2"}, open: []string{"a1", "a3"}, busy: []string{"a1"}, refused: map[string]int{"evicted": 1}},
		{name: "when every connection is busy the newcomer is closed and counted full", perClient: 2,
			steps:  []step{open("a1", a), do("busy", "a1"), open("a2", a), do("busy", "a2"), open("a3", a), open("b1", b)},
			closed: []string{"a3"}, open: []string{"a1", "a2", "b1"}, busy: []string{"a1", "a2"}, refused: map[string]int{"full": 1}},
		{name: "a header that never ends is idle and makes room", perClient: 1,
			steps:  []step{open("a1", a), do("partial", "a1"), open("a2", a)},
			closed: []string{"a1"}, open: []string{"a2"}, refused: map[string]int{"evicted": 1}},
		{name: "a connection the client closed frees its slot", perClient: 1,
			steps: []step{open("a1", a), do("close", "a1"), open("a2", a)},
			open:  []string{"a2"}, refused: map[string]int{}},
		{name: "caps of 0 are no caps",
			steps: []step{open("a1", a), open("a2", a), open("a3", a), open("a4", a), open("a5", a)},
			open:  []string{"a1", "a2", "a3", "a4", "a5"}, refused: map[string]int{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, tc.max, tc.perClient)
			for _, s := range tc.steps {
				r.step(s)
			}
			for _, n := range tc.closed {
				if !r.closedByServer(n) {
					t.Errorf("%s was not closed", n)
				}
			}
			for _, n := range tc.open {
				if !r.stillOpen(n) {
					t.Errorf("%s was closed", n)
				}
			}
			if got := r.l.Open(); got != len(tc.open) {
				t.Errorf("Open() = %d, want %d", got, len(tc.open))
			}
			r.mu.Lock()
			got := maps.Clone(r.refused)
			r.mu.Unlock()
			if !maps.Equal(got, tc.refused) {
				t.Errorf("refused %v, want %v", got, tc.refused)
			}
			close(r.unblock)
			for _, n := range tc.busy {
				r.response(n)
			}
		})
	}
}

// recordingConn is a real TCP connection that notes which of its methods net/http reached through the
// limiter's wrapper.
type recordingConn struct {
	*net.TCPConn
	readFrom, closeWrite *atomic.Int64
}

func (c recordingConn) ReadFrom(r io.Reader) (int64, error) {
	c.readFrom.Add(1)
	return c.TCPConn.ReadFrom(r)
}

func (c recordingConn) CloseWrite() error {
	c.closeWrite.Add(1)
	return c.TCPConn.CloseWrite()
}

type recordingListener struct {
	net.Listener
	readFrom, closeWrite atomic.Int64
}

func (l *recordingListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return recordingConn{nc.(*net.TCPConn), &l.readFrom, &l.closeWrite}, nil
}

// File bodies still reach the TCP connection's ReadFrom (sendfile(2)), and net/http's half-close before it
// closes a connection still reaches CloseWrite: the wrapper hides neither.
func TestWrapperKeepsReadFromAndCloseWrite(t *testing.T) {
	f := filepath.Join(t.TempDir(), "image")
	want := strings.Repeat("nix8s image bytes ", 1<<16)
	os.WriteFile(f, []byte(want), 0o644)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rl := &recordingListener{Listener: ln}
	l := &Limiter{Max: 4}
	hs := Timeouts{}.Server(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/small" {
			// A small body limit, answered before the client has sent its body: net/http half-closes.
			r.Body = http.MaxBytesReader(w, r.Body, 10)
			if _, err := io.ReadAll(r.Body); err != nil {
				http.Error(w, "too large", http.StatusRequestEntityTooLarge)
				return
			}
		}
		http.ServeFile(w, r, f)
	}), l)
	go hs.Serve(l.Listen(rl))
	t.Cleanup(func() { hs.Close() })

	res, err := http.Get("http://" + ln.Addr().String() + "/image")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(got) != want {
		t.Fatalf("file body: %d bytes, want %d", len(got), len(want))
	}
	if rl.readFrom.Load() == 0 {
		t.Error("the file was not written through the TCP connection's ReadFrom")
	}

	res, err = http.Post("http://"+ln.Addr().String()+"/small", "text/plain", strings.NewReader(strings.Repeat("x", 1<<20)))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("small: %d", res.StatusCode)
	}
	eventually(t, "CloseWrite on the TCP connection", func() bool { return rl.closeWrite.Load() > 0 })
}

func TestTimeoutsServer(t *testing.T) {
	l := &Limiter{}
	for _, tc := range []struct {
		name  string
		in    Timeouts
		l     *Limiter
		want  Timeouts
		state bool
	}{
		{name: "zero fields are the defaults", want: DefaultTimeouts},
		{name: "set fields are kept", in: Timeouts{ReadHeader: time.Second, Idle: 3 * time.Second},
			want: Timeouts{ReadHeader: time.Second, Read: DefaultTimeouts.Read, Write: DefaultTimeouts.Write, Idle: 3 * time.Second}},
		{name: "a limiter gets the connection hook", l: l, want: DefaultTimeouts, state: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs := tc.in.Server(http.NotFoundHandler(), tc.l)
			got := Timeouts{hs.ReadHeaderTimeout, hs.ReadTimeout, hs.WriteTimeout, hs.IdleTimeout}
			if got != tc.want {
				t.Errorf("timeouts %+v, want %+v", got, tc.want)
			}
			if (hs.ConnState != nil) != tc.state {
				t.Errorf("ConnState set: %v, want %v", hs.ConnState != nil, tc.state)
			}
		})
	}
}
