package pxe

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// A real client that checks its offered address by ARP (busybox udhcpc -a) finds another host on it (a
// squatter interface in the namespace with the first address of the range) and declines it: it ends up with
// another address, the declined one is held out of the range and counted, and the next client is not
// offered it either.
func TestRealDHCPClientDeclinesAnAddressInUse(t *testing.T) {
	r := startRig(t, ModeFull)
	inUse := net.ParseIP(r.net.Prefix + "100").To4() // the first address the range offers
	squatter := r.net.Client(t, "52:54:00:5e:00:01")
	if out, err := r.net.Command(context.Background(), "ip", "addr", "add", inUse.String()+"/24", "dev", squatter).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	env := udhcpc(t, r.net, "52:54:00:aa:10:01", "-a200", "-A", "1")
	got := net.ParseIP(env["ip"])
	if got == nil || got.Equal(inUse) || !inRange(got, net.ParseIP(r.net.Prefix+"100"), net.ParseIP(r.net.Prefix+"150")) {
		t.Fatalf("udhcpc -a bound %q; want an address of the range other than %v, which another host has", env["ip"], inUse)
	}
	if !r.leases.Declined(inUse) {
		t.Fatalf("%v declined by the client is not held out", inUse)
	}
	if n := counter(r.metrics.DHCPConflicts.WithLabelValues(CauseDeclined)); n != 1 {
		t.Fatalf("nix8s_pxe_dhcp_conflicts_total{cause=declined} = %v, want 1", n)
	}
	// The cursor of the range comes back to it after 51 addresses; a client asking for it by name (udhcpc -r)
	// is the one way to be offered it at once, and it is refused too.
	env = udhcpc(t, r.net, "52:54:00:aa:10:02", "-r", inUse.String())
	if env["ip"] == "" || env["ip"] == inUse.String() {
		t.Fatalf("a client asking for the held-out %v bound %q", inUse, env["ip"])
	}
}

// Two DHCP conversations of one MAC in flight: a DISCOVER with one client identifier that does not go on
// (written by the test into the namespace: no real client leaves its conversation hanging on purpose), then a
// real client with the same MAC and another identifier (udhcpc -x 61). The server notices the second client
// and tells the watcher (here the test's; in nix8sd the store adapter, which locks a member). The same real
// client run twice (a machine rebooting) is no conflict.
func TestRealDHCPClientsTwoConversationsOfOneMAC(t *testing.T) {
	r := startRig(t, ModeFull)
	const mac = "52:54:00:aa:11:01"
	udhcpc(t, r.net, mac, "-x", "0x3d:01525400aa1101")
	udhcpc(t, r.net, mac, "-x", "0x3d:01525400aa1101")
	if n := counter(r.metrics.DHCPConflicts.WithLabelValues(CauseTwoClients)); n != 0 {
		t.Fatalf("one client booting twice counted as two clients (%v)", n)
	}
	sendHangingDiscover(t, r, mac, []byte{1, 0x52, 0x54, 0, 0xaa, 0x11, 0x01})
	udhcpc(t, r.net, mac, "-x", "0x3d:ff00000001")
	if n := counter(r.metrics.DHCPConflicts.WithLabelValues(CauseTwoClients)); n != 1 {
		t.Fatalf("nix8s_pxe_dhcp_conflicts_total{cause=two-clients-dhcp} = %v, want 1", n)
	}
}

// sendHangingDiscover broadcasts one DISCOVER of mac with client identifier id from the namespace's bridge
// and waits for its offer, so that the conversation is in flight when it returns.
func sendHangingDiscover(t *testing.T, r *rig, mac string, id []byte) {
	t.Helper()
	conn, err := r.net.DHCPClientConn("br0", 68)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hw, _ := net.ParseMAC(mac)
	m, err := dhcpv4.NewDiscovery(hw, dhcpv4.WithGeneric(dhcpv4.OptionClientIdentifier, id))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteTo(m.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: 67}); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	for {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no offer to the hanging DISCOVER: %v", err)
		}
		if o, err := dhcpv4.FromBytes(buf[:n]); err == nil && o.TransactionID == m.TransactionID && o.MessageType() == dhcpv4.MessageTypeOffer {
			return
		}
	}
}
