package pxe

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"
)

// watcher records what the DHCP server tells it.
type watcher struct {
	mu        sync.Mutex
	segments  map[string]string
	conflicts []Conflict
}

func (w *watcher) Segment(mac net.HardwareAddr, seg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.segments == nil {
		w.segments = map[string]string{}
	}
	w.segments[mac.String()] = seg
}

func (w *watcher) Conflict(_ context.Context, _ net.HardwareAddr, c Conflict) (string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.conflicts = append(w.conflicts, c)
	return "event", nil
}

func (w *watcher) causes() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, c := range w.conflicts {
		out = append(out, c.Cause)
	}
	return out
}

func fullDHCP(t *testing.T, w *watcher) *DHCP {
	t.Helper()
	_, n, _ := net.ParseCIDR("10.97.0.0/24")
	return &DHCP{Mode: ModeFull, ServerIP: net.ParseIP("10.97.0.1").To4(), Subnet: n, RangeStart: net.ParseIP("10.97.0.100"),
		RangeEnd: net.ParseIP("10.97.0.131"), Leases: &MemLeases{}, Booter: &Memory{DiscoveryImage: "disc"}, HTTPBase: "http://10.97.0.1:8081",
		Watcher: w, Metrics: NewMetrics(prometheus.NewRegistry())}
}

// dhcpPacket is a DHCP packet of mac with transaction ID xid, of type typ, with the identifiers of marks.
func dhcpPacket(t *testing.T, mac string, typ dhcpv4.MessageType, xid byte, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	hw, _ := net.ParseMAC(mac)
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(typ),
		dhcpv4.WithTransactionID(dhcpv4.TransactionID{xid, xid, xid, xid})}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func clientID(id string) dhcpv4.Modifier {
	return dhcpv4.WithGeneric(dhcpv4.OptionClientIdentifier, []byte(id))
}

func uuid97(b ...byte) dhcpv4.Modifier {
	return dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, append([]byte{0}, b...))
}

// The rule for two DHCP conversations of one MAC (docs/pxe.md "Conflicts on DHCP"): another transaction while
// the first is in flight, and an identifier both send with different values. Retransmissions, a client
// starting over, the stages of one machine's boot (firmware, iPXE, Linux), a machine rebooting and a UUID in
// the other byte order are no conflict.
func TestDHCPTwoConversationsOfOneMAC(t *testing.T) {
	const mac = "52:54:00:cc:00:01"
	u := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	uSwapped := []byte{4, 3, 2, 1, 6, 5, 8, 7, 9, 10, 11, 12, 13, 14, 15, 16}
	other := []byte{16, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 1}
	type step struct {
		typ  dhcpv4.MessageType
		xid  byte
		mods []dhcpv4.Modifier
		wait time.Duration // before this packet
	}
	disc, req := dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest
	tests := []struct {
		name  string
		steps []step
		want  string // the conflict's "differs", "" for none
	}{
		{"retransmissions of one conversation", []step{{disc, 1, []dhcpv4.Modifier{clientID("a")}, 0}, {disc, 1, []dhcpv4.Modifier{clientID("a")}, 4 * time.Second},
			{disc, 1, []dhcpv4.Modifier{clientID("a")}, 8 * time.Second}}, ""},
		{"the same client starting over", []step{{disc, 1, []dhcpv4.Modifier{clientID("a")}, 0}, {disc, 2, []dhcpv4.Modifier{clientID("a")}, time.Second}}, ""},
		{"firmware then iPXE: only iPXE sends a client identifier, the UUID in the other byte order", []step{
			{disc, 1, []dhcpv4.Modifier{uuid97(u...)}, 0}, {disc, 2, []dhcpv4.Modifier{uuid97(uSwapped...), clientID("\x01RT\x00\xcc\x00\x01")}, 2 * time.Second}}, ""},
		{"iPXE answered, then Linux with another client identifier", []step{
			{disc, 1, []dhcpv4.Modifier{clientID("ipxe")}, 0}, {req, 1, []dhcpv4.Modifier{clientID("ipxe")}, 0},
			{disc, 2, []dhcpv4.Modifier{clientID("linux"), dhcpv4.WithOption(dhcpv4.OptHostName("nixos"))}, time.Second}}, ""},
		{"a conversation silent for longer than the window", []step{{disc, 1, []dhcpv4.Modifier{clientID("a")}, 0},
			{disc, 2, []dhcpv4.Modifier{clientID("b")}, convWindow + time.Second}}, ""},
		{"two clients, other client identifiers", []step{{disc, 1, []dhcpv4.Modifier{clientID("a")}, 0}, {disc, 2, []dhcpv4.Modifier{clientID("b")}, time.Second},
			{disc, 1, []dhcpv4.Modifier{clientID("a")}, time.Second}, {disc, 2, []dhcpv4.Modifier{clientID("b")}, time.Second}}, "client identifier (option 61)"},
		{"two clients, other UUIDs", []step{{disc, 1, []dhcpv4.Modifier{uuid97(u...)}, 0}, {disc, 2, []dhcpv4.Modifier{uuid97(other...)}, time.Second}},
			"client machine identifier (option 97)"},
		{"two clients, other host names", []step{{disc, 1, []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptHostName("real"))}, 0},
			{req, 2, []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptHostName("spoofer"))}, time.Second}}, "host name (option 12)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := &watcher{}
			d := fullDHCP(t, w)
			now := time.Now()
			var conflicts []*Conflict
			for _, s := range tc.steps {
				now = now.Add(s.wait)
				m := dhcpPacket(t, mac, s.typ, s.xid, s.mods...)
				if c := d.converse(m.ClientHWAddr, m, now); c != nil {
					conflicts = append(conflicts, c)
				}
				if s.typ == req { // the server's ACK ends the conversation
					d.answered(m.ClientHWAddr, m.TransactionID)
				}
			}
			switch {
			case tc.want == "" && len(conflicts) > 0:
				t.Fatalf("conflict where there is none: %+v", conflicts[0])
			case tc.want != "" && len(conflicts) != 1:
				t.Fatalf("%d conflicts, want exactly 1 (reported once per pair of conversations)", len(conflicts))
			case tc.want != "":
				c := conflicts[0]
				if c.Cause != CauseTwoClients || !c.Lock || c.Details["differs"] != tc.want || !strings.Contains(c.Reason, "two DHCP clients claim MAC "+mac) {
					t.Fatalf("conflict %+v, want %s differing", c, tc.want)
				}
			}
		})
	}
}

