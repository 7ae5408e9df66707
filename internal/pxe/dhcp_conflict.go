package pxe

// What the DHCP server notices beyond its answers (docs/pxe.md, "Conflicts on DHCP" and "Discovery per
// segment"): the segment each MAC's packets come from, a client declining an address another host answers ARP
// for, and two DHCP conversations of one MAC in flight from different clients.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// DHCPWatcher hears what the DHCP server learns of machines (storeboot.Adapter is one).
type DHCPWatcher interface {
	// Segment says a DHCP packet of mac came from segment (DHCP.SegmentOf). It runs for every packet, so it
	// must be cheap and in memory.
	Segment(mac net.HardwareAddr, segment string)
	// Conflict tells of c, noticed about mac: the watcher locks the machine (c.Lock, for a member) or records
	// an event, and says which it did ("locked", "locked already", "event", "event repeated", "" when it knows
	// no such machine), for the server's log line.
	Conflict(ctx context.Context, mac net.HardwareAddr, c Conflict) (string, error)
}

// Conflict is something the DHCP server noticed that a MAC alone does not explain.
type Conflict struct {
	// Cause is the metric's and lock's label: address-in-use (a member declined its plan address: another
	// host sits on it), declined (an address of the range was declined), two-clients-dhcp (two conversations
	// of the MAC in flight from different clients).
	Cause string
	// Reason is the event's, naming the addresses or both clients.
	Reason string
	// Lock asks for the machine to be locked when it is assigned to a member; otherwise an event is enough.
	Lock    bool
	Details map[string]any
}

// Conflict causes (Conflict.Cause, nix8s_pxe_dhcp_conflicts_total{cause}).
const (
	CauseAddressInUse = "address-in-use"
	CauseDeclined     = "declined"
	CauseTwoClients   = "two-clients-dhcp"
)

// watcher is Watcher, or the Booter when it is a DHCPWatcher too (as nix8sd's storeboot.Adapter is).
func (d *DHCP) watcher() DHCPWatcher {
	if d.Watcher != nil {
		return d.Watcher
	}
	w, _ := d.Booter.(DHCPWatcher)
	return w
}

// conflict counts c, hands it to the watcher and logs what was done about it.
func (d *DHCP) conflict(ctx context.Context, mac net.HardwareAddr, c Conflict) {
	d.Metrics.dhcpConflict(c.Cause)
	done := "logged and counted only (no watcher)"
	if w := d.watcher(); w != nil {
		var err error
		if done, err = w.Conflict(ctx, mac, c); err != nil {
			d.Logger.Error("dhcp conflict not recorded", "mac", mac.String(), "cause", c.Cause, "err", err)
		}
		if done == "" {
			done = "nothing more (no machine with this MAC)"
		}
	}
	d.Logger.Warn("dhcp conflict", "mac", mac.String(), "cause", c.Cause, "reason", c.Reason, "done", done)
}

// SegmentOf names the network segment m came from: the relay's address (giaddr) for a relayed packet, else
// the subnet of the server's interface (directly attached), "" when that is not known.
func (d *DHCP) SegmentOf(m *dhcpv4.DHCPv4) string {
	if g := m.GatewayIPAddr.To4(); g != nil && !g.IsUnspecified() {
		return g.String()
	}
	if d.local != "" {
		return d.local
	}
	if d.Subnet != nil {
		return d.Subnet.String()
	}
	return ""
}

// localSegment is the subnet of the interface's address ip ("" when it has none).
func localSegment(name string, ip net.IP) string {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return ""
	}
	addrs, _ := ifi.Addrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return (&net.IPNet{IP: n.IP.Mask(n.Mask), Mask: n.Mask}).String()
		}
	}
	return ""
}

// DefaultDeclineHold is how long an address a client declined stays out of the range (DHCP.DeclineHold 0).
// ISC dhcpd abandons such an address until the range runs dry, Kea holds it for a day; an hour is enough for
// an operator to notice the event and short enough that a host that left gives its address back the same day.
const DefaultDeclineHold = time.Hour

