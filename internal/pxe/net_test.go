package pxe

// Tests against real clients over a real (namespaced) network: busybox udhcpc and ISC dhclient for DHCP,
// busybox tftp, busybox wget for HTTP, and QEMU guests that PXE-boot. Root is needed; internal/pxetest skips
// without it, and fails under CI=true.

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/nix8s/nix8s/internal/pxetest"
)

const ipxeDir = "/usr/lib/ipxe"

type rig struct {
	net     *pxetest.Net
	mem     *Memory
	booted  *recordingBooter // every decision asked of mem, by DHCP and HTTP
	leases  *MemLeases
	metrics *Metrics
	base    string
	images  string
}

// startRig starts DHCP (mode), TFTP and HTTP on the rig's server address.
func startRig(t *testing.T, mode Mode) *rig {
	t.Helper()
	return startRigWith(t, mode, ipxeDir, DefaultBootFiles(ipxeDir))
}

// startRigWith is startRig serving the boot file table files (nil: the standard one) from dir.
func startRigWith(t *testing.T, mode Mode, dir string, files BootFiles) *rig {
	t.Helper()
	var served []string
	if files != nil {
		served = files.Files()
	}
	n := pxetest.NewNet(t)
	r := &rig{net: n, mem: &Memory{DiscoveryImage: "discovery"}, leases: &MemLeases{},
		metrics: NewMetrics(prometheus.NewRegistry()), base: "http://" + n.ServerIP.String() + ":8081", images: t.TempDir()}
	r.booted = &recordingBooter{Booter: r.mem}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := &HTTP{Booter: r.booted, Machines: r.mem, Images: DirImages{Dir: r.images}, BaseURL: r.base, IPXEDir: dir, Files: served,
		Metrics: r.metrics, Logger: log, ClientMAC: r.clientMAC}
	d := &DHCP{Mode: mode, Interface: n.HostIf, ServerIP: n.ServerIP, Subnet: n.Subnet,
		RangeStart: net.ParseIP(n.Prefix + "100"), RangeEnd: net.ParseIP(n.Prefix + "150"), Gateway: n.ServerIP,
		LeaseTime: 10 * time.Minute, Leases: r.leases, Booter: r.booted, BootFiles: files, HTTPBase: r.base, Metrics: r.metrics, Logger: log}
	srv := &Server{DHCP: d, TFTP: &TFTP{Dir: dir, Files: served, Metrics: r.metrics, Logger: log}, HTTP: h,
		RA: &RouterAdvertiser{Interface: n.HostIf, Logger: log}, HTTPAddr: n.ServerIP.String() + ":8081", TFTPAddr: n.ServerIP.String() + ":69", Logger: log}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	pxetest.WaitFor(t, 5*time.Second, "the HTTP server", func() bool {
		c, err := net.DialTimeout("tcp", n.ServerIP.String()+":8081", 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return r
}

func (r *rig) clientMAC(ip net.IP) (net.HardwareAddr, bool) {
	l, _ := r.leases.ByIP(context.Background(), ip)
	if l == nil {
		return nil, false
	}
	hw, err := net.ParseMAC(l.MAC)
	return hw, err == nil
}

// recordingBooter remembers for which MAC and firmware each boot decision was asked.
type recordingBooter struct {
	Booter
	mu    sync.Mutex
	asked []string // "<mac> <firmware>"
}

func (b *recordingBooter) Decide(ctx context.Context, mac net.HardwareAddr, fw Firmware) (Boot, error) {
	b.mu.Lock()
	b.asked = append(b.asked, mac.String()+" "+string(fw))
	b.mu.Unlock()
	return b.Booter.Decide(ctx, mac, fw)
}

// macs lists the MACs decisions were asked for by firmware fw, in order.
func (b *recordingBooter) macs(fw Firmware) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, a := range b.asked {
		if m, f, _ := strings.Cut(a, " "); f == string(fw) {
			out = append(out, m)
		}
	}
	return out
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// udhcpc runs busybox udhcpc once on a new client interface and returns the environment its script saw.
func udhcpc(t *testing.T, n *pxetest.Net, mac string, extra ...string) map[string]string {
	t.Helper()
	iface := n.Client(t, mac)
	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	os.WriteFile(script, []byte("#!/bin/sh\n[ \"$1\" = bound ] && env > "+dir+"/env\nexit 0\n"), 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	args := append([]string{"busybox", "udhcpc", "-i", iface, "-s", script, "-q", "-n", "-f", "-t", "5", "-T", "1", "-O", "bootfile", "-O", "tftp"}, extra...)
	out, err := n.Command(ctx, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("udhcpc: %v: %s", err, out)
	}
	return readEnv(t, filepath.Join(dir, "env"))
}

func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the DHCP client's script never ran: %v", err)
	}
	env := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			env[k] = v
		}
	}
	return env
}

