package pxe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
)

// Mode is how the DHCP server takes part in the network.
type Mode string

const (
	// ModeProxy hands out no addresses, only boot information beside the site's DHCP server (the default).
	ModeProxy Mode = "proxy"
	// ModeFull hands out addresses from a range, and each assigned member its plan IP.
	ModeFull Mode = "full"
)

// DHCP answers PXE clients. Packets are parsed and answered by a bounded pool of workers; what does not fit
// the queue is dropped (the client retries) rather than piling up goroutines. Packets of known MACs (Known)
// have a queue of their own that the workers empty first, so a flood of unknown machines does not starve
// the members of a cluster powering on.
type DHCP struct {
	Mode Mode
	// Interface to serve (SO_BINDTODEVICE) and the server's address on it.
	Interface string
	ServerIP  net.IP
	// Full mode: the subnet, the range [RangeStart, RangeEnd], the router, the lease time (default 1 h).
	Subnet               *net.IPNet
	RangeStart, RangeEnd net.IP
	Gateway              net.IP
	DNS                  []net.IP
	LeaseTime            time.Duration
	Leases               Leases
	Booter               Booter
	// BootFiles is the iPXE binary of each client architecture (nil: StandardBootFiles). A PXE client whose
	// architecture has none gets no answer, never another architecture's binary.
	BootFiles BootFiles
	// HTTPBase is the boot HTTP server's base URL (http://ip:port).
	HTTPBase string
	// MaxOffers bounds the offers outstanding (not yet taken with a REQUEST) to MACs without a plan address;
	// default a quarter of the range, at least 8. A flood of fresh MACs that never take their offer cannot hold
	// the whole range for offerHold; members keep their plan addresses whatever the flood.
	MaxOffers int
	// Workers (default 16) and Queue (default 256) bound the packet handling; Queue is the size of each of
	// the two queues (known MACs, others).
	Workers, Queue int
	// Known says a MAC belongs to a machine nix8s knows (a member, a stored machine); its packets are answered
	// before the others when the workers fall behind. It runs on the receiving goroutine for every packet, so
	// it must be cheap and in memory (KnownMACs). Nil: every packet is in the one queue of others.
	Known func(mac net.HardwareAddr) bool
	// Watcher hears of each MAC's segment and of the conflicts the server notices (dhcp_conflict.go); nil:
	// the Booter, when it is a DHCPWatcher (storeboot.Adapter is), else nobody (they are still logged and
	// counted).
	Watcher DHCPWatcher
	// DeclineHold is how long an address a client declined (DHCPDECLINE) is not offered (default
	// DefaultDeclineHold).
	DeclineHold time.Duration
	// Port is the DHCP server port (67 unless a test moves it); proxy mode also serves Port+3944 (4011).
	Port    int
	Metrics *Metrics
	Logger  *slog.Logger

	conns  []net.PacketConn // opened by Listen
	mu     sync.Mutex       // chain state and decisions
	chains map[string][]time.Time
	offers map[string]time.Time // outstanding offers by MAC, until they expire (under mu)
	// decisions are the Booter's recent answers to DHCP, by MAC and firmware: an exchange asks twice (DISCOVER,
	// REQUEST) within a moment, and a DHCP decision changes nothing, so the second is not asked again.
	decisions map[decisionKey]decision
	next      atomic.Uint32            // where the search for a free address resumes
	convs     map[string]*conversation // the DHCP conversation in flight of each MAC (under mu)
	local     string                   // the interface's subnet: the segment of directly attached clients
}

type packet struct {
	conn  net.PacketConn
	peer  net.Addr
	m     *dhcpv4.DHCPv4
	alt   bool   // arrived on the proxy port 4011
	class string // classKnown or classUnknown
}

