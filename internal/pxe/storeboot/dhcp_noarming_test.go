package storeboot

import (
	"context"
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/nix8s/nix8s/internal/pxe"
	"github.com/nix8s/nix8s/internal/store"
)

// A DHCP packet is anyone's to send: iPXE's DHCP request with the first server's MAC (whose turn it is) must
// not arm its install, however often it comes; only the iPXE script request does. Real PostgreSQL, the real
// core's plan, the real DHCP handler.
func TestDHCPNeverArms(t *testing.T) {
	ctx := context.Background()
	st, a := setup(t)
	const mac = "52:54:00:ee:00:01"
	if _, err := st.CreateMachine(ctx, "op", mac, nil, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateMachine(ctx, "op", mac, store.MachineChange{Assign: &[2]string{"dev", "s1"}}); err != nil {
		t.Fatal(err)
	}
	_, subnet, _ := net.ParseCIDR("192.168.1.0/24")
	d := &pxe.DHCP{Mode: pxe.ModeFull, ServerIP: net.ParseIP("192.168.1.1"), Subnet: subnet,
		RangeStart: net.ParseIP("192.168.1.100"), RangeEnd: net.ParseIP("192.168.1.200"), Leases: Leases{Store: st},
		Booter: a, HTTPBase: "http://192.168.1.1:8081"}
	hw, _ := net.ParseMAC(mac)
	for _, typ := range []dhcpv4.MessageType{dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeDiscover} {
		m, err := dhcpv4.New(dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(typ), dhcpv4.WithUserClass("iPXE", false),
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("192.168.1.10"))),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("192.168.1.1"))))
		if err != nil {
			t.Fatal(err)
		}
		r, err := d.Handle(ctx, m, false)
		if err != nil || r == nil || !r.YourIPAddr.Equal(net.ParseIP("192.168.1.10")) {
			t.Fatalf("%s: %v, %v; want an answer with the plan address", typ, r, err)
		}
	}
	if m, _ := st.Machine(ctx, mac); m.State != "discovered" || m.InstallArmed {
		t.Fatalf("after iPXE's DHCP: %s, armed %v; want discovered and not armed", m.State, m.InstallArmed)
	}
	// The script request is what arms it.
	if b := bootOf(t, a, mac, pxe.FirmwareIPXE, pxe.ActionInstall); b.Generation != 1 {
		t.Fatalf("script request: %+v", b)
	}
}
