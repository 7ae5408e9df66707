package pxe

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// RouterAdvertiser answers IPv6 router solicitations on an interface with an empty advertisement (router
// lifetime 0, no prefixes, no DHCPv6 flags). iPXE otherwise waits about 16 s for one before it boots on an
// IPv4-only provisioning network; the answer tells it there is no IPv6 to configure. Only for networks where
// nix8sd is the only thing that could answer: it never announces itself as a default router.
type RouterAdvertiser struct {
	Interface string
	Logger    *slog.Logger
}

// Serve answers until ctx ends. It needs IPv6 on the interface (a link-local address) and root (raw ICMPv6).
func (a *RouterAdvertiser) Serve(ctx context.Context) error {
	ifi, err := net.InterfaceByName(a.Interface)
	if err != nil {
		return fmt.Errorf("router advertisements: %w", err)
	}
	c, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
	if err != nil {
		return fmt.Errorf("router advertisements on %s: %w", a.Interface, err)
	}
	p := c.IPv6PacketConn()
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterSolicitation)
	allRouters := &net.IPAddr{IP: net.ParseIP("ff02::2")}
	if err := firstErr(p.SetICMPFilter(&f), p.SetControlMessage(ipv6.FlagInterface, true),
		p.JoinGroup(ifi, allRouters), p.SetMulticastHopLimit(255), p.SetHopLimit(255), p.SetMulticastInterface(ifi)); err != nil {
		c.Close()
		return fmt.Errorf("router advertisements on %s: %w", a.Interface, err)
	}
	go func() { <-ctx.Done(); c.Close() }()
	ra, _ := (&icmp.Message{Type: ipv6.ICMPTypeRouterAdvertisement, Body: &icmp.RawBody{Data: make([]byte, 12)}}).Marshal(nil)
	buf := make([]byte, 1500)
	for {
		n, cm, src, err := p.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("router advertisements on %s: %w", a.Interface, err)
		}
		if cm == nil || cm.IfIndex != ifi.Index || n < 8 {
			continue
		}
		// Answer to all nodes: a soliciting host may have no address yet (source ::).
		dst := &net.IPAddr{IP: net.ParseIP("ff02::1"), Zone: a.Interface}
		if _, err := p.WriteTo(ra, &ipv6.ControlMessage{HopLimit: 255, IfIndex: ifi.Index}, dst); err != nil && a.Logger != nil {
			a.Logger.Warn("router advertisement", "to", src, "err", err)
		}
	}
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