// Check reports every problem of the configuration at once.
func (d *DHCP) Check() error {
	var errs []error
	if d.ServerIP.To4() == nil {
		errs = append(errs, fmt.Errorf("dhcp: server IP %v is not an IPv4 address", d.ServerIP))
	}
	if d.Booter == nil {
		errs = append(errs, errors.New("dhcp: no Booter"))
	}
	if err := CheckBaseURL(d.HTTPBase); err != nil {
		errs = append(errs, fmt.Errorf("dhcp: %w", err))
	}
	switch d.Mode {
	case ModeProxy:
	case ModeFull:
		// What the range, subnet and gateway must satisfy (range inside the subnet and in order, gateway in the
		// subnet) is the core's rule (lib/validate.nix), checked with its config path before nix8sd gets here;
		// only their presence is checked here, as the guard of the lease code.
		if d.Subnet == nil {
			errs = append(errs, errors.New("dhcp: full mode needs a subnet"))
		}
		if d.RangeStart.To4() == nil || d.RangeEnd.To4() == nil {
			errs = append(errs, fmt.Errorf("dhcp: full mode needs an IPv4 range, got %v-%v", d.RangeStart, d.RangeEnd))
		}
		if d.Leases == nil {
			errs = append(errs, errors.New("dhcp: full mode needs a lease store"))
		}
	default:
		errs = append(errs, fmt.Errorf("dhcp: mode %q is neither proxy nor full", d.Mode))
	}
	return errors.Join(errs...)
}

// Serve answers DHCP on the interface until ctx ends.
// Listen checks the configuration and opens the DHCP sockets (also the proxy port in proxy mode), so that a
// port in use or a missing interface address is an error before anything is served. Serve calls it when it
// was not called.
func (d *DHCP) Listen() error {
	if d.conns != nil {
		return nil
	}
	if err := d.Check(); err != nil {
		return err
	}
	port := d.Port
	if port == 0 {
		port = 67
	}
	if err := checkInterface(d.Interface, d.ServerIP); err != nil {
		return err
	}
	conn, err := server4.NewIPv4UDPConn(d.Interface, &net.UDPAddr{Port: port})
	if err != nil {
		return fmt.Errorf("dhcp: listening on %s port %d: %w", d.Interface, port, err)
	}
	conns := []net.PacketConn{conn}
	if d.Mode == ModeProxy {
		alt, err := server4.NewIPv4UDPConn(d.Interface, &net.UDPAddr{Port: port + 3944})
		if err != nil {
			conn.Close()
			return fmt.Errorf("dhcp: listening on %s port %d: %w", d.Interface, port+3944, err)
		}
		conns = append(conns, alt)
	}
	d.conns = conns
	d.local = localSegment(d.Interface, d.ServerIP)
	return nil
}

func (d *DHCP) close() {
	for _, c := range d.conns {
		c.Close()
	}
	d.conns = nil
}

// Serve answers DHCP until ctx ends.
func (d *DHCP) Serve(ctx context.Context) error {
	if err := d.Listen(); err != nil {
		return err
	}
	conns := d.conns
	workers, queue := d.Workers, d.Queue
	if workers <= 0 {
		workers = 16 // most of a packet's time is a database round trip
	}
	if queue <= 0 {
		queue = 256
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	known, others := make(chan packet, queue), make(chan packet, queue)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.work(ctx, known, others)
		}()
	}
	var rwg sync.WaitGroup
	for i, c := range conns {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			buf := make([]byte, 4096)
			for {
				n, peer, err := c.ReadFrom(buf)
				if err != nil {
					return
				}
				m, err := dhcpv4.FromBytes(buf[:n])
				if err != nil || m.OpCode != dhcpv4.OpcodeBootRequest {
					d.Metrics.dhcpDrop("bad", classUnknown)
					continue
				}
				q, class := others, classUnknown
				if d.Known != nil && len(m.ClientHWAddr) == 6 && d.Known(m.ClientHWAddr) {
					q, class = known, classKnown
				}
				select {
				case q <- packet{conn: c, peer: peer, m: m, alt: i == 1, class: class}:
				default:
					d.Metrics.dhcpDrop("busy", class)
				}
			}
		}()
	}
	d.Logger.Info("dhcp serving", "mode", d.Mode, "interface", d.Interface, "server", d.ServerIP.String())
	<-ctx.Done()
	for _, c := range conns {
		c.Close()
	}
	d.conns = nil
	rwg.Wait()
	close(known)
	close(others)
	wg.Wait()
	return nil
}

