package storeboot

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/nix8s/nix8s"
	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/inventory"
	"github.com/nix8s/nix8s/internal/pxe"
	"github.com/nix8s/nix8s/internal/pxetest"
	"github.com/nix8s/nix8s/internal/store"
	"github.com/nix8s/nix8s/internal/store/storetest"
)

// dhcpRig is the daemon's DHCP on the adapter and PostgreSQL, serving the pxetest namespace in full mode,
// with a cluster whose members' plan addresses are in the namespace's subnet.
type dhcpRig struct {
	net     *pxetest.Net
	st      *store.Store
	a       *Adapter
	metrics *pxe.Metrics
	locks   map[string]int // nix8s_machine_locks_total by cause, as the store's hook counts it
	macs    map[string]string
	plan    map[string]net.IP
}

func startDHCPRig(t *testing.T) *dhcpRig {
	t.Helper()
	n := pxetest.NewNet(t)
	ctx := context.Background()
	r := &dhcpRig{net: n, st: storetest.Open(t), metrics: pxe.NewMetrics(prometheus.NewRegistry()), locks: map[string]int{},
		macs: map[string]string{"s1": "52:54:00:d4:00:01", "a1": "52:54:00:d4:00:02"},
		plan: map[string]net.IP{"s1": net.ParseIP(n.Prefix + "21").To4(), "a1": net.ParseIP(n.Prefix + "22").To4()}}
	r.st.Hooks.Locked = func(cause string) { r.locks[cause]++ }
	cfg := fmt.Sprintf(`{"nodes": {"vm": {"install": {"disk": "/dev/vda"}}}, "clusters": {"lab": {"members": {
	  "s1": {"node": "vm", "role": "server", "ip": %q, "network": {"mac": %q}},
	  "a1": {"node": "vm", "role": "agent", "ip": %q, "network": {"mac": %q}}}}}}`,
		r.plan["s1"], r.macs["s1"], r.plan["a1"], r.macs["a1"])
	var c map[string]any
	if err := json.Unmarshal([]byte(cfg), &c); err != nil {
		t.Fatal(err)
	}
	if _, err := r.st.Modify(ctx, "test", func(*store.Snapshot) (map[string]any, error) { return c, nil }); err != nil {
		t.Fatal(err)
	}
	ev, err := core.New(core.Options{Lib: nix8s.Lib, CacheDir: filepath.Join(t.TempDir(), "cache")})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testLog{t}, nil))
	r.a = &Adapter{Store: r.st, Plans: inventory.NewPlans(r.st, ev, nil), Images: images{}, DiscoveryImage: "discovery", ArmOnBoot: true, Logger: log}
	for m, mac := range r.macs {
		if err := EnsureAssigned(ctx, r.st, mac, "lab", m); err != nil {
			t.Fatal(err)
		}
	}
	// The Booter is the adapter, as in nix8sd: it is the DHCP server's watcher too (no Watcher set).
	d := &pxe.DHCP{Mode: pxe.ModeFull, Interface: n.HostIf, ServerIP: n.ServerIP, Subnet: n.Subnet,
		RangeStart: net.ParseIP(n.Prefix + "100"), RangeEnd: net.ParseIP(n.Prefix + "150"), Gateway: n.ServerIP,
		Leases: Leases{Store: r.st}, Booter: r.a, HTTPBase: "http://" + n.ServerIP.String() + ":8081", Metrics: r.metrics, Logger: log}
	if err := d.Listen(); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Serve(sctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return r
}

type testLog struct{ t *testing.T }

func (w testLog) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// udhcpc runs busybox udhcpc on a new client interface with mac; it returns the address it bound ("" when it
// got none) and its output.
func (r *dhcpRig) udhcpc(t *testing.T, mac string, extra ...string) (string, string) {
	t.Helper()
	iface := r.net.Client(t, mac)
	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	os.WriteFile(script, []byte("#!/bin/sh\n[ \"$1\" = bound ] && echo \"$ip\" > "+dir+"/ip\nexit 0\n"), 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"busybox", "udhcpc", "-i", iface, "-s", script, "-q", "-n", "-f", "-t", "3", "-T", "1", "-A", "1"}, extra...)
	out, _ := r.net.Command(ctx, args...).CombinedOutput()
	ip, _ := os.ReadFile(filepath.Join(dir, "ip"))
	return strings.TrimSpace(string(ip)), string(out)
}

