package sshtest

import (
	"fmt"
	"io"
	"net"
	"sync"
)

// Forward is a TCP port forward, as a VM's host agent keeps one from a port of 127.0.0.1 to the guest (Lima's
// ssh.localPort and portForwards): every connection to Listen is joined to a new connection to Target.
// Close stops it and cuts the connections it carries, as a VM that stops does.
type Forward struct {
	// Listen is the address it listens on, like 127.0.0.1:60100.
	Listen string
	// Target is where each connection goes, like a node's 10.99.37.2:22.
	Target string

	l     net.Listener
	mu    sync.Mutex
	conns map[net.Conn]bool
	done  chan struct{}
}

// StartForward listens on listen and forwards every connection to target.
func StartForward(listen, target string) (*Forward, error) {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("forwarding %s to %s: %w", listen, target, err)
	}
	f := &Forward{Listen: l.Addr().String(), Target: target, l: l, conns: map[net.Conn]bool{}, done: make(chan struct{})}
	go f.serve()
	return f, nil
}

func (f *Forward) serve() {
	defer close(f.done)
	for {
		c, err := f.l.Accept()
		if err != nil {
			return
		}
		go f.join(c)
	}
}

// track adds c to the open connections, or closes it when the forward is closed already.
func (f *Forward) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conns == nil {
		c.Close()
		return false
	}
	f.conns[c] = true
	return true
}

func (f *Forward) untrack(c net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.conns, c)
	c.Close()
}

func (f *Forward) join(in net.Conn) {
	if !f.track(in) {
		return
	}
	defer f.untrack(in)
	out, err := net.Dial("tcp", f.Target)
	if err != nil {
		return // the client sees the connection closed, as with a host agent whose guest does not answer
	}
	if !f.track(out) {
		return
	}
	defer f.untrack(out)
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}
	go pipe(out, in)
	go pipe(in, out)
	wg.Wait()
}

// Close stops listening and closes every connection the forward carries.
func (f *Forward) Close() {
	f.l.Close()
	<-f.done
	f.mu.Lock()
	conns := f.conns
	f.conns = nil
	f.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}
