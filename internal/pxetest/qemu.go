package pxetest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// VM is a QEMU guest (software emulation) netbooting from the bridge; its serial console goes to a file.
type VM struct {
	Serial string
	cmd    *exec.Cmd
	done   chan error
	start  time.Time
}

// VMOptions configure a VM.
type VMOptions struct {
	MAC string
	// MoreMACs are further NICs, each on a tap of its own on the bridge, after the first (PCI order).
	MoreMACs []string
	// BootNIC is the NIC the firmware boots from: 0 the first (MAC), 1 the first of MoreMACs, ... Only it has
	// a boot index, so the firmware boots from it, then from the disk.
	BootNIC int
	// UEFI boots OVMF instead of SeaBIOS. With it the NICs are virtio-net without QEMU's iPXE ROM, so OVMF's
	// own PXE client does DHCP and loads ipxe.efi over TFTP, as UEFI machines without iPXE do.
	UEFI bool
	// Disk, when set, is a raw disk image attached as the first disk (the local-boot test's), next in the
	// boot order after the network: IDE with SeaBIOS, virtio-blk with OVMF.
	Disk string
}

// vmSlots: at most two VMs at a time on a 2-core machine (software emulation).
var vmSlots = make(chan struct{}, 2)

// StartVM boots a VM from the network on a new tap of n; it is killed when the test ends.
func (n *Net) StartVM(t testing.TB, o VMOptions) *VM {
	t.Helper()
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		Unavailable(t, "QEMU tests need qemu-system-x86 (with ipxe-qemu)")
	}
	macs := append([]string{o.MAC}, o.MoreMACs...)
	if o.BootNIC < 0 || o.BootNIC >= len(macs) {
		t.Fatalf("BootNIC %d: the VM has %d NICs", o.BootNIC, len(macs))
	}
	var taps []string
	for range macs {
		taps = append(taps, n.Tap(t))
	}
	vmSlots <- struct{}{}
	serial := filepath.Join(t.TempDir(), "serial.log")
	args := []string{qemu, "-machine", "pc", "-accel", "tcg", "-m", "384", "-smp", "1", "-display", "none",
		"-no-reboot", "-serial", "file:" + serial, "-monitor", "none"}
	// Boot order by boot index (QEMU's fw_cfg "bootorder", read by SeaBIOS and OVMF): the boot NIC, then
	// the disk. A NIC without one is not booted from.
	for i, mac := range macs {
		id := fmt.Sprintf("n%d", i)
		dev := "e1000,netdev=" + id + ",mac=" + mac
		if o.UEFI {
			dev = "virtio-net-pci,netdev=" + id + ",romfile=,mac=" + mac
		}
		if i == o.BootNIC {
			dev += ",bootindex=1"
		}
		args = append(args, "-netdev", "tap,id="+id+",ifname="+taps[i]+",script=no,downscript=no", "-device", dev)
	}
	if o.Disk != "" {
		args = append(args, "-drive", "file="+o.Disk+",format=raw,if=none,id=disk0")
		if o.UEFI {
			args = append(args, "-device", "virtio-blk-pci,drive=disk0,bootindex=2")
		} else {
			args = append(args, "-device", "ide-hd,drive=disk0,bus=ide.0,bootindex=2")
		}
	}
	if o.UEFI {
		code := "/usr/share/ovmf/OVMF.fd"
		if _, err := os.Stat(code); err != nil {
			<-vmSlots
			Unavailable(t, "UEFI tests need ovmf")
		}
		// The test network is IPv4 only: without IPv6 OVMF offers no PXE or HTTP boot over IPv6, which would
		// wait for DHCPv6 answers before the next boot entry.
		args = append(args, "-bios", code, "-fw_cfg", "name=opt/org.tianocore/IPv6Support,string=no")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := n.Command(ctx, args...)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	vm := &VM{Serial: serial, cmd: cmd, done: make(chan error, 1), start: time.Now()}
	if err := cmd.Start(); err != nil {
		cancel()
		<-vmSlots
		t.Fatalf("starting QEMU: %v", err)
	}
	var once sync.Once
	release := func() { once.Do(func() { <-vmSlots }) }
	go func() { err := cmd.Wait(); release(); vm.done <- err; close(vm.done) }()
	t.Cleanup(func() {
		cancel()
		<-vm.done
		if t.Failed() {
			b, _ := os.ReadFile(serial)
			t.Logf("QEMU output: %s\nserial console of %s:\n%s", out.String(), o.MAC, b)
		}
	})
	return vm
}

// LocalDiskMarker is what LocalDisk's boot sector prints on the serial console.
const LocalDiskMarker = "NIX8S-LOCAL-DISK"

// LocalDisk writes a 1 MiB raw disk whose MBR boot code prints LocalDiskMarker to COM1 and halts: proof that
// a machine sent to its disk really booted from it.
func LocalDisk(t testing.TB) string {
	t.Helper()
	code := []byte{
		0xBA, 0xF8, 0x03, // mov dx, 0x3f8
		0xBE, 0x11, 0x7C, // mov si, 0x7c11 (msg)
		0xAC,       // lodsb
		0x84, 0xC0, // test al, al
		0x74, 0x03, // jz done
		0xEE,       // out dx, al
		0xEB, 0xF8, // jmp lodsb
		0xF4,       // done: hlt
		0xEB, 0xFD, // jmp hlt
	}
	mbr := make([]byte, 1<<20)
	copy(mbr, code)
	copy(mbr[len(code):], LocalDiskMarker+"\r\n\x00")
	mbr[510], mbr[511] = 0x55, 0xAA
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, mbr, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// WaitSerial waits until the serial console shows marker; it returns the time since QEMU started.
func (vm *VM) WaitSerial(t testing.TB, marker string, timeout time.Duration) time.Duration {
	t.Helper()
	end := time.Now().Add(timeout)
	for time.Now().Before(end) {
		b, _ := os.ReadFile(vm.Serial)
		if strings.Contains(string(b), marker) {
			return time.Since(vm.start)
		}
		select {
		case <-vm.done:
			b, _ := os.ReadFile(vm.Serial)
			if strings.Contains(string(b), marker) {
				return time.Since(vm.start)
			}
			t.Fatalf("QEMU exited before the serial console showed %q", marker)
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Fatalf("timed out after %v waiting for %q on the serial console", timeout, marker)
	return 0
}

// Wait waits for QEMU to exit (the guest powered off).
func (vm *VM) Wait(t testing.TB, timeout time.Duration) time.Duration {
	t.Helper()
	select {
	case <-vm.done:
		return time.Since(vm.start)
	case <-time.After(timeout):
		t.Fatalf("QEMU still running after %v", timeout)
		return 0
	}
}
