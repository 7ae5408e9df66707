// Package conns bounds the connections of an HTTP listener, so that idle or slow clients cannot use up the
// daemon's file descriptors, and a flood of them cannot keep anyone else out.
package conns

import (
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Limiter caps a listener's open connections in all (Max) and per client address (PerClient). A connection
// over a cap takes the slot of the longest-idle connection of the same scope (one that sent no request yet, or
// is between keep-alive requests); when every connection is busy in a request, the new one is closed at once.
// So an idle flood, of any size, delays a newcomer by one close, never by an idle timeout.
//
// Set the http.Server's ConnState to Limiter.ConnState: that is how the limiter knows who is idle.
type Limiter struct {
	// Max and PerClient are the caps; 0 is no cap.
	Max, PerClient int
	// Refused, when set, is called for every connection closed by the limiter: reason "evicted" (an idle
	// connection made room) or "full" (no idle one to close; the new connection was closed).
	Refused func(reason string)

	mu     sync.Mutex
	open   map[*conn]struct{}
	client map[string]int
}

// Listen wraps ln.
func (l *Limiter) Listen(ln net.Listener) net.Listener { return &listener{Listener: ln, l: l} }

// ConnState is the http.Server's ConnState hook.
func (l *Limiter) ConnState(nc net.Conn, s http.ConnState) {
	c, ok := nc.(*conn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch s {
	case http.StateNew, http.StateIdle:
		c.idleSince = time.Now()
	case http.StateActive:
		c.idleSince = time.Time{}
	case http.StateHijacked, http.StateClosed:
		l.release(c)
	}
}

// Open is the number of open connections.
func (l *Limiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.open)
}

func (l *Limiter) refused(reason string) {
	if l.Refused != nil {
		l.Refused(reason)
	}
}

// admit registers c, closing an idle connection to make room where a cap is reached; false: no room.
func (l *Limiter) admit(c *conn) bool {
	l.mu.Lock()
	if l.open == nil {
		l.open, l.client = map[*conn]struct{}{}, map[string]int{}
	}
	var victims []*conn
	ok := true
	if l.PerClient > 0 && l.client[c.client] >= l.PerClient {
		if v := l.oldestIdle(c.client); v != nil {
			l.release(v)
			victims = append(victims, v)
		} else {
			ok = false
		}
	}
	if ok && l.Max > 0 && len(l.open) >= l.Max {
		if v := l.oldestIdle(""); v != nil {
			l.release(v)
			victims = append(victims, v)
		} else {
			ok = false
		}
	}
	if ok {
		l.open[c] = struct{}{}
		l.client[c.client]++
	}
	l.mu.Unlock()
	for _, v := range victims {
		v.Conn.Close()
		l.refused("evicted")
	}
	if !ok {
		l.refused("full")
	}
	return ok
}

// oldestIdle is the longest-idle open connection (of client, unless ""); l.mu is held.
func (l *Limiter) oldestIdle(client string) *conn {
	var best *conn
	for c := range l.open {
		if c.idleSince.IsZero() || (client != "" && c.client != client) {
			continue
		}
		if best == nil || c.idleSince.Before(best.idleSince) {
			best = c
		}
	}
	return best
}

// release frees c's slot once; l.mu is held.
func (l *Limiter) release(c *conn) {
	if _, ok := l.open[c]; !ok {
		return
	}
	delete(l.open, c)
	if l.client[c.client]--; l.client[c.client] <= 0 {
		delete(l.client, c.client)
	}
}

type listener struct {
	net.Listener
	l *Limiter
}

func (ln *listener) Accept() (net.Conn, error) {
	for {
		nc, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		host, _, err := net.SplitHostPort(nc.RemoteAddr().String())
		if err != nil {
			host = nc.RemoteAddr().String()
		}
		c := &conn{Conn: nc, l: ln.l, client: host, idleSince: time.Now()}
		if ln.l.admit(c) {
			return c, nil
		}
		nc.Close()
	}
}

type conn struct {
	net.Conn
	l         *Limiter
	client    string
	idleSince time.Time // zero while a request is read or served; guarded by l.mu
}

func (c *conn) Close() error {
	c.l.mu.Lock()
	c.l.release(c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// CloseWrite keeps the connection's half-close, which net/http uses before closing a connection it answered
// with an error (say 413 or 431 while the client still sends): without it the close resets the connection and
// the client may lose the answer.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// ReadFrom keeps the connection's own ReadFrom (sendfile(2) on TCP), which net/http uses for file bodies.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}