// Through Handle, the conflict reaches the watcher and the metric; an ACK ends a conversation.
func TestDHCPTwoConversationsThroughHandle(t *testing.T) {
	w := &watcher{}
	d := fullDHCP(t, w)
	ctx := context.Background()
	const mac = "52:54:00:cc:00:02"
	if r, err := d.Handle(ctx, dhcpPacket(t, mac, dhcpv4.MessageTypeDiscover, 1, clientID("a")), false); err != nil || r == nil {
		t.Fatalf("offer: %v %v", r, err)
	}
	if _, err := d.Handle(ctx, dhcpPacket(t, mac, dhcpv4.MessageTypeDiscover, 2, clientID("b")), false); err != nil {
		t.Fatal(err)
	}
	if got := w.causes(); len(got) != 1 || got[0] != CauseTwoClients {
		t.Fatalf("conflicts %v", got)
	}
	if n := counter(d.Metrics.DHCPConflicts.WithLabelValues(CauseTwoClients)); n != 1 {
		t.Fatalf("nix8s_pxe_dhcp_conflicts_total{cause=two-clients-dhcp} = %v", n)
	}
	// One client's whole exchange, then another's: not in flight together.
	const mac2 = "52:54:00:cc:00:03"
	r, _ := d.Handle(ctx, dhcpPacket(t, mac2, dhcpv4.MessageTypeDiscover, 5, clientID("a")), false)
	ack, _ := d.Handle(ctx, dhcpPacket(t, mac2, dhcpv4.MessageTypeRequest, 5, clientID("a"), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(r.YourIPAddr)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(d.ServerIP))), false)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("ack: %v", ack)
	}
	d.Handle(ctx, dhcpPacket(t, mac2, dhcpv4.MessageTypeDiscover, 6, clientID("b")), false)
	if got := w.causes(); len(got) != 1 {
		t.Fatalf("conflicts after a finished exchange: %v", got)
	}
}

