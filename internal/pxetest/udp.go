package pxetest

import (
	"fmt"
	"net"
	"os"
	"runtime"

	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"golang.org/x/sys/unix"
)

// DHCPClientConn opens a UDP socket inside the namespace, bound to its interface iface and port (SO_BROADCAST),
// for DHCP packets a test writes itself: what no real client sends (a conversation that never goes on, a
// relay's giaddr). The socket stays in the namespace after this returns.
func (n *Net) DHCPClientConn(iface string, port int) (*net.UDPConn, error) {
	type result struct {
		conn *net.UDPConn
		err  error
	}
	res := make(chan result, 1)
	// A goroutine of its own, locked to its thread: a thread left in the namespace ends with it.
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			res <- result{nil, err}
			return
		}
		defer self.Close()
		ns, err := os.Open("/run/netns/" + n.NS)
		if err != nil {
			res <- result{nil, err}
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			res <- result{nil, fmt.Errorf("entering namespace %s: %w", n.NS, err)}
			return
		}
		conn, err := server4.NewIPv4UDPConn(iface, &net.UDPAddr{Port: port})
		if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		res <- result{conn, err}
	}()
	r := <-res
	return r.conn, r.err
}