func TestRealDHCPClientsFullMode(t *testing.T) {
	r := startRig(t, ModeFull)
	plan := net.ParseIP(r.net.Prefix + "21")
	r.mem.Assign("52:54:00:aa:00:01", "prod-server1", "installer", plan)

	t0 := time.Now()
	env := udhcpc(t, r.net, "52:54:00:aa:00:01", "-V", "PXEClient:Arch:00000:UNDI:002001")
	t.Logf("udhcpc, assigned member: %v", time.Since(t0))
	if env["ip"] != plan.String() || env["subnet"] != "255.255.255.0" || env["router"] != r.net.ServerIP.String() {
		t.Errorf("assigned member got ip=%s subnet=%s router=%s, want its plan IP %v", env["ip"], env["subnet"], env["router"], plan)
	}
	if env["boot_file"] != "undionly.kpxe" || env["siaddr"] != r.net.ServerIP.String() {
		t.Errorf("BIOS PXE client got boot_file=%q siaddr=%q", env["boot_file"], env["siaddr"])
	}

	env = udhcpc(t, r.net, "52:54:00:aa:00:02")
	if ip := net.ParseIP(env["ip"]); ip == nil || !inRange(ip, net.ParseIP(r.net.Prefix+"100"), net.ParseIP(r.net.Prefix+"150")) {
		t.Errorf("unknown machine got %q, want an address of the range", env["ip"])
	}
	if env["boot_file"] != "" {
		t.Errorf("a client that is no PXE client got boot file %q", env["boot_file"])
	}
	if l, _ := r.leases.ByMAC(context.Background(), "52:54:00:aa:00:02"); l == nil || l.IP.String() != env["ip"] {
		t.Errorf("lease not recorded: %+v", l)
	}

	// iPXE (user class "iPXE", sent by udhcpc -x 77): the script URL with the MAC of its request.
	env = udhcpc(t, r.net, "52:54:00:aa:00:03", "-x", "0x4d:69505845")
	if want := r.base + "/boot/ipxe?mac=52:54:00:aa:00:03"; env["boot_file"] != want {
		t.Errorf("iPXE got boot_file %q, want %q", env["boot_file"], want)
	}

	if dhclient, err := exec.LookPath("dhclient"); err == nil {
		iface := r.net.Client(t, "52:54:00:aa:00:04")
		dir := t.TempDir()
		script := filepath.Join(dir, "script")
		os.WriteFile(script, []byte("#!/bin/sh\n[ \"$reason\" = BOUND ] && env > "+dir+"/env\nexit 0\n"), 0o755)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		t0 := time.Now()
		// In the foreground (-d), stopped by the test once its script has seen the lease.
		cmd := r.net.Command(ctx, dhclient, "-4", "-1", "-d", "-sf", script, "-lf", filepath.Join(dir, "leases"),
			"-pf", filepath.Join(dir, "pid"), iface)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		pxetest.WaitFor(t, 20*time.Second, "dhclient to bind", func() bool {
			_, err := os.Stat(filepath.Join(dir, "env"))
			return err == nil
		})
		env := readEnv(t, filepath.Join(dir, "env"))
		t.Logf("dhclient: %v, got %s", time.Since(t0), env["new_ip_address"])
		if ip := net.ParseIP(env["new_ip_address"]); ip == nil || !r.net.Subnet.Contains(ip) {
			t.Errorf("dhclient got %q", env["new_ip_address"])
		}
	} else if os.Getenv("CI") == "true" {
		t.Error("dhclient (isc-dhcp-client) is not installed")
	}
	if n := counter(r.metrics.DHCPReplies.WithLabelValues("full", "ack")); n < 3 {
		t.Errorf("full-mode acks counted: %v", n)
	}
}