func (r *dhcpRig) squat(t *testing.T, ip net.IP) {
	t.Helper()
	iface := r.net.Client(t, "52:54:00:5e:00:99")
	if out, err := r.net.Command(context.Background(), "ip", "addr", "add", ip.String()+"/24", "dev", iface).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
}

func lastEvent(t *testing.T, st *store.Store, mac, kind string) *store.Event {
	t.Helper()
	events, err := st.Events(context.Background(), mac, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var last *store.Event
	for _, e := range events {
		if e.Kind == kind {
			last = e
		}
	}
	return last
}

// A member's plan address taken by another host: the member's real DHCP client (busybox udhcpc -a, which
// checks the offered address by ARP) declines it, and the machine is locked with an event naming the address
// (nix8s_machine_locks_total{cause="address-in-use"}); the plan address is not held out, since the member has
// no other.
func TestMemberDeclinesItsPlanAddress(t *testing.T) {
	r := startDHCPRig(t)
	ctx := context.Background()
	r.squat(t, r.plan["s1"])
	// udhcpc declines and starts over, each time offered the plan address again: it runs until the test
	// has seen the lock and one more decline, then it is stopped.
	iface := r.net.Client(t, r.macs["s1"])
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := r.net.Command(cctx, "busybox", "udhcpc", "-i", iface, "-s", "/bin/true", "-f", "-a200", "-A", "1", "-T", "1")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pxetest.WaitFor(t, 30*time.Second, "the member to be locked", func() bool {
		m, err := r.st.Machine(ctx, r.macs["s1"])
		return err == nil && m.Locked
	})
	pxetest.WaitFor(t, 30*time.Second, "a second decline", func() bool {
		return counterValue(t, r.metrics.DHCPConflicts.WithLabelValues(pxe.CauseAddressInUse)) >= 2
	})
	cmd.Process.Kill()
	cmd.Wait()
	if !strings.Contains(out.String(), "declining") {
		t.Fatalf("udhcpc did not decline:\n%s", out.String())
	}
	e := lastEvent(t, r.st, r.macs["s1"], "locked")
	if e == nil || !strings.Contains(e.Reason, "declined its plan address "+r.plan["s1"].String()) || !strings.Contains(e.Reason, "lab-s1") {
		t.Fatalf("locked event %+v; want the plan address and the member named", e)
	}
	if r.locks[pxe.CauseAddressInUse] != 1 {
		t.Fatalf("locks by cause %v, want one address-in-use (repeated declines lock once)", r.locks)
	}
	if q, err := r.st.Quarantined(ctx); err != nil || len(q) != 0 {
		t.Fatalf("quarantined %v, %v; a plan address is never held out", q, err)
	}
	// Locked, it is never armed: its script waits.
	if b := bootOf(t, r.a, r.macs["s1"], pxe.FirmwareIPXE, pxe.ActionWait); !strings.Contains(b.Message, "locked") {
		t.Fatalf("locked member's script: %+v", b)
	}
}

// A range address taken by another host, declined by a real client of a known but unassigned machine: held
// out in PostgreSQL (the next clients never get it), and a conflict event on the machine, not a lock (it is
// no member: nothing of a cluster's is at stake).
func TestDeclinedRangeAddressIsQuarantined(t *testing.T) {
	r := startDHCPRig(t)
	ctx := context.Background()
	inUse := net.ParseIP(r.net.Prefix + "100").To4()
	r.squat(t, inUse)
	const mac = "52:54:00:d4:01:01"
	if _, err := r.st.CreateMachine(ctx, "test", mac, nil, "test"); err != nil {
		t.Fatal(err)
	}
	ip, out := r.udhcpc(t, mac, "-a200")
	if ip == "" || ip == inUse.String() {
		t.Fatalf("udhcpc -a bound %q, want another address than %v:\n%s", ip, inUse, out)
	}
	q, err := r.st.Quarantined(ctx)
	if err != nil || q[inUse.String()].Before(time.Now().Add(50*time.Minute)) {
		t.Fatalf("quarantined %v, %v; want %v held out for an hour", q, err, inUse)
	}
	if ip, _ := r.udhcpc(t, "52:54:00:d4:01:02", "-r", inUse.String()); ip == "" || ip == inUse.String() {
		t.Fatalf("a client asking for the held-out %v bound %q", inUse, ip)
	}
	m, _ := r.st.Machine(ctx, mac)
	e := lastEvent(t, r.st, mac, "conflict")
	if m.Locked || e == nil || !strings.Contains(e.Reason, "declined "+inUse.String()) || !strings.Contains(string(e.Details), `"cause": "declined"`) {
		t.Fatalf("locked %v, event %+v; want an unlocked machine with a conflict event naming %v", m.Locked, e, inUse)
	}
	if l, _ := r.st.LeaseByMAC(ctx, mac); l == nil || l.IP.String() != ip {
		t.Fatalf("lease of the decliner %+v, want %s", l, ip)
	}
}

// Two DHCP conversations of a member's MAC in flight from different clients lock the member: one DISCOVER
// that does not go on (written by the test: no real client hangs on purpose) and a real udhcpc with the same
// MAC and another client identifier. The agent's real client booting twice with its own identifier (a
// reboot) locks nothing.
func TestTwoDHCPClientsOfOneMemberLockIt(t *testing.T) {
	r := startDHCPRig(t)
	ctx := context.Background()
	for range 2 {
		if ip, out := r.udhcpc(t, r.macs["a1"], "-x", "0x3d:01525400d40002"); ip != r.plan["a1"].String() {
			t.Fatalf("agent: bound %q, want its plan address:\n%s", ip, out)
		}
	}
	if m, _ := r.st.Machine(ctx, r.macs["a1"]); m.Locked {
		t.Fatal("a member booting twice was locked")
	}

	conn, err := r.net.DHCPClientConn("br0", 68)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hw, _ := net.ParseMAC(r.macs["s1"])
	m, _ := dhcpv4.NewDiscovery(hw, dhcpv4.WithGeneric(dhcpv4.OptionClientIdentifier, append([]byte{1}, hw...)))
	if _, err := conn.WriteTo(m.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: 67}); err != nil {
		t.Fatal(err)
	}
	pxetest.WaitFor(t, 10*time.Second, "the hanging DISCOVER's offer", func() bool {
		l, _ := r.st.LeaseByMAC(ctx, r.macs["s1"])
		return l != nil
	})
	r.udhcpc(t, r.macs["s1"], "-x", "0x3d:ff00c0ffee")
	mach, _ := r.st.Machine(ctx, r.macs["s1"])
	e := lastEvent(t, r.st, r.macs["s1"], "locked")
	if !mach.Locked || e == nil || !strings.Contains(e.Reason, "two DHCP clients claim MAC "+r.macs["s1"]) || !strings.Contains(e.Reason, "ff00c0ffee") {
		t.Fatalf("locked %v, event %+v; want the member locked naming both clients", mach.Locked, e)
	}
	if r.locks[pxe.CauseTwoClients] != 1 {
		t.Fatalf("locks by cause %v", r.locks)
	}
}

