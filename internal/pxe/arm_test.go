package pxe

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// armBooter decides arm for every script request and counts the Arm calls. A fake on purpose: what is tested
// is which handler calls Arm, whatever a real Booter decides (storeboot's TestDecideIsAQuery and
// TestDHCPNeverArms test the store's).
type armBooter struct{ arms atomic.Int32 }

func (b *armBooter) Decide(_ context.Context, _ net.HardwareAddr, fw Firmware) (Boot, error) {
	if fw == FirmwareIPXE {
		return Boot{Action: ActionArm}, nil
	}
	return Boot{Action: ActionWait}, nil
}

func (b *armBooter) Arm(context.Context, net.HardwareAddr, Boot) (Boot, error) {
	b.arms.Add(1)
	return Boot{Action: ActionWait, Message: "armed"}, nil
}

// Only the script handler calls Arm, once per script request whose decision is arm, and serves Arm's answer;
// iPXE's own DHCP requests (user class iPXE) only ask Decide, however often they come.
func TestOnlyTheScriptArms(t *testing.T) {
	b := &armBooter{}
	d := &DHCP{Mode: ModeProxy, ServerIP: net.ParseIP("10.97.0.1").To4(), Booter: b, HTTPBase: "http://10.97.0.1:8081"}
	for range 3 {
		m := discover("52:54:00:00:09:01", dhcpv4.WithUserClass("iPXE", false),
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")))
		if r, err := d.Handle(context.Background(), m, false); err != nil || r == nil {
			t.Fatalf("iPXE's DHCP: %v, %v; want an answer", r, err)
		}
	}
	if n := b.arms.Load(); n != 0 {
		t.Fatalf("DHCP called Arm %d times", n)
	}
	h := &HTTP{Booter: b, Machines: &Memory{}, BaseURL: "http://10.97.0.1:8081"}
	if _, body := get(t, h, "/boot/ipxe?mac=52:54:00:00:09:01"); !strings.Contains(body, "echo nix8s: armed\n") {
		t.Fatalf("script after arm:\n%s\nwant Arm's answer", body)
	}
	if n := b.arms.Load(); n != 1 {
		t.Fatalf("one script request called Arm %d times", n)
	}
}

// A Booter whose Arm answers arm again is a bug, not a script: the machine is told there is no decision.
func TestArmAnsweringArmIsAnError(t *testing.T) {
	h := &HTTP{Booter: evilBooter{Boot{Action: ActionArm}}, Machines: &Memory{}, BaseURL: "http://10.97.0.1:8081"}
	if _, body := get(t, h, "/boot/ipxe?mac=52:54:00:00:09:02"); !strings.Contains(body, "no boot decision for this machine") {
		t.Fatalf("script:\n%s", body)
	}
}