func TestRealDHCPClientProxyMode(t *testing.T) {
	r := startRig(t, ModeProxy)
	// A PXE client nix8s boots (discovery is on) gets boot information and no address: the site's DHCP server
	// gives those. udhcpc takes the proxy's answer as its lease, which shows what went over the wire.
	env := udhcpc(t, r.net, "52:54:00:bb:00:01", "-V", "PXEClient:Arch:00000:UNDI:002001")
	if env["ip"] != "0.0.0.0" || env["boot_file"] != "undionly.kpxe" || env["siaddr"] != r.net.ServerIP.String() {
		t.Errorf("proxy answer: ip=%q boot_file=%q siaddr=%q; want no address, undionly.kpxe from %v", env["ip"], env["boot_file"], env["siaddr"], r.net.ServerIP)
	}
	// A client that is not a PXE client is left alone: udhcpc gets no answer at all.
	iface := r.net.Client(t, "52:54:00:bb:00:02")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := r.net.Command(ctx, "busybox", "udhcpc", "-i", iface, "-s", "/bin/true", "-q", "-n", "-f", "-t", "2", "-T", "1").CombinedOutput(); err == nil {
		t.Errorf("the proxy answered a non-PXE client: %s", out)
	}
	if n := counter(r.metrics.DHCPReplies.WithLabelValues("proxy", "offer")); n != 1 {
		t.Errorf("proxy offers counted: %v, want 1", n)
	}
}

func TestRealTFTPClient(t *testing.T) {
	if _, err := os.Stat(filepath.Join(ipxeDir, "undionly.kpxe")); err != nil {
		pxetest.Unavailable(t, "the ipxe package is not installed: %v", err)
	}
	r := startRig(t, ModeProxy)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t0 := time.Now()
	out, err := r.net.Command(ctx, "busybox", "tftp", "-g", "-r", "undionly.kpxe", "-l", filepath.Join(dir, "u"), r.net.ServerIP.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("tftp: %v: %s", err, out)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "u"))
	want, _ := os.ReadFile(filepath.Join(ipxeDir, "undionly.kpxe"))
	if !bytes.Equal(got, want) {
		t.Fatalf("tftp fetched %d bytes, want the %d of undionly.kpxe", len(got), len(want))
	}
	t.Logf("tftp undionly.kpxe (%d bytes): %v", len(got), time.Since(t0))
	for _, bad := range []string{"../../../etc/passwd", "/etc/passwd", "ipxe.lkrn"} {
		if out, err := r.net.Command(ctx, "busybox", "tftp", "-g", "-r", bad, "-l", filepath.Join(dir, "x"), r.net.ServerIP.String()).CombinedOutput(); err == nil {
			t.Errorf("tftp served %q: %s", bad, out)
		}
	}
	if err := r.net.Command(ctx, "busybox", "tftp", "-p", "-l", filepath.Join(dir, "u"), "-r", "ipxe.efi", r.net.ServerIP.String()).Run(); err == nil {
		t.Error("tftp accepted a write")
	}
	if n := counter(r.metrics.TFTPBytes); int(n) != len(want) {
		t.Errorf("tftp bytes counted: %v", n)
	}
}