// Discovery per segment: machines record the segment their DHCP came from (a relay's address, here in
// packets the test writes, since no real relay runs here; the interface's subnet for a directly attached
// client), and a flood of new MACs on one segment fills that segment's share only: a machine of another
// segment, and one directly attached, are still discovered. Refusals are counted by segment.
func TestDiscoveryIsBoundedPerSegment(t *testing.T) {
	st, a := setup(t)
	a.MaxDiscovered, a.MaxDiscoveredPerSegment = 10, 3
	ctx := t.Context()
	_, subnet, _ := net.ParseCIDR("192.168.1.0/24")
	d := &pxe.DHCP{Mode: pxe.ModeFull, ServerIP: net.ParseIP("192.168.1.1"), Subnet: subnet,
		RangeStart: net.ParseIP("192.168.1.100"), RangeEnd: net.ParseIP("192.168.1.200"), Leases: Leases{Store: st},
		Booter: a, HTTPBase: "http://192.168.1.1:8081", MaxOffers: 100}
	metrics := pxe.NewMetrics(nil)
	h := &pxe.HTTP{Booter: a, Machines: a, BaseURL: "http://192.168.1.1:8081", ReportRate: rate.Inf, DiscoverRate: rate.Inf, Metrics: metrics}
	srv := httptest.NewServer(h)
	defer srv.Close()
	dhcpFrom := func(mac string, relay net.IP) {
		t.Helper()
		hw, _ := net.ParseMAC(mac)
		mods := []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001"))}
		if relay != nil {
			mods = append(mods, dhcpv4.WithRelay(relay))
		}
		m, _ := dhcpv4.NewDiscovery(hw, mods...)
		if _, err := d.Handle(ctx, m, false); err != nil {
			t.Fatal(err)
		}
	}
	report := func(mac string) int {
		t.Helper()
		res, err := http.Post(srv.URL+"/machine/v1/discover?mac="+mac, "application/json", strings.NewReader(`{"mac":"`+mac+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	flooded, other := net.ParseIP("10.96.1.1"), net.ParseIP("10.96.2.1")
	created := 0
	for i := range 8 {
		mac := fmt.Sprintf("02:00:00:01:00:%02x", i)
		dhcpFrom(mac, flooded)
		if report(mac) == 204 {
			created++
		}
	}
	if created != 3 {
		t.Fatalf("flood of 8 on segment %v: %d discovered, want the segment's 3", flooded, created)
	}
	if n := counterValue(t, metrics.DiscoverFull.WithLabelValues("10.96.1.1")); n != 5 {
		t.Fatalf("nix8s_pxe_discover_refused_total{segment=10.96.1.1} = %v, want 5", n)
	}
	const far, near = "02:00:00:02:00:01", "02:00:00:03:00:01"
	dhcpFrom(far, other)
	dhcpFrom(near, nil)
	for _, mac := range []string{far, near} {
		if code := report(mac); code != 204 {
			t.Fatalf("%s of another segment: %d, want discovered", mac, code)
		}
	}
	for mac, want := range map[string]string{far: "10.96.2.1", near: "192.168.1.0/24", "02:00:00:01:00:00": "10.96.1.1"} {
		m, err := st.Machine(ctx, mac)
		if err != nil || m.Segment == nil || *m.Segment != want {
			t.Fatalf("machine %s: segment %v (%v), want %s", mac, m.Segment, err, want)
		}
	}
	// No DHCP seen: the segment is not known, and the unknown ones share one segment's cap.
	unknown := 0
	for i := range 5 {
		if report(fmt.Sprintf("02:00:00:04:00:%02x", i)) == 204 {
			unknown++
		}
	}
	if unknown != 3 || counterValue(t, metrics.DiscoverFull.WithLabelValues("unknown")) != 2 {
		t.Fatalf("5 reports without DHCP: %d discovered, want 3 and 2 refused as unknown", unknown)
	}
	// The overall cap still holds across segments: 3 + 1 + 1 + 3 = 8 of 10.
	for i, relay := range []string{"10.96.5.1", "10.96.6.1", "10.96.7.1"} {
		mac := fmt.Sprintf("02:00:00:05:00:%02x", i)
		dhcpFrom(mac, net.ParseIP(relay))
		if code := report(mac); (i < 2) != (code == 204) {
			t.Fatalf("report %d beyond the segments' shares: %d", i, code)
		}
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 { return counter(t, c) }