// Drop and queue classes of a packet's MAC.
const (
	classKnown   = "known"
	classUnknown = "unknown"
)

// work answers packets until both queues are closed and empty, a known MAC's packet always first.
func (d *DHCP) work(ctx context.Context, known, others <-chan packet) {
	for known != nil || others != nil {
		var p packet
		var ok bool
		select {
		case p, ok = <-known:
			if !ok {
				known = nil
				continue
			}
		default:
			select {
			case p, ok = <-known:
				if !ok {
					known = nil
					continue
				}
			case p, ok = <-others:
				if !ok {
					others = nil
					continue
				}
			}
		}
		d.serve(ctx, p)
	}
}

func (d *DHCP) serve(ctx context.Context, p packet) {
	reply, err := d.Handle(ctx, p.m, p.alt)
	if err != nil {
		d.Logger.Warn("dhcp", "mac", p.m.ClientHWAddr.String(), "err", err)
	}
	if reply == nil {
		d.Metrics.dhcpDrop("ignored", p.class)
		return
	}
	dst := &net.UDPAddr{IP: net.IPv4bcast, Port: 68}
	switch {
	case p.alt:
		dst = p.peer.(*net.UDPAddr) // port 4011: answer where it came from
	case !p.m.GatewayIPAddr.IsUnspecified():
		dst = &net.UDPAddr{IP: p.m.GatewayIPAddr, Port: 67}
	case !p.m.ClientIPAddr.IsUnspecified():
		dst = &net.UDPAddr{IP: p.m.ClientIPAddr, Port: 68}
	}
	if _, err := p.conn.WriteTo(reply.ToBytes(), dst); err != nil {
		d.Logger.Warn("dhcp reply", "mac", p.m.ClientHWAddr.String(), "dst", dst.String(), "err", err)
		return
	}
	d.Metrics.dhcpReply(string(d.Mode), strings.ToLower(reply.MessageType().String()))
}

// ClientFirmware tells what kind of boot client sent m, and whether it is a network boot client at all.
func ClientFirmware(m *dhcpv4.DHCPv4) (Firmware, bool) {
	for _, uc := range m.UserClass() {
		if uc == "iPXE" {
			return FirmwareIPXE, true
		}
	}
	if m.Options.Has(dhcpv4.OptionEtherboot) {
		return FirmwareIPXE, true
	}
	class := m.ClassIdentifier()
	if strings.HasPrefix(class, "HTTPClient") {
		return FirmwareUEFIHTTP, true
	}
	if !strings.HasPrefix(class, "PXEClient") {
		return "", false
	}
	switch a := ClientArchOf(m); {
	case HTTPArch(a):
		return FirmwareUEFIHTTP, true
	case a == ArchBIOS:
		return FirmwareBIOS, true
	}
	return FirmwareUEFI, true
}

// chainLimit breaks boot loops: a MAC handed an iPXE binary this many times within chainWindow gets no more
// boot files until the window passes (a chain-loaded iPXE that does not say it is iPXE would loop forever).
const offerHold = 30 * time.Second

const (
	chainLimit  = 4
	chainWindow = 2 * time.Minute
)

func (d *DHCP) chainOK(mac string, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.chains == nil {
		d.chains = map[string][]time.Time{}
	}
	if len(d.chains) > 100000 {
		d.chains = map[string][]time.Time{}
	}
	var recent []time.Time
	for _, t := range d.chains[mac] {
		if now.Sub(t) < chainWindow {
			recent = append(recent, t)
		}
	}
	if len(recent) >= chainLimit {
		d.chains[mac] = recent
		return false
	}
	d.chains[mac] = append(recent, now)
	return true
}