func wget(t *testing.T, r *rig, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := r.net.Command(ctx, "busybox", "wget", "-q", "-O", "-", url).CombinedOutput()
	if err != nil {
		t.Fatalf("wget %s: %v: %s", url, err, out)
	}
	return string(out)
}

func TestHTTPScriptsOverTheNetwork(t *testing.T) {
	r := startRig(t, ModeProxy)
	writeImage(t, r.images, "installer", []byte("kernel"), []byte("initrd"))
	writeImage(t, r.images, "discovery", []byte("kernel"), []byte("initrd"))
	r.mem.Assign("52:54:00:cc:00:01", "prod-server1", "installer", nil)
	r.mem.ArmInstall("52:54:00:cc:00:01")
	r.mem.MarkInstalled("52:54:00:cc:00:03")
	for _, tc := range []struct{ name, mac, want string }{
		{"assigned", "52:54:00:cc:00:01", "/boot/images/installer/bzImage"},
		{"unknown", "52:54:00:cc:00:02", "/boot/images/discovery/bzImage"},
		{"installed", "52:54:00:cc:00:03", "sanboot --no-describe --drive 0x80"},
	} {
		if s := wget(t, r, r.base+"/boot/ipxe?mac="+tc.mac); !strings.Contains(s, tc.want) {
			t.Errorf("%s: script lacks %q:\n%s", tc.name, tc.want, s)
		}
	}
	if s := wget(t, r, r.base+"/boot/images/installer/initrd"); s != "initrd" {
		t.Errorf("initrd: %q", s)
	}
}

func writeImage(t *testing.T, dir, id string, kernel, initrd []byte, cmdline ...string) {
	t.Helper()
	d := filepath.Join(dir, id)
	os.MkdirAll(d, 0o755)
	os.WriteFile(filepath.Join(d, "bzImage"), kernel, 0o644)
	os.WriteFile(filepath.Join(d, "initrd"), initrd, 0o644)
	if len(cmdline) > 0 {
		os.WriteFile(filepath.Join(d, "cmdline"), []byte(strings.Join(cmdline, " ")), 0o644)
	}
}

func counter(c prometheus.Counter) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetCounter().GetValue()
}

func osSymlink(from, to string) error {
	os.Remove(to)
	return os.Symlink(from, to)
}