// A DHCPDECLINE of an address of the range (RFC 2131 4.4.1): the client's lease goes, the address is not
// offered again while it is held out, and the conflict is counted and reported; a DECLINE of an address the
// client does not hold or of another server changes nothing; the quarantine is bounded (no draining of the
// range with declines from made-up MACs); a member declining its plan address asks for a lock and is not
// quarantined (it has no other address).
func TestDHCPDecline(t *testing.T) {
	w := &watcher{}
	d := fullDHCP(t, w)
	leases := d.Leases.(*MemLeases)
	ctx := context.Background()
	offer := func(mac string, xid byte) net.IP {
		t.Helper()
		r, err := d.Handle(ctx, dhcpPacket(t, mac, dhcpv4.MessageTypeDiscover, xid), false)
		if err != nil || r == nil {
			t.Fatalf("offer to %s: %v %v", mac, r, err)
		}
		return r.YourIPAddr
	}
	decline := func(mac string, ip net.IP, server net.IP) {
		t.Helper()
		if r, err := d.Handle(ctx, dhcpPacket(t, mac, dhcpv4.MessageTypeDecline, 9, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip)),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(server))), false); err != nil || r != nil {
			t.Fatalf("decline: %v %v; want no answer", r, err)
		}
	}
	const a = "52:54:00:cc:01:01"
	ip := offer(a, 1)
	decline("52:54:00:cc:01:99", ip, d.ServerIP) // not its lease
	decline(a, ip, net.ParseIP("10.97.0.254"))   // another server's offer
	if leases.Declined(ip) || len(w.causes()) != 0 {
		t.Fatalf("a decline of another's lease or another server's offer held %v out (%v)", ip, w.causes())
	}
	decline(a, ip, d.ServerIP)
	if !leases.Declined(ip) {
		t.Fatalf("%v declined by its holder is not held out", ip)
	}
	if l, _ := leases.ByMAC(ctx, a); l != nil {
		t.Fatalf("the decliner keeps its lease %v", l.IP)
	}
	if got := w.causes(); len(got) != 1 || got[0] != CauseDeclined || w.conflicts[0].Lock {
		t.Fatalf("conflicts %+v, want one declined without a lock", w.conflicts)
	}
	if n := counter(d.Metrics.DHCPConflicts.WithLabelValues(CauseDeclined)); n != 1 {
		t.Fatalf("nix8s_pxe_dhcp_conflicts_total{cause=declined} = %v", n)
	}
	// The decliner and everybody else get other addresses while it is held out.
	for i := range 6 {
		mac := net.HardwareAddr{0x52, 0x54, 0, 0xcc, 2, byte(i)}.String()
		if got := offer(mac, byte(i)); got.Equal(ip) {
			t.Fatalf("the declined %v was offered to %s", ip, mac)
		}
	}
	if got := offer(a, 30); got.Equal(ip) {
		t.Fatalf("the declined %v was offered to its decliner again", ip)
	}

	// Bounded: with 1 held out, 7 more declines reach the limit (8 for this 32-address range), the 8th holds nothing.
	held := 1
	for i := range d.offerLimit() {
		mac := net.HardwareAddr{0x52, 0x54, 0, 0xcc, 3, byte(i)}.String()
		got := offer(mac, byte(40+i))
		decline(mac, got, d.ServerIP)
		if leases.Declined(got) {
			held++
		}
	}
	if held != d.offerLimit() {
		t.Fatalf("%d addresses held out, want the limit %d", held, d.offerLimit())
	}

	// A member's plan address: reported with a lock, named in the reason, not held out.
	const member = "52:54:00:cc:04:01"
	mem := &Memory{}
	mem.Assign(member, "lab-s1", "installer", net.ParseIP("10.97.0.21"))
	if _, _, err := mem.ArmInstall(member); err != nil {
		t.Fatal(err)
	}
	d.Booter = mem
	w.conflicts = nil
	decline(member, net.ParseIP("10.97.0.21"), d.ServerIP)
	if len(w.conflicts) != 1 || w.conflicts[0].Cause != CauseAddressInUse || !w.conflicts[0].Lock ||
		!strings.Contains(w.conflicts[0].Reason, "declined its plan address 10.97.0.21") || !strings.Contains(w.conflicts[0].Reason, "lab-s1") {
		t.Fatalf("plan address declined: %+v", w.conflicts)
	}
	if leases.Declined(net.ParseIP("10.97.0.21")) {
		t.Fatal("a member's plan address was held out")
	}
}

// Where a MAC's packets come from: the relay's address for a relayed packet, the interface's subnet otherwise;
// the watcher hears it for every packet.
func TestDHCPSegments(t *testing.T) {
	w := &watcher{}
	d := fullDHCP(t, w)
	ctx := context.Background()
	d.Handle(ctx, discover("52:54:00:cc:05:01", dhcpv4.WithRelay(net.ParseIP("10.96.0.2"))), false)
	d.Handle(ctx, discover("52:54:00:cc:05:02"), false)
	if got := w.segments["52:54:00:cc:05:01"]; got != "10.96.0.2" {
		t.Errorf("relayed: segment %q, want the relay's address", got)
	}
	if got := w.segments["52:54:00:cc:05:02"]; got != "10.97.0.0/24" {
		t.Errorf("directly attached: segment %q, want the subnet", got)
	}
}
