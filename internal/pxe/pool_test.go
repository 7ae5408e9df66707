package pxe

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nix8s/nix8s/internal/pxetest"
)

type slowBooter struct{ release chan struct{} }

func (s slowBooter) Arm(context.Context, net.HardwareAddr, Boot) (Boot, error) {
	return Boot{Action: ActionIgnore}, nil
}

func (s slowBooter) Decide(ctx context.Context, _ net.HardwareAddr, _ Firmware) (Boot, error) {
	select {
	case <-s.release:
	case <-ctx.Done():
	}
	return Boot{Action: ActionIgnore}, nil
}

// A flood of packets against one busy worker and a queue of two: the excess is dropped and counted, not
// queued without bound.
func TestDHCPWorkerPoolIsBounded(t *testing.T) {
	if os.Geteuid() != 0 {
		pxetest.Unavailable(t, "binding DHCP to a device needs root")
	}
	m := NewMetrics(prometheus.NewRegistry())
	sb := slowBooter{release: make(chan struct{})}
	d := &DHCP{Mode: ModeFull, Interface: "lo", ServerIP: net.ParseIP("127.0.0.1").To4(), Subnet: &net.IPNet{IP: net.IPv4(127, 0, 0, 0), Mask: net.CIDRMask(8, 32)},
		RangeStart: net.ParseIP("127.0.0.100"), RangeEnd: net.ParseIP("127.0.0.200"), Leases: &MemLeases{}, Booter: sb,
		HTTPBase: "http://127.0.0.1:1", Workers: 1, Queue: 2, Port: 10067 + os.Getpid()%1000, Metrics: m}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx) }()
	time.Sleep(200 * time.Millisecond)
	c, err := net.Dial("udp4", "127.0.0.1:"+itoa(d.Port))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		c.Write(discover("52:54:00:ee:ee:01").ToBytes())
	}
	pxetest.WaitFor(t, 5*time.Second, "dropped packets to be counted", func() bool { return counter(m.DHCPDropped.WithLabelValues("busy", "unknown")) >= 15 })
	close(sb.release)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// gateBooter holds its first decision until gate closes (the one worker is busy meanwhile) and records the
// order in which MACs were decided.
type gateBooter struct {
	gate, started chan struct{}
	mu            sync.Mutex
	order         []string
}

func (g *gateBooter) Arm(context.Context, net.HardwareAddr, Boot) (Boot, error) {
	return Boot{Action: ActionIgnore}, nil
}

func (g *gateBooter) Decide(ctx context.Context, hw net.HardwareAddr, _ Firmware) (Boot, error) {
	g.mu.Lock()
	g.order = append(g.order, hw.String())
	first := len(g.order) == 1
	g.mu.Unlock()
	if first {
		close(g.started)
		select {
		case <-g.gate:
		case <-ctx.Done():
		}
	}
	return Boot{Action: ActionIgnore}, nil
}