// Handle computes the reply to one request (nil: no answer). alt is true for the proxy port 4011.
func (d *DHCP) Handle(ctx context.Context, m *dhcpv4.DHCPv4, alt bool) (*dhcpv4.DHCPv4, error) {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if len(m.ClientHWAddr) != 6 {
		return nil, nil
	}
	mac := m.ClientHWAddr
	fw, pxe := ClientFirmware(m)
	typ := m.MessageType()
	w := d.watcher()
	if w != nil && !alt {
		if seg := d.SegmentOf(m); seg != "" {
			w.Segment(mac, seg)
		}
	}
	if (pxe || d.Mode == ModeFull) && !alt && (typ == dhcpv4.MessageTypeDiscover || typ == dhcpv4.MessageTypeRequest) {
		if c := d.converse(mac, m, time.Now()); c != nil {
			d.conflict(ctx, mac, *c)
		}
	}
	var b Boot
	if pxe || d.Mode == ModeFull { // full mode: an installed member's OS gets its plan IP too
		// DHCP only asks: iPXE's DHCP must not count as its script request (which may arm an install).
		ask := fw
		if fw == FirmwareIPXE {
			ask = FirmwareIPXEDHCP
		}
		var err error
		if b, err = d.decide(ctx, mac, ask); err != nil {
			return nil, fmt.Errorf("boot decision: %w", err)
		}
	}
	if pxe && b.Action != ActionIgnore && !d.haveBootFile(m, fw) {
		return nil, nil // no binary for its architecture: no offer, so the firmware tries its next boot entry
	}
	var r *dhcpv4.DHCPv4
	var err error
	if d.Mode == ModeProxy {
		r, err = d.proxy(m, typ, fw, pxe, b, alt)
	} else {
		r, err = d.full(ctx, m, typ, fw, pxe, b)
	}
	if r != nil && (r.MessageType() == dhcpv4.MessageTypeAck || r.MessageType() == dhcpv4.MessageTypeNak) {
		d.answered(mac, m.TransactionID)
	}
	return r, err
}

func (d *DHCP) proxy(m *dhcpv4.DHCPv4, typ dhcpv4.MessageType, fw Firmware, pxe bool, b Boot, alt bool) (*dhcpv4.DHCPv4, error) {
	// Machines nix8s does not boot are left to the site entirely.
	if !pxe || b.Action == ActionIgnore {
		return nil, nil
	}
	var reply dhcpv4.MessageType
	switch {
	case typ == dhcpv4.MessageTypeDiscover && !alt:
		reply = dhcpv4.MessageTypeOffer
	case typ == dhcpv4.MessageTypeRequest && (alt || d.ServerIP.Equal(m.ServerIdentifier())):
		reply = dhcpv4.MessageTypeAck
	case typ == dhcpv4.MessageTypeInform:
		reply = dhcpv4.MessageTypeAck
	default:
		return nil, nil
	}
	r, err := dhcpv4.NewReplyFromRequest(m, dhcpv4.WithMessageType(reply),
		dhcpv4.WithServerIP(d.ServerIP), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(d.ServerIP)))
	if err != nil {
		return nil, err
	}
	// A proxy offer must say PXEClient so the firmware takes it as one (PXE spec 2.1); UEFI firmware then asks
	// again on port 4011, which Serve answers too. Site leases stay untouched: yiaddr is 0.0.0.0.
	if fw == FirmwareUEFIHTTP {
		r.UpdateOption(dhcpv4.OptClassIdentifier("HTTPClient"))
	} else {
		r.UpdateOption(dhcpv4.OptClassIdentifier("PXEClient"))
		// PXE vendor options: discovery control = 8 (boot file is in the packet, no boot server discovery).
		r.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{6, 1, 8, 255}))
	}
	if !d.bootFile(r, m, fw) {
		return nil, nil
	}
	return r, nil
}