// decline handles a DHCPDECLINE (RFC 2131 4.4.1: the client found the address in use, by ARP, and gives it
// back): a member's plan address is not quarantined (it has no other) but reported so the machine is locked;
// an address of the range is quarantined for DeclineHold, when the client held its lease.
func (d *DHCP) decline(ctx context.Context, m *dhcpv4.DHCPv4, b Boot) error {
	ip := m.RequestedIPAddress().To4()
	if ip == nil || ip.IsUnspecified() {
		return nil
	}
	if sid := m.ServerIdentifier(); sid != nil && !sid.Equal(d.ServerIP) {
		return nil // declined another server's offer
	}
	hw := m.ClientHWAddr
	mac := hw.String()
	if b.IP != nil && b.IP.Equal(ip) {
		who := "its member"
		if b.Member != "" {
			who = b.Member
		}
		d.conflict(ctx, hw, Conflict{Cause: CauseAddressInUse, Lock: true,
			Reason: fmt.Sprintf("%s declined its plan address %s (DHCPDECLINE): another host answers ARP for %s, the address of %s; the machine is locked (an armed install is stopped) until the other host is gone and an operator unlocks it",
				mac, ip, ip, who),
			Details: map[string]any{"address": ip.String(), "member": b.Member}})
		return nil
	}
	if d.RangeStart == nil || d.RangeEnd == nil || !inRange(ip, d.RangeStart, d.RangeEnd) {
		return nil
	}
	hold := d.DeclineHold
	if hold <= 0 {
		hold = DefaultDeclineHold
	}
	ok, err := d.Leases.Decline(ctx, mac, ip, time.Now().Add(hold), d.offerLimit())
	if err != nil || !ok {
		if err == nil {
			d.Logger.Debug("dhcp decline of an address the client does not hold, or the quarantine is full; ignored", "mac", mac, "ip", ip.String())
		}
		return err
	}
	d.mu.Lock()
	delete(d.offers, mac) // given back: no longer an outstanding offer
	d.mu.Unlock()
	d.conflict(ctx, hw, Conflict{Cause: CauseDeclined,
		Reason: fmt.Sprintf("%s declined %s (DHCPDECLINE): another host answers ARP for it; it is not offered again for %s",
			mac, ip, hold),
		Details: map[string]any{"address": ip.String()}})
	return nil
}

// convWindow is how long a DHCP conversation without an answer that ends it (ACK, NAK) counts as in flight.
// A client retransmits within seconds (RFC 2131 4.1: 4 s, doubling) and restarts with DISCOVER after about a
// minute of silence, so 10 s of silence ends a conversation well before a restart could be taken for a
// second client.
const convWindow = 10 * time.Second

// conversation is the DHCP conversation in flight of one MAC: its transaction ID, the identifiers its client
// sent, when its last packet came, and whether a conflict with it was noticed already.
type conversation struct {
	xid   dhcpv4.TransactionID
	who   clientMarks
	last  time.Time
	noted bool
}

// clientMarks are what a client says of itself besides its MAC: client identifier (61), machine UUID (97),
// host name (12), each as sent ("" when not sent).
type clientMarks struct{ id, uuid, host string }

func marksOf(m *dhcpv4.DHCPv4) clientMarks {
	return clientMarks{
		id:   string(m.Options.Get(dhcpv4.OptionClientIdentifier)),
		uuid: string(m.Options.Get(dhcpv4.OptionClientMachineIdentifier)),
		host: string(m.Options.Get(dhcpv4.OptionHostName)),
	}
}

// differs names the first identifier both marks carry with different values ("" when none). One that only
// one of them sends tells nothing: PXE firmware sends no client identifier, iPXE does, and each stage of one
// machine's boot (firmware, iPXE, Linux) is a conversation of its own.
func (a clientMarks) differs(b clientMarks) string {
	switch {
	case a.uuid != "" && b.uuid != "" && !sameUUID(a.uuid, b.uuid):
		return "client machine identifier (option 97)"
	case a.id != "" && b.id != "" && a.id != b.id:
		return "client identifier (option 61)"
	case a.host != "" && b.host != "" && a.host != b.host:
		return "host name (option 12)"
	}
	return ""
}

