package pxe

// End to end under QEMU (software emulation). NixOS netboot images cannot be built on a test machine (no Nix
// store builds here), so the images served are stand-ins: a Debian kernel (.ci/assets-pxe.sh) and a busybox
// initramfs built by the test, whose /init prints a marker on the serial console, plays the phone-home calls
// the NixOS installer and discovery images make, and powers off. Everything else is real: QEMU's iPXE ROM does
// DHCP against our server, fetches the script our HTTP server renders for its MAC, and loads what it names.

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nix8s/nix8s/internal/pxetest"
	"github.com/nix8s/nix8s/internal/store"
)

func TestQEMUNetboot(t *testing.T) {
	if testing.Short() {
		t.Skip("QEMU boots take ~10 s each")
	}
	r := startRig(t, ModeFull)
	standInImages(t, r.images)

	const assigned, unknown, installed, uefi = "52:54:00:dd:00:01", "52:54:00:dd:00:02", "52:54:00:dd:00:03", "52:54:00:dd:00:04"
	plan := net.ParseIP(r.net.Prefix + "31")
	r.mem.Assign(assigned, "prod-server1", "installer", plan)
	if _, _, err := r.mem.ArmInstall(assigned); err != nil {
		t.Fatal(err)
	}
	r.mem.MarkInstalled(installed)

	t.Run("group", func(t *testing.T) {
		t.Run("assigned machine boots its member's installer, which reports done", func(t *testing.T) {
			t.Parallel()
			vm := r.net.StartVM(t, pxetest.VMOptions{MAC: assigned})
			t.Logf("marker after %v", vm.WaitSerial(t, "NIX8S-BOOTED role=install mac="+assigned, 90*time.Second))
			vm.WaitSerial(t, "NIX8S-INSTALLED", 60*time.Second)
			t.Logf("powered off after %v", vm.Wait(t, 30*time.Second))
			m := r.mem.Machine(assigned)
			if m.State != store.StateInstalling || m.armed || strings.Join(m.Phases, ",") != "install,reboot" {
				t.Errorf("machine after the install: state %s armed %v phases %v", m.State, m.armed, m.Phases)
			}
			if l, _ := r.leases.ByMAC(t.Context(), assigned); l == nil || !l.IP.Equal(plan) {
				t.Errorf("lease of the assigned machine: %+v, want its plan IP %v", l, plan)
			}
		})
		t.Run("unknown machine boots discovery and shows up as discovered", func(t *testing.T) {
			t.Parallel()
			vm := r.net.StartVM(t, pxetest.VMOptions{MAC: unknown})
			t.Logf("marker after %v", vm.WaitSerial(t, "NIX8S-BOOTED role=discover mac="+unknown, 90*time.Second))
			vm.WaitSerial(t, "NIX8S-DISCOVERED", 60*time.Second)
			t.Logf("powered off after %v", vm.Wait(t, 30*time.Second))
			m := r.mem.Machine(unknown)
			var facts struct {
				MAC       string `json:"mac"`
				CPUs      int    `json:"cpus"`
				MemoryKiB int    `json:"memoryKiB"`
			}
			if m == nil || json.Unmarshal(m.Facts, &facts) != nil || facts.MAC != unknown || facts.CPUs != 1 || facts.MemoryKiB == 0 {
				t.Errorf("discovered machine: %+v", m)
			}
		})
	})
	t.Run("group2", func(t *testing.T) {
		t.Run("installed machine is sent to its disk", func(t *testing.T) {
			t.Parallel()
			vm := r.net.StartVM(t, pxetest.VMOptions{MAC: installed, Disk: pxetest.LocalDisk(t)})
			t.Logf("local disk booted after %v", vm.WaitSerial(t, pxetest.LocalDiskMarker, 90*time.Second))
		})
		// OVMF's own PXE (no iPXE ROM): DHCP without option 60 in our answer, snponly.efi over TFTP, then iPXE asks
		// again and gets the script. The stand-in has no virtio-net driver, so only its boot marker is checked.
		t.Run("UEFI machine chain-loads snponly.efi over TFTP and boots discovery", func(t *testing.T) {
			t.Parallel()
			vm := r.net.StartVM(t, pxetest.VMOptions{MAC: uefi, UEFI: true})
			t.Logf("marker after %v", vm.WaitSerial(t, "NIX8S-BOOTED role=discover mac="+uefi, 150*time.Second))
			if n := counter(r.metrics.TFTPTransfers.WithLabelValues("snponly.efi", "ok")); n < 1 {
				t.Errorf("snponly.efi TFTP transfers counted: %v", n)
			}
		})
	})
	if n := counter(r.metrics.Boots.WithLabelValues("local")); n < 1 {
		t.Errorf("local boots counted: %v", n)
	}
}

