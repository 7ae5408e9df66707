package lima

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"

	"github.com/nix8s/nix8s/internal/atomicfile"
)

// Home is Lima's directory as Lima resolves it (pkg/limatype/dirnames LimaDir): $LIMA_HOME, else ~/.lima, with
// symlinks resolved when it exists. Instance directories, and so the VMs' MACs, derive from it.
func Home(getenv func(string) string) (string, error) {
	dir := getenv("LIMA_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(home, ".lima")
	}
	if _, err := os.Stat(dir); err == nil {
		if r, err := filepath.EvalSymlinks(dir); err == nil {
			dir = r
		}
	}
	return filepath.Abs(dir)
}

// MachineID is the host id Lima hashes into MACs (pkg/osutil/machineid.go): /etc/machine-id or
// /var/lib/dbus/machine-id on Linux, IOPlatformUUID on macOS, else the host name.
func MachineID(ctx context.Context) string {
	if runtime.GOOS == "darwin" {
		out, err := exec.CommandContext(ctx, "/usr/sbin/ioreg", "-a", "-d2", "-c", "IOPlatformExpertDevice").Output()
		if err == nil {
			if m := ioPlatformUUID.FindSubmatch(out); m != nil {
				return string(m[1])
			}
		}
	} else {
		for _, f := range []string{"/etc/machine-id", "/var/lib/dbus/machine-id"} {
			if b, err := os.ReadFile(f); err == nil {
				return strings.TrimSpace(string(b))
			}
		}
	}
	h, _ := os.Hostname()
	return h
}

var ioPlatformUUID = regexp.MustCompile(`<key>IOPlatformUUID</key>\s*<string>([^<]+)</string>`)

// MAC is the MAC Lima gives eth0 of the instance in instDir when its first network is user-v2
// (pkg/limayaml/defaults.go MACAddress, unchanged since 2021): 52:55:55 and the first three bytes of
// sha256(machineID + instDir).
func MAC(machineID, instDir string) string {
	sum := sha256.Sum256([]byte(machineID + instDir))
	return net.HardwareAddr{0x52, 0x55, 0x55, sum[0], sum[1], sum[2]}.String()
}

// LeasesFile is the user-v2 daemon's reservations of network name: read when the daemon starts, written when
// it stops (pkg/networks/usernet: Leases, readLeases, writeLeases), a JSON object of IP to MAC.
func LeasesFile(home, name string) string {
	return filepath.Join(home, "_networks", name, "leases.json")
}

// DaemonRunning says whether network name's user-v2 daemon runs (its pid file names a live process): it
// reads the reservations only when it starts.
func DaemonRunning(home, name string) bool {
	b, err := os.ReadFile(filepath.Join(home, "_networks", name, "usernet_"+name+".pid"))
	if err != nil {
		return false
	}
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err != nil || pid <= 0 {
		return false
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	return p.Signal(sigZero) == nil
}

// Reserve makes every IP of want (IP to MAC) a reservation in the leases file, keeping the entries of other
// addresses (Lima's own gateway, other VMs) and dropping other addresses held by the same MACs. It says whether
// the file changed.
func Reserve(file string, want map[string]string) (bool, error) {
	have := map[string]string{}
	b, err := os.ReadFile(file)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return false, err
	default:
		if len(strings.TrimSpace(string(b))) > 0 && string(strings.TrimSpace(string(b))) != "null" {
			if err := json.Unmarshal(b, &have); err != nil {
				return false, fmt.Errorf("%s: %w", file, err)
			}
		}
	}
	macs := map[string]bool{}
	for _, mac := range want {
		macs[strings.ToLower(mac)] = true
	}
	next := map[string]string{}
	for ip, mac := range have {
		if _, mine := want[ip]; !mine && !macs[strings.ToLower(mac)] {
			next[ip] = mac
		}
	}
	changed := false
	for ip, mac := range want {
		next[ip] = mac
		if !strings.EqualFold(have[ip], mac) {
			changed = true
		}
	}
	if len(next) != len(have) {
		changed = true
	}
	if !changed {
		return false, nil
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return false, err
	}
	out, err := json.Marshal(next)
	if err != nil {
		return false, err
	}
	return true, atomicfile.Write(file, append(out, '\n'), 0o644)
}
