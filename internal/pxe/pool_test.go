package pxe

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nix8s/nix8s/internal/pxetest"
)

type slowBooter struct{ release chan struct{} }

func (s slowBooter) Boot(ctx context.Context, _ net.HardwareAddr, _ Firmware) (Boot, error) {
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
	pxetest.WaitFor(t, 5*time.Second, "dropped packets to be counted", func() bool { return counter(m.DHCPDropped.WithLabelValues("busy")) >= 15 })
	close(sb.release)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestDHCPRefusesAnInterfaceWithoutTheAddress(t *testing.T) {
	d := &DHCP{Mode: ModeProxy, Interface: "lo", ServerIP: net.ParseIP("10.97.255.1").To4(), Booter: &Memory{}, HTTPBase: "http://10.97.255.1"}
	err := d.Serve(context.Background())
	if err == nil || !strings.Contains(err.Error(), "interface lo does not have the server address 10.97.255.1 (it has: 127.0.0.1/8") {
		t.Fatalf("err = %v", err)
	}
}