func symlinkOrCopy(t *testing.T, from, to string) {
	t.Helper()
	if err := osSymlink(from, to); err != nil {
		t.Fatal(err)
	}
}

// Proxy mode beside a site DHCP server (busybox udhcpd): the VM's iPXE takes its address from the site and its
// boot file from nix8sd's proxy offer; the stand-in's udhcpc (no PXE client) is answered by the site alone.
func TestQEMUProxyMode(t *testing.T) {
	if testing.Short() {
		t.Skip("QEMU boots take ~10 s each")
	}
	r := startRig(t, ModeProxy)
	r.net.SiteDHCP(t)
	kernel, e1000 := pxetest.Kernel(t)
	initrd := filepath.Join(t.TempDir(), "initrd")
	pxetest.Initramfs(t, initrd, e1000)
	d := filepath.Join(r.images, "discovery")
	writeImage(t, r.images, "discovery", nil, nil, "console=ttyS0", "quiet", "panic=-1", "nix8s.role=discover")
	symlinkOrCopy(t, kernel, filepath.Join(d, "bzImage"))
	symlinkOrCopy(t, initrd, filepath.Join(d, "initrd"))

	const mac = "52:54:00:dd:01:01"
	vm := r.net.StartVM(t, pxetest.VMOptions{MAC: mac})
	t.Logf("marker after %v", vm.WaitSerial(t, "NIX8S-BOOTED role=discover mac="+mac, 120*time.Second))
	vm.WaitSerial(t, "NIX8S-DISCOVERED", 60*time.Second)
	t.Logf("powered off after %v", vm.Wait(t, 30*time.Second))
	if m := r.mem.Machine(mac); m == nil {
		t.Error("the machine was not recorded as discovered")
	}
	if n := counter(r.metrics.DHCPReplies.WithLabelValues("proxy", "offer")); n < 1 {
		t.Errorf("proxy offers counted: %v", n)
	}
	if n, _ := r.leases.ByMAC(t.Context(), mac); n != nil {
		t.Errorf("proxy mode leased an address: %+v", n)
	}
}

// An installed UEFI machine (OVMF, boot order: network, then disk) is sent to its disk: OVMF's PXE loads
// snponly.efi over TFTP, iPXE gets the local-disk script and exits with a failure; OVMF goes on to its next
// boot entry, HTTP boot over IPv4 of the same NIC, which our DHCP answers with snponly.efi over HTTP and the
// same script, then to the disk, whose EFI system partition holds a GRUB that prints a marker. With `exit 0`
// OVMF stops at its front page instead (EDK2 BdsDxe shows its menu after a boot option that returned
// EFI_SUCCESS; tried by hand), and Debian 12's ipxe.efi hangs in its exit path (tried by hand: why UEFI
// gets snponly.efi).
func TestQEMUUEFILocalBoot(t *testing.T) {
	if testing.Short() {
		t.Skip("QEMU boots take ~20 s each")
	}
	r := startRig(t, ModeFull)
	const mac = "52:54:00:dd:02:01"
	r.mem.MarkInstalled(mac)
	vm := r.net.StartVM(t, pxetest.VMOptions{MAC: mac, UEFI: true, Disk: pxetest.UEFIDisk(t)})
	t.Logf("disk booted after %v", vm.WaitSerial(t, pxetest.UEFIDiskMarker, 240*time.Second))
	serial, _ := os.ReadFile(vm.Serial)
	for _, l := range strings.Split(string(serial), "\n") {
		if i := strings.Index(l, "BdsDxe: "); i >= 0 { // the boot entries OVMF went through
			t.Log(strings.TrimSpace(l[i:]))
		}
	}
	script := bytes.Index(serial, []byte("nix8s: installed; booting from the local disk"))
	if script < 0 || script > bytes.Index(serial, []byte(pxetest.UEFIDiskMarker)) {
		t.Errorf("the disk booted without iPXE running the local-disk script first (script at %d)", script)
	}
	if got := r.booted.macs(FirmwareIPXE); len(got) == 0 || slices.ContainsFunc(got, func(m string) bool { return m != mac }) {
		t.Errorf("iPXE's DHCP and script requests asked decisions for %v, want only %s", got, mac)
	}
	if n := counter(r.metrics.Boots.WithLabelValues("local")); n < 1 {
		t.Errorf("local boots counted: %v", n)
	}
}

