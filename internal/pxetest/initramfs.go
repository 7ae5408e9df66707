package pxetest

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Kernel finds the Debian kernel and e1000 module that stand in for a NixOS netboot kernel: $NIX8S_PXE_KERNEL,
// else the cache .ci/assets-pxe.sh fills (running it when the cache is empty).
func Kernel(t testing.TB) (vmlinuz, e1000 string) {
	t.Helper()
	k := os.Getenv("NIX8S_PXE_KERNEL")
	if k == "" {
		home, _ := os.UserHomeDir()
		k = filepath.Join(home, ".cache", "nix8s", "pxe-kernel", "vmlinuz")
		if _, err := os.Stat(filepath.Join(filepath.Dir(k), "e1000.ko")); err != nil {
			if root, err := repoRoot(); err == nil {
				out, err := exec.Command("bash", filepath.Join(root, ".ci", "assets-pxe.sh")).CombinedOutput()
				if err != nil {
					Unavailable(t, "fetching the test kernel: %v: %s", err, out)
				}
				k = strings.TrimSpace(string(out[bytes.LastIndexByte(bytes.TrimSpace(out), '\n')+1:]))
			}
		}
	}
	m := filepath.Join(filepath.Dir(k), "e1000.ko")
	for _, f := range []string{k, m} {
		if _, err := os.Stat(f); err != nil {
			Unavailable(t, "no test kernel (%v); run .ci/assets-pxe.sh", err)
		}
	}
	return k, m
}

func repoRoot() (string, error) {
	dir, _ := os.Getwd()
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("no go.mod above %s", dir)
}

// Init is the stand-in's /init: it prints a marker, gets an address, and plays the phone-home calls the
// NixOS installer and discovery images make (with busybox wget; there is no curl in it), then powers off.
const Init = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /usr/bin /usr/sbin /sbin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
for a in $(cat /proc/cmdline); do
  case "$a" in
    nix8s.server=*) server=${a#*=} ;;
    nix8s.mac=*) mac=${a#*=} ;;
    nix8s.token=*) token=${a#*=} ;;
    nix8s.generation=*) gen=${a#*=} ;;
    nix8s.role=*) role=${a#*=} ;;
  esac
done
echo "NIX8S-BOOTED role=$role mac=$mac"
insmod /e1000.ko
sleep 1
for i in /sys/class/net/*; do
  [ "$(cat $i/address)" = "$mac" ] && dev=${i##*/}
done
ip link set "$dev" up
udhcpc -i "$dev" -s /udhcpc.sh -q -n -t 10 -T 1 >/dev/null 2>&1 || echo "NIX8S-NO-DHCP"
case "$role" in
  discover)
    wget -q -O /dev/null --post-data "{\"mac\":\"$mac\",\"cpus\":$(nproc),\"memoryKiB\":$(awk '/MemTotal/{print $2}' /proc/meminfo)}" \
      "$server/machine/v1/discover?mac=$mac" && echo "NIX8S-DISCOVERED" ;;
  install)
    wget -q -O /dev/null --header "Authorization: Bearer $token" --post-data "{\"generation\":$gen,\"phase\":\"install\"}" \
      "$server/machine/v1/progress?mac=$mac" &&
    wget -q -O /dev/null --header "Authorization: Bearer $token" --post-data "{\"generation\":$gen,\"phase\":\"reboot\",\"done\":true}" \
      "$server/machine/v1/progress?mac=$mac" && echo "NIX8S-INSTALLED" ;;
esac
echo "NIX8S-POWEROFF"
poweroff -f
`

const udhcpcScript = `#!/bin/busybox sh
[ "$1" = bound ] && ifconfig "$interface" "$ip" netmask "$subnet"
exit 0
`

// Initramfs writes a gzipped newc initramfs with static busybox, Init, and the e1000 module to path.
func Initramfs(t testing.TB, path, e1000 string) {
	t.Helper()
	bb := "/bin/busybox"
	bin, err := os.ReadFile(bb)
	if err != nil {
		Unavailable(t, "the stand-in initramfs needs busybox-static: %v", err)
	}
	if out, _ := exec.Command("file", "-L", bb).Output(); bytes.Contains(out, []byte("dynamically")) {
		Unavailable(t, "%s is not static; install busybox-static", bb)
	}
	mod, err := os.ReadFile(e1000)
	if err != nil {
		t.Fatal(err)
	}
	var raw bytes.Buffer
	w := newcWriter{w: &raw}
	w.dir("bin")
	w.file("bin/busybox", 0o755, bin)
	w.file("init", 0o755, []byte(Init))
	w.file("udhcpc.sh", 0o755, []byte(udhcpcScript))
	w.file("e1000.ko", 0o644, mod)
	w.trailer()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw.Bytes())
	zw.Close()
	if err := os.WriteFile(path, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// newcWriter writes the cpio "newc" format the kernel unpacks (no cpio program needed).
type newcWriter struct {
	w   *bytes.Buffer
	ino int
}

func (c *newcWriter) entry(name string, mode int, data []byte) {
	c.ino++
	fmt.Fprintf(c.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X", c.ino, mode, 0, 0, 1, 0,
		len(data), 0, 0, 0, 0, len(name)+1, 0)
	c.w.WriteString(name + "\x00")
	c.pad()
	c.w.Write(data)
	c.pad()
}

func (c *newcWriter) pad() {
	for c.w.Len()%4 != 0 {
		c.w.WriteByte(0)
	}
}

func (c *newcWriter) dir(name string)                         { c.entry(name, 0o040755, nil) }
func (c *newcWriter) file(name string, perm int, data []byte) { c.entry(name, 0o100000|perm, data) }
func (c *newcWriter) trailer()                                { c.entry("TRAILER!!!", 0, nil) }
