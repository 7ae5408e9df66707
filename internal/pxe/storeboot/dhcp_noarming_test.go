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

// A decision is a query, the script request's too: its answer that the install starts now (arm) changes
// nothing however often it is asked, until the script handler calls Arm. Arm arms once: called again with the
// same, stale decision it answers what the machine boots now (the armed install), not a second generation.
// Real PostgreSQL and the real core's plan.
func TestDecideIsAQuery(t *testing.T) {
	ctx := context.Background()
	st, a := setup(t)
	const mac = "52:54:00:ee:00:01"
	if _, err := st.CreateMachine(ctx, "op", mac, nil, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateMachine(ctx, "op", mac, store.MachineChange{Assign: &[2]string{"dev", "s1"}}); err != nil {
		t.Fatal(err)
	}
	hw, _ := net.ParseMAC(mac)
	var d pxe.Boot
	for range 3 {
		var err error
		if d, err = a.Decide(ctx, hw, pxe.FirmwareIPXE); err != nil || d.Action != pxe.ActionArm || d.Member != "dev-s1" {
			t.Fatalf("script request's decision: %+v, %v; want arm for dev-s1", d, err)
		}
	}
	if m, _ := st.Machine(ctx, mac); m.State != store.StateDiscovered || m.InstallArmed || m.InstallGeneration != 0 {
		t.Fatalf("after three decisions: %s, armed %v, generation %d; want discovered, nothing armed", m.State, m.InstallArmed, m.InstallGeneration)
	}
	for i := range 2 {
		b, err := a.Arm(ctx, hw, d)
		if err != nil || b.Action != pxe.ActionInstall || b.Generation != 1 || b.Image != "installer-dev-s1" {
			t.Fatalf("Arm #%d: %+v, %v; want the installer of generation 1", i+1, b, err)
		}
	}
	if m, _ := st.Machine(ctx, mac); m.State != store.StateInstalling || !m.InstallArmed || m.InstallGeneration != 1 {
		t.Fatalf("after Arm: %s, armed %v, generation %d; want installing, armed, generation 1", m.State, m.InstallArmed, m.InstallGeneration)
	}
}