func (d *DHCP) full(ctx context.Context, m *dhcpv4.DHCPv4, typ dhcpv4.MessageType, fw Firmware, pxe bool, b Boot) (*dhcpv4.DHCPv4, error) {
	mac := m.ClientHWAddr.String()
	switch typ {
	case dhcpv4.MessageTypeRelease:
		// Only the holder's own lease goes: MAC and the released address (ciaddr) must both match it.
		if d.ServerIP.Equal(m.ServerIdentifier()) && !m.ClientIPAddr.IsUnspecified() {
			return nil, d.Leases.Release(ctx, mac, m.ClientIPAddr)
		}
		return nil, nil
	case dhcpv4.MessageTypeDecline:
		return nil, d.decline(ctx, m, b)
	case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest:
	default:
		return nil, nil
	}
	if typ == dhcpv4.MessageTypeRequest {
		if sid := m.ServerIdentifier(); sid != nil && !sid.Equal(d.ServerIP) {
			return nil, nil // the client chose another server's offer
		}
	}
	lt := d.LeaseTime
	if lt == 0 {
		lt = time.Hour
	}
	// An offer holds its address for a short while, so concurrent clients are not offered the same one.
	hold := lt
	if typ == dhcpv4.MessageTypeDiscover {
		hold = offerHold
	}
	want := m.RequestedIPAddress()
	if want == nil || want.IsUnspecified() {
		want = m.ClientIPAddr
	}
	if typ == dhcpv4.MessageTypeDiscover && b.IP == nil && !d.offerSlot(mac, time.Now()) {
		d.Metrics.dhcpDrop("offers-full", "unknown")
		return nil, nil
	}
	ip, err := d.allocate(ctx, mac, b.IP, want, time.Now().Add(hold))
	if err != nil {
		return nil, err
	}
	reply := dhcpv4.MessageTypeOffer
	if typ == dhcpv4.MessageTypeRequest {
		if want == nil || !want.Equal(ip) {
			d.Metrics.dhcpReply(string(d.Mode), "nak")
			r, err := dhcpv4.NewReplyFromRequest(m, dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(d.ServerIP)))
			return r, err
		}
		reply = dhcpv4.MessageTypeAck
		d.mu.Lock()
		delete(d.offers, mac) // taken: no longer an outstanding offer
		d.mu.Unlock()
	}
	mods := []dhcpv4.Modifier{dhcpv4.WithMessageType(reply), dhcpv4.WithYourIP(ip),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(d.ServerIP)),
		dhcpv4.WithOption(dhcpv4.OptSubnetMask(d.Subnet.Mask)),
		dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(lt))}
	if d.Gateway != nil {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRouter(d.Gateway)))
	}
	if len(d.DNS) > 0 {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDNS(d.DNS...)))
	}
	r, err := dhcpv4.NewReplyFromRequest(m, mods...)
	if err != nil {
		return nil, err
	}
	if pxe && b.Action != ActionIgnore {
		r.ServerIPAddr = d.ServerIP
		if fw == FirmwareUEFIHTTP {
			r.UpdateOption(dhcpv4.OptClassIdentifier("HTTPClient"))
		}
		// No option 60 "PXEClient" here: UEFI firmware would then insist on a proxy on port 4011 (PXE-E16).
		d.bootFile(r, m, fw)
	}
	return r, nil
}

// bootFileName is the boot file a firmware (not iPXE) of m's architecture is given, "" when there is none,
// with the reason for the metric: unknown-arch (not an architecture nix8s boots) or no-binary (the table has
// no file for it, or an HTTP boot client announced a PXE architecture).
func (d *DHCP) bootFileName(m *dhcpv4.DHCPv4, fw Firmware) (file string, arch Arch, reason string) {
	arch = ClientArchOf(m)
	if _, ok := archNames[arch]; !ok {
		return "", arch, "unknown-arch"
	}
	files := d.BootFiles
	if files == nil {
		files = StandardBootFiles()
	}
	file = files[arch]
	if file == "" || (fw == FirmwareUEFIHTTP) != HTTPArch(arch) {
		return "", arch, "no-binary"
	}
	return file, arch, ""
}