// The boot file table against real DHCP clients announcing each architecture: busybox udhcpc with option 93
// (-x 0x5d:...) and the vendor class, ISC dhclient with `send` of options 93 and 97. The ARM64 binary is a
// stand-in file (no ARM64 firmware runs here): what is checked is the name each client is offered.
func TestRealDHCPClientsByArchitecture(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"undionly.kpxe", "snponly.efi", "ipxe.efi"} {
		if err := os.Symlink(filepath.Join(ipxeDir, f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "snp-arm64.efi"), []byte("stand-in for iPXE's bin-arm64-efi/snp.efi"), 0o644)
	files := DefaultBootFiles(dir)
	if err := files.Check(dir); err != nil {
		pxetest.Unavailable(t, "the ipxe package is not installed: %v", err)
	}
	r := startRigWith(t, ModeFull, dir, files)
	base := r.base + "/boot/"
	tests := []struct {
		name, class string
		arch        Arch
		file        string // "" no answer
	}{
		{"x86 BIOS", "PXEClient:Arch:00000:UNDI:002001", ArchBIOS, "undionly.kpxe"},
		{"x86-64 UEFI, 7", "PXEClient:Arch:00007:UNDI:003016", ArchX64, "snponly.efi"},
		{"x86-64 UEFI, 9", "PXEClient:Arch:00009:UNDI:003016", ArchX64Alt, "snponly.efi"},
		{"ARM64 UEFI", "PXEClient:Arch:00011:UNDI:003000", ArchARM64, "snp-arm64.efi"},
		{"x86-64 HTTP boot", "HTTPClient:Arch:00016:UNDI:003000", ArchX64HTTP, base + "snponly.efi"},
		{"ARM64 HTTP boot", "HTTPClient:Arch:00019:UNDI:003000", ArchARM64HTTP, base + "snp-arm64.efi"},
		{"32-bit UEFI, no binary", "PXEClient:Arch:00006:UNDI:003016", ArchIA32, ""},
		{"RISC-V 64 UEFI, not an architecture nix8s boots", "PXEClient:Arch:00027:UNDI:003000", 27, ""},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mac := fmt.Sprintf("52:54:00:ab:00:%02x", i+1)
			opt93 := fmt.Sprintf("0x5d:%04x", uint16(tc.arch))
			if tc.file != "" {
				env := udhcpc(t, r.net, mac, "-V", tc.class, "-x", opt93)
				if env["boot_file"] != tc.file {
					t.Errorf("offered boot_file %q, want %q", env["boot_file"], tc.file)
				}
				return
			}
			iface := r.net.Client(t, mac)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := r.net.Command(ctx, "busybox", "udhcpc", "-i", iface, "-s", "/bin/true", "-q", "-n", "-f", "-t", "2", "-T", "1",
				"-V", tc.class, "-x", opt93).CombinedOutput()
			if err == nil {
				t.Errorf("a client of architecture %d was answered: %s", tc.arch, out)
			}
			if l, _ := r.leases.ByMAC(context.Background(), mac); l != nil {
				t.Errorf("it was leased an address: %+v", l)
			}
		})
	}
	if n := counter(r.metrics.NoBootFile.WithLabelValues("6", "no-binary")); n < 1 {
		t.Errorf("32-bit UEFI requests without a binary counted: %v", n)
	}
	if n := counter(r.metrics.NoBootFile.WithLabelValues("other", "unknown-arch")); n < 1 {
		t.Errorf("RISC-V requests counted: %v", n)
	}

	// ISC dhclient sending option 93 (ARM64) and 97 (its machine identifier) from its config file.
	dhclient, err := exec.LookPath("dhclient")
	if err != nil {
		pxetest.Unavailable(t, "dhclient (isc-dhcp-client) is not installed")
	}
	iface := r.net.Client(t, "52:54:00:ab:01:01")
	cdir := t.TempDir()
	conf := `option pxe-arch code 93 = unsigned integer 16;
option pxe-guid code 97 = string;
send vendor-class-identifier "PXEClient:Arch:00011:UNDI:003000";
send pxe-arch 11;
send pxe-guid 00:12:34:56:78:9a:bc:de:f0:12:34:56:78:9a:bc:de:f0;
request subnet-mask, routers, pxe-guid;
`
	os.WriteFile(filepath.Join(cdir, "dhclient.conf"), []byte(conf), 0o644)
	script := filepath.Join(cdir, "script")
	os.WriteFile(script, []byte("#!/bin/sh\n[ \"$reason\" = BOUND ] && env > "+cdir+"/env\nexit 0\n"), 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := r.net.Command(ctx, dhclient, "-4", "-1", "-d", "-cf", filepath.Join(cdir, "dhclient.conf"), "-sf", script,
		"-lf", filepath.Join(cdir, "leases"), "-pf", filepath.Join(cdir, "pid"), iface)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pxetest.WaitFor(t, 20*time.Second, "dhclient to bind", func() bool {
		_, err := os.Stat(filepath.Join(cdir, "env"))
		return err == nil
	})
	env := readEnv(t, filepath.Join(cdir, "env"))
	if env["new_filename"] != "snp-arm64.efi" {
		t.Errorf("dhclient (ARM64) was offered %q, want snp-arm64.efi", env["new_filename"])
	}
	if want := "0:12:34:56:78:9a:bc:de:f0:12:34:56:78:9a:bc:de:f0"; env["new_pxe_guid"] != want {
		t.Errorf("option 97 came back as %q, want %q (env: %v)", env["new_pxe_guid"], want, env)
	}
}