// A machine with two NICs booting from the second is known by the second NIC's MAC: its iPXE (QEMU's ROM on
// the second e1000) gets the script URL with the MAC of its DHCP request. With ${net0/mac} it would ask for
// the first NIC's MAC, an unknown machine, and boot discovery instead of its member's installer.
func TestQEMUSecondNIC(t *testing.T) {
	if testing.Short() {
		t.Skip("QEMU boots take ~10 s each")
	}
	r := startRig(t, ModeFull)
	standInImages(t, r.images)
	const first, second = "52:54:00:dd:03:01", "52:54:00:dd:03:02"
	r.mem.Assign(second, "prod-server1", "installer", nil)
	if _, _, err := r.mem.ArmInstall(second); err != nil {
		t.Fatal(err)
	}
	vm := r.net.StartVM(t, pxetest.VMOptions{MAC: first, MoreMACs: []string{second}, BootNIC: 1})
	t.Logf("marker after %v", vm.WaitSerial(t, "NIX8S-BOOTED role=", 120*time.Second))
	vm.WaitSerial(t, "NIX8S-POWEROFF", 60*time.Second)
	serial, _ := os.ReadFile(vm.Serial)
	if !bytes.Contains(serial, []byte("NIX8S-BOOTED role=install mac="+second)) || !bytes.Contains(serial, []byte("NIX8S-INSTALLED")) {
		t.Errorf("the second NIC's member did not install")
	}
	if got := r.booted.macs(FirmwareIPXE); len(got) == 0 || slices.ContainsFunc(got, func(m string) bool { return m != second }) {
		t.Errorf("iPXE's DHCP and script requests asked decisions for %v, want only %s", got, second)
	}
	if m := r.mem.Machine(second); m == nil || m.State != store.StateInstalling || m.armed {
		t.Errorf("the second NIC's machine is not installed: %v", m != nil)
	}
	if m := r.mem.Machine(first); m != nil {
		t.Errorf("the first NIC's MAC was recorded (state %q)", m.State)
	}
}

// standInImages puts the installer and discovery images the QEMU tests boot into dir: a Debian kernel and a
// busybox initramfs that prints its role on the serial console (NixOS netboot images cannot be built here).
func standInImages(t *testing.T, dir string) {
	t.Helper()
	kernel, e1000 := pxetest.Kernel(t)
	initrd := filepath.Join(t.TempDir(), "initrd")
	pxetest.Initramfs(t, initrd, e1000)
	for _, img := range []struct{ id, role string }{{"installer", "install"}, {"discovery", "discover"}} {
		d := filepath.Join(dir, img.id)
		writeImage(t, dir, img.id, nil, nil, "console=ttyS0", "quiet", "panic=-1", "nix8s.role="+img.role)
		symlinkOrCopy(t, kernel, filepath.Join(d, "bzImage"))
		symlinkOrCopy(t, initrd, filepath.Join(d, "initrd"))
	}
}