// A flood of unknown MACs fills the queue while the one worker is busy; a known MAC's DISCOVER that arrives
// after them is still queued (its own queue), answered before every queued unknown one, and no known packet
// is dropped. The offers go, as to a relay, to giaddr 127.0.0.2:67, where the test listens.
func TestDHCPKnownMACsAnsweredFirstWhenTheQueueIsFull(t *testing.T) {
	if os.Geteuid() != 0 {
		pxetest.Unavailable(t, "binding DHCP to a device and port 67 needs root")
	}
	relay := net.ParseIP("127.0.0.2").To4()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1) })
		return serr
	}}
	rc, err := lc.ListenPacket(context.Background(), "udp4", "127.0.0.2:67")
	if err != nil {
		t.Fatalf("listening as the relay: %v", err)
	}
	defer rc.Close()

	const queue, flood = 4, 6
	m := NewMetrics(prometheus.NewRegistry())
	g := &gateBooter{gate: make(chan struct{}), started: make(chan struct{})}
	const member = "52:54:00:aa:00:01"
	known := &KnownMACs{}
	known.Set([]string{member})
	d := &DHCP{Mode: ModeFull, Interface: "lo", ServerIP: net.ParseIP("127.0.0.1").To4(), Subnet: &net.IPNet{IP: net.IPv4(127, 0, 0, 0), Mask: net.CIDRMask(8, 32)},
		RangeStart: net.ParseIP("127.0.0.100"), RangeEnd: net.ParseIP("127.0.0.200"), Leases: &MemLeases{}, Booter: g,
		HTTPBase: "http://127.0.0.1:1", Workers: 1, Queue: queue, Port: 11067 + os.Getpid()%1000, Metrics: m, Known: known.Known}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	time.Sleep(200 * time.Millisecond)
	c, err := net.Dial("udp4", "127.0.0.1:"+itoa(d.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	unknown := func(i int) string { return fmt.Sprintf("02:00:00:00:00:%02x", i) }
	send := func(mac string) { c.Write(discover(mac, dhcpv4.WithRelay(relay)).ToBytes()) }
	busy := func(class string) float64 { return counter(m.DHCPDropped.WithLabelValues("busy", class)) }

	send(unknown(0))
	select {
	case <-g.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the worker never took the first packet")
	}
	for i := 1; i <= queue+flood; i++ {
		send(unknown(i))
	}
	pxetest.WaitFor(t, 10*time.Second, "the flood beyond the queue to be dropped", func() bool { return busy("unknown") == flood })
	send(member)
	// One more unknown packet after the member's: once it is counted as dropped, the member's was read
	// (one socket, read in order) and, since it was not dropped, queued.
	send(unknown(queue + flood + 1))
	pxetest.WaitFor(t, 10*time.Second, "the packet after the member's to be dropped", func() bool { return busy("unknown") == flood+1 })
	if n := busy("known"); n != 0 {
		t.Fatalf("%v packets of the known MAC dropped", n)
	}
	close(g.gate)

	var offers []string
	rc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	for len(offers) < 2+queue {
		n, _, err := rc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("after offers to %v: %v", offers, err)
		}
		r, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || r.MessageType() != dhcpv4.MessageTypeOffer {
			t.Fatalf("not an offer: %v %v", r, err)
		}
		offers = append(offers, r.ClientHWAddr.String())
	}
	want := []string{unknown(0), member, unknown(1), unknown(2), unknown(3), unknown(4)}
	if fmt.Sprint(offers) != fmt.Sprint(want) {
		t.Fatalf("offers went to %v, want %v (the member right after the packet that was being answered)", offers, want)
	}
}

func TestDHCPRefusesAnInterfaceWithoutTheAddress(t *testing.T) {
	d := &DHCP{Mode: ModeProxy, Interface: "lo", ServerIP: net.ParseIP("10.97.255.1").To4(), Booter: &Memory{}, HTTPBase: "http://10.97.255.1"}
	err := d.Serve(context.Background())
	if err == nil || !strings.Contains(err.Error(), "interface lo does not have the server address 10.97.255.1 (it has: 127.0.0.1/8") {
		t.Fatalf("err = %v", err)
	}
}

// The known set is reloaded in the background when stale: a machine stored after the daemon started becomes
// known without a restart, and a failed reload keeps the old set.
func TestKnownMACsReload(t *testing.T) {
	var mu sync.Mutex
	stored, fail := []string{"52:54:00:aa:00:01"}, false
	k := &KnownMACs{Every: time.Nanosecond, Load: func(context.Context) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			return nil, fmt.Errorf("database down")
		}
		return append([]string(nil), stored...), nil
	}}
	k.Set([]string{"52:54:00:AA:00:01"})
	member, later := net.HardwareAddr{0x52, 0x54, 0, 0xaa, 0, 1}, net.HardwareAddr{0x52, 0x54, 0, 0xaa, 0, 2}
	if !k.Known(member) || k.Known(later) {
		t.Fatalf("seeded set: member %v, later %v", k.Known(member), k.Known(later))
	}
	mu.Lock()
	stored = append(stored, later.String())
	mu.Unlock()
	pxetest.WaitFor(t, 10*time.Second, "the stored machine to become known", func() bool { return k.Known(later) })
	mu.Lock()
	fail = true
	mu.Unlock()
	for range 20 {
		k.Known(member)
		time.Sleep(5 * time.Millisecond)
	}
	if !k.Known(member) || !k.Known(later) {
		t.Fatal("a failed reload emptied the set")
	}
}
