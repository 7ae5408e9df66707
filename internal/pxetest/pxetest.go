// Package pxetest is the PXE test rig: a network namespace holding a bridge, a veth pair that puts the server
// side in the test's own namespace, tap devices for QEMU, client interfaces for real DHCP clients, and the
// kernel + busybox initramfs that stand in for NixOS netboot images (which cannot be built on a test machine).
// It needs root (namespaces, taps, ports 67/69). Without it the tests are skipped, except under CI=true, where
// they fail: CI must run them.
package pxetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Unavailable skips the test, or fails it under CI=true.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("nix8s: error: %s (CI=true: this test must run)", msg)
	}
	t.Skipf("%s", msg)
}

// Net is a bridge in its own network namespace, wired by a veth pair to the test's namespace, where the
// server listens on HostIf with ServerIP.
type Net struct {
	NS       string
	HostIf   string
	ServerIP net.IP
	Subnet   *net.IPNet
	// Prefix is "10.97.X." of the subnet, for addresses in tests.
	Prefix string
	id     string
	n      atomic.Int32 // names of clients and taps
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// NewNet creates a namespace, bridge and veth pair in a free 10.97.X.0/24; cleaned up when the test ends.
func NewNet(t testing.TB) *Net {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "PXE tests need root (network namespaces, taps, ports 67 and 69)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		Unavailable(t, "PXE tests need iproute2's ip")
	}
	n, cleanup, err := Setup("10.97.", 24)
	t.Cleanup(cleanup)
	if err != nil {
		Unavailable(t, "setting up the test network: %v", err)
	}
	return n
}

// Setup is NewNet outside tests (the benchmark): prefix "10.97." and bits 24 pick a free 10.97.X.0/24; bits
// 16 takes prefix as "A.B." whole. The returned cleanup removes what was made, also after an error.
func Setup(prefix string, bits int) (*Net, func(), error) {
	b := make([]byte, 3)
	rand.Read(b)
	id := hex.EncodeToString(b)
	p := prefix
	if bits == 24 {
		for range 50 {
			r, _ := rand.Int(rand.Reader, big.NewInt(250))
			p = fmt.Sprintf("%s%d.", prefix, r.Int64()+1)
			out, _ := exec.Command("ip", "-4", "-o", "addr").Output()
			if !strings.Contains(string(out), " "+p) {
				break
			}
		}
	} else {
		p = prefix + "0."
	}
	n := &Net{NS: "nx8s-" + id, HostIf: "nx8s" + id, Prefix: p, id: id}
	n.ServerIP = net.ParseIP(n.Prefix + "1").To4()
	_, n.Subnet, _ = net.ParseCIDR(fmt.Sprintf("%s1/%d", n.Prefix, bits))
	cleanup := func() {
		exec.Command("ip", "link", "del", n.HostIf).Run()
		exec.Command("ip", "netns", "del", n.NS).Run()
	}
	cidr := func(host string) string { return fmt.Sprintf("%s%s/%d", n.Prefix, host, bits) }
	steps := [][]string{
		{"ip", "netns", "add", n.NS},
		{"ip", "-n", n.NS, "link", "set", "lo", "up"},
		{"ip", "-n", n.NS, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"},
		{"ip", "netns", "exec", n.NS, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"},
		{"ip", "-n", n.NS, "link", "set", "br0", "up"},
		// The namespace's own address (.2): busybox tftp and wget run from it.
		{"ip", "-n", n.NS, "addr", "add", cidr("2"), "dev", "br0"},
		{"ip", "link", "add", n.HostIf, "type", "veth", "peer", "name", "up0", "netns", n.NS},
		{"ip", "-n", n.NS, "link", "set", "up0", "master", "br0", "up"},
		// IPv6 stays on at the server's side (a link-local address) to answer iPXE's router solicitations.
		{"sysctl", "-qw", "net.ipv6.conf." + n.HostIf + ".disable_ipv6=0"},
		{"sysctl", "-qw", "net.ipv6.conf." + n.HostIf + ".accept_ra=0"},
		{"ip", "addr", "add", cidr("1"), "dev", n.HostIf},
		{"ip", "link", "set", n.HostIf, "up"},
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			return nil, cleanup, err
		}
	}
	return n, cleanup, nil
}

// Command runs a program inside the namespace.
func (n *Net) Command(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.NS}, args...)...)
}

// Client adds an interface for a DHCP client inside the namespace, with mac, attached to the bridge; it
// returns the interface name.
func (n *Net) Client(t testing.TB, mac string) string {
	t.Helper()
	c := fmt.Sprintf("c%d", n.n.Add(1))
	for _, s := range [][]string{
		{"ip", "-n", n.NS, "link", "add", c, "address", mac, "type", "veth", "peer", "name", c + "b"},
		{"ip", "-n", n.NS, "link", "set", c + "b", "master", "br0", "up"},
		{"ip", "-n", n.NS, "link", "set", c, "up"},
	} {
		if err := run(s...); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// Tap adds a tap device on the bridge for a VM and returns its name.
func (n *Net) Tap(t testing.TB) string {
	t.Helper()
	tap := fmt.Sprintf("tap%d", n.n.Add(1))
	for _, s := range [][]string{
		{"ip", "-n", n.NS, "tuntap", "add", tap, "mode", "tap"},
		{"ip", "-n", n.NS, "link", "set", tap, "master", "br0", "up"},
	} {
		if err := run(s...); err != nil {
			Unavailable(t, "creating a tap device: %v", err)
		}
	}
	return tap
}

// WaitFor polls f until it is true or the timeout passes (an error, never a silent pass).
func WaitFor(t testing.TB, timeout time.Duration, what string, f func() bool) {
	t.Helper()
	end := time.Now().Add(timeout)
	for time.Now().Before(end) {
		if f() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", timeout, what)
}

// SiteDHCP runs busybox udhcpd on the bridge, handing out .50-.90: the site's DHCP server that proxy mode
// coexists with. It is stopped when the test ends.
func (n *Net) SiteDHCP(t testing.TB) {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "udhcpd.conf")
	os.WriteFile(filepath.Join(dir, "leases"), nil, 0o644)
	c := fmt.Sprintf("start %s50\nend %s90\ninterface br0\nlease_file %s\noption subnet 255.255.255.0\noption lease 600\n",
		n.Prefix, n.Prefix, filepath.Join(dir, "leases"))
	if err := os.WriteFile(conf, []byte(c), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := n.Command(context.Background(), "busybox", "udhcpd", "-f", conf)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		Unavailable(t, "starting busybox udhcpd: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("udhcpd: %s", out.String())
		}
	})
}