// haveBootFile reports whether m can be given a boot file; when not, it logs why and counts it.
func (d *DHCP) haveBootFile(m *dhcpv4.DHCPv4, fw Firmware) bool {
	if fw == FirmwareIPXE {
		return true
	}
	file, arch, reason := d.bootFileName(m, fw)
	if file != "" {
		return true
	}
	d.Metrics.noBootFile(archLabel(arch), reason)
	d.Logger.Warn("no boot file for this client's architecture; not answering it, so it tries its next boot device",
		"mac", m.ClientHWAddr.String(), "arch", int(arch), "archName", archNames[arch], "reason", reason,
		"hint", "put the architecture's iPXE binary into the iPXE directory and name it with --pxe-boot-file ARCH=FILE")
	return false
}

// bootFile puts the boot file for fw into r; false when the chain-loading limit stops it (or there is none).
func (d *DHCP) bootFile(r, m *dhcpv4.DHCPv4, fw Firmware) bool {
	var file string
	switch fw {
	case FirmwareIPXE:
		// The MAC of this request, not ${net0/mac}: a machine booting from its second NIC is known by that
		// NIC's MAC, and iPXE's net0 is its first. iPXE asks for the script from the NIC it configured.
		file = d.HTTPBase + "/boot/ipxe?mac=" + m.ClientHWAddr.String()
		// Option 175.176 = 1: iPXE skips waiting for proxyDHCP offers (2 s) when we are its only DHCP server.
		if d.Mode == ModeFull {
			r.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionEtherboot, []byte{176, 1, 1}))
		}
	default:
		if file, _, _ = d.bootFileName(m, fw); file == "" {
			return false
		}
		if fw == FirmwareUEFIHTTP {
			file = d.HTTPBase + "/boot/" + file
		}
	}
	if fw != FirmwareIPXE && !d.chainOK(m.ClientHWAddr.String(), time.Now()) {
		d.Logger.Warn("a machine keeps asking for iPXE; not answering it for a while (boot loop?)", "mac", m.ClientHWAddr.String())
		return false
	}
	r.ServerIPAddr = d.ServerIP
	r.BootFileName = file
	r.UpdateOption(dhcpv4.OptBootFileName(file))
	if fw == FirmwareBIOS || fw == FirmwareUEFI {
		r.UpdateOption(dhcpv4.OptTFTPServerName(d.ServerIP.String()))
	}
	// Option 97, the client's machine identifier (its UUID), goes back as it came: PXE firmware expects its
	// own PXE options mirrored in the answer (PXE 2.1; dnsmasq and pixiecore echo it too).
	if guid := m.Options.Get(dhcpv4.OptionClientMachineIdentifier); len(guid) > 0 {
		r.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, guid))
	}
	return true
}

// maxTries bounds the addresses one packet proposes before it is told the range is full.
const maxTries = 64