// sameUUID compares two option 97 values (type 0, then 16 bytes). Firmware and iPXE do not agree on the byte
// order of the UUID's first three fields (SMBIOS stores them little-endian; some send them so, some swapped),
// so the two orders of one UUID are the same machine.
func sameUUID(a, b string) bool {
	if a == b {
		return true
	}
	if len(a) != 17 || len(b) != 17 || a[0] != b[0] {
		return false
	}
	x := []byte(a[1:])
	for _, f := range [][2]int{{0, 4}, {4, 6}, {6, 8}} {
		for i, j := f[0], f[1]-1; i < j; i, j = i+1, j-1 {
			x[i], x[j] = x[j], x[i]
		}
	}
	return string(x) == b[1:]
}

// converse notes a DISCOVER or REQUEST of mac and returns a conflict when it belongs to a second client:
// another transaction ID while the MAC's conversation is in flight (no ACK or NAK yet, a packet within
// convWindow), and an identifier that both clients send with different values. A retransmission (same ID) or a
// new conversation of the same client (another ID, no identifier that differs) takes the old one's place.
func (d *DHCP) converse(mac net.HardwareAddr, m *dhcpv4.DHCPv4, now time.Time) *Conflict {
	key := mac.String()
	who := marksOf(m)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.convs == nil || len(d.convs) > 50000 {
		d.convs = map[string]*conversation{} // bounded: a flood of MACs forgets, it does not grow
	}
	c := d.convs[key]
	switch {
	case c == nil || now.Sub(c.last) > convWindow:
		d.convs[key] = &conversation{xid: m.TransactionID, who: who, last: now}
		return nil
	case c.xid == m.TransactionID:
		c.last = now
		return nil
	}
	what := c.who.differs(who)
	if what == "" {
		d.convs[key] = &conversation{xid: m.TransactionID, who: who, last: now}
		return nil
	}
	first := *c
	// The second client's conversation is the one in flight now; the first one's next packet is a conflict
	// again, but it is reported once per pair of conversations.
	d.convs[key] = &conversation{xid: m.TransactionID, who: who, last: now, noted: true}
	if first.noted {
		return nil
	}
	return &Conflict{Cause: CauseTwoClients, Lock: true,
		Reason: fmt.Sprintf("two DHCP clients claim MAC %s: transaction %s is unanswered (%s ago) and transaction %s came with another %s (%s, then %s); another host uses this MAC",
			key, first.xid, now.Sub(first.last).Round(time.Millisecond), m.TransactionID, what, first.who.show(what), who.show(what)),
		Details: map[string]any{"transactions": []string{first.xid.String(), m.TransactionID.String()}, "differs": what}}
}

// show prints the identifier what of c for an event: printable as text, else in hex.
func (c clientMarks) show(what string) string {
	v := c.host
	switch what {
	case "client machine identifier (option 97)":
		v = c.uuid
	case "client identifier (option 61)":
		v = c.id
	}
	for _, r := range v {
		if r < 0x20 || r > 0x7e {
			return fmt.Sprintf("%x", v)
		}
	}
	return fmt.Sprintf("%q", v)
}

// answered ends mac's conversation xid: it got its ACK or NAK.
func (d *DHCP) answered(mac net.HardwareAddr, xid dhcpv4.TransactionID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.convs[mac.String()]; c != nil && c.xid == xid {
		delete(d.convs, mac.String())
	}
}

// offerLimit is MaxOffers or its default: a quarter of the range, at least 8.
func (d *DHCP) offerLimit() int {
	if d.MaxOffers > 0 {
		return d.MaxOffers
	}
	return max(int((uint64(ip4(d.RangeEnd))-uint64(ip4(d.RangeStart))+1)/4), 8)
}

// FullError is an ErrFull of one segment (Machines.Discovered): the metric of refused discover reports is
// counted by it.
type FullError struct {
	Segment string // "" when not known
	Err     error
}

func (e *FullError) Error() string { return e.Err.Error() }

func (e *FullError) Unwrap() []error { return []error{ErrFull, e.Err} }

// segmentOfErr is the segment of a FullError in err ("unknown" when none is named).
func segmentOfErr(err error) string {
	var fe *FullError
	if errors.As(err, &fe) && fe.Segment != "" {
		return fe.Segment
	}
	return "unknown"
}