// allocate leases the MAC's address until expires, one statement per try and no lock held across them: the
// plan IP when the Booter names one, else its current lease in the range, else the address the client asks for
// (a renewal or a reboot), else the next address of the range that nobody holds. Concurrent packets propose
// different addresses (an atomic cursor); the lease store's uniqueness decides the rest.
func (d *DHCP) allocate(ctx context.Context, mac string, plan, asked net.IP, expires time.Time) (net.IP, error) {
	c := Claim{MAC: mac, Expires: expires, Lo: d.RangeStart.To4(), Hi: d.RangeEnd.To4()}
	if plan != nil {
		if !d.Subnet.Contains(plan) {
			return nil, fmt.Errorf("plan IP %v of %s is outside the DHCP subnet %v", plan, mac, d.Subnet)
		}
		c.Want = plan.To4()
		return d.Leases.Claim(ctx, c)
	}
	lo, hi := ip4(d.RangeStart), ip4(d.RangeEnd)
	size := uint64(hi) - uint64(lo) + 1
	tries := min(size, maxTries)
	for i := uint64(0); i < tries; i++ {
		var a uint32
		if i == 0 && asked.To4() != nil && inRange(asked, d.RangeStart, d.RangeEnd) {
			a = ip4(asked)
		} else {
			a = uint32(uint64(lo) + uint64(d.next.Add(1)-1)%size)
		}
		c.Try = make(net.IP, 4)
		binary.BigEndian.PutUint32(c.Try, a)
		if c.Try.Equal(d.ServerIP) || c.Try.Equal(d.Gateway) {
			continue
		}
		ip, err := d.Leases.Claim(ctx, c)
		if err != nil || ip != nil {
			return ip, err
		}
	}
	return nil, fmt.Errorf("no free address left in %v-%v (%d tried)", d.RangeStart, d.RangeEnd, tries)
}

func ip4(ip net.IP) uint32 { return binary.BigEndian.Uint32(ip.To4()) }

func inRange(ip, lo, hi net.IP) bool { return ip4(ip) >= ip4(lo) && ip4(ip) <= ip4(hi) }

// checkInterface refuses to serve when the interface lacks the server address: the answers would name an
// address nobody can reach.
// CheckInterface reports whether interface name exists and has the address ip.
func CheckInterface(name string, ip net.IP) error { return checkInterface(name, ip) }

func checkInterface(name string, ip net.IP) error {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return fmt.Errorf("dhcp: interface %q: %w", name, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return fmt.Errorf("dhcp: interface %q: %w", name, err)
	}
	var have []string
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if n.IP.Equal(ip) {
				return nil
			}
			have = append(have, n.String())
		}
	}
	return fmt.Errorf("dhcp: interface %s does not have the server address %v (it has: %s)", name, ip, strings.Join(have, ", "))
}

// decisionTTL is how long a DHCP boot decision is reused for the same MAC and firmware.
const decisionTTL = 2 * time.Second

type decisionKey struct {
	mac string
	fw  Firmware
}

type decision struct {
	b  Boot
	at time.Time
}

// decide asks the Booter what to answer a DHCP request, reusing its answer of the last decisionTTL.
func (d *DHCP) decide(ctx context.Context, mac net.HardwareAddr, fw Firmware) (Boot, error) {
	k := decisionKey{mac.String(), fw}
	now := time.Now()
	d.mu.Lock()
	c, ok := d.decisions[k]
	d.mu.Unlock()
	if ok && now.Sub(c.at) < decisionTTL {
		return c.b, nil
	}
	b, err := d.Booter.Decide(ctx, mac, fw)
	if err != nil {
		return b, err
	}
	d.mu.Lock()
	if d.decisions == nil || len(d.decisions) > 50000 {
		d.decisions = map[decisionKey]decision{} // bounded: a flood of MACs forgets, it does not grow
	}
	d.decisions[k] = decision{b, now}
	d.mu.Unlock()
	return b, nil
}

// offerSlot reports whether mac may be offered an address now: it has an outstanding offer already, or fewer
// than MaxOffers are outstanding.
func (d *DHCP) offerSlot(mac string, now time.Time) bool {
	limit := d.offerLimit()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.offers == nil {
		d.offers = map[string]time.Time{}
	}
	if _, ok := d.offers[mac]; !ok && len(d.offers) >= limit {
		for k, until := range d.offers {
			if now.After(until) {
				delete(d.offers, k)
			}
		}
		if len(d.offers) >= limit {
			return false
		}
	}
	d.offers[mac] = now.Add(offerHold)
	return true
}
