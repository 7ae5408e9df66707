package pxe

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/nix8s/nix8s/internal/store"
)

func imagesDir(t *testing.T) string {
	dir := t.TempDir()
	for _, id := range []string{"inst1", "disc"} {
		os.MkdirAll(filepath.Join(dir, id), 0o755)
		os.WriteFile(filepath.Join(dir, id, "bzImage"), []byte("kernel-"+id+strings.Repeat("k", 5000)), 0o644)
		os.WriteFile(filepath.Join(dir, id, "initrd"), []byte("initrd-"+id), 0o644)
	}
	return dir
}

func newHTTP(t *testing.T) (*HTTP, *Memory) {
	mem := &Memory{DiscoveryImage: "disc"}
	return &HTTP{Booter: mem, Machines: mem, Images: DirImages{Dir: imagesDir(t)}, BaseURL: "http://10.97.0.1:8081"}, mem
}

func get(t *testing.T, h http.Handler, url string) (int, string) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", url, nil))
	return rec.Code, rec.Body.String()
}

func TestScripts(t *testing.T) {
	h, mem := newHTTP(t)
	mem.Assign("52:54:00:00:00:01", "prod-server1", "inst1", nil)
	tok, _, err := mem.ArmInstall("52:54:00:00:00:01")
	if err != nil {
		t.Fatal(err)
	}
	mem.MarkInstalled("52:54:00:00:00:03")
	tests := []struct {
		name, mac string
		code      int
		want      []string
		not       []string
	}{
		{"assigned machine gets its member's installer and the one-time token", "52-54-00-00-00-01", 200,
			[]string{"kernel http://10.97.0.1:8081/boot/images/inst1/bzImage initrd=initrd ", "nix8s.mac=52:54:00:00:00:01",
				"nix8s.generation=1", "nix8s.token=" + tok, "initrd --name initrd http://10.97.0.1:8081/boot/images/inst1/initrd", "boot"}, nil},
		{"the token is handed out once per generation", "52:54:00:00:00:01", 200,
			[]string{"images/inst1/bzImage"}, []string{"nix8s.token"}},
		{"unknown machine gets discovery", "52:54:00:00:00:02", 200, []string{"images/disc/bzImage", "nix8s.mac=52:54:00:00:00:02"}, []string{"token"}},
		// UEFI: a failing exit, so the firmware tries its next boot entry (exit 0 ends in EDK2's boot menu).
		{"installed machine boots its disk", "52:54:00:00:00:03", 200, []string{"iseq ${platform} efi && exit 1 ||\n", "sanboot --no-describe --drive 0x80"},
			[]string{"kernel", "efi && exit 0"}},
		{"MAC with an injected command is refused", "52:54:00:00:00:01%0Ashell", 400, []string{"bad mac"}, []string{"shell\n"}},
		{"MAC with iPXE expansion is refused", "${net0/ip}", 400, nil, nil},
		{"missing MAC is refused", "", 400, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(t, h, "/boot/ipxe?mac="+tc.mac)
			if code != tc.code {
				t.Fatalf("code %d, want %d: %s", code, tc.code, body)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("script lacks %q:\n%s", w, body)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(body, w) {
					t.Errorf("script has %q:\n%s", w, body)
				}
			}
		})
	}
	mem.DiscoveryImage = ""
	if _, body := get(t, h, "/boot/ipxe?mac=52:54:00:00:00:09"); !strings.Contains(body, "exit 1") || strings.Contains(body, "kernel") {
		t.Errorf("unknown machine without discovery should fall through:\n%s", body)
	}
}

type evilBooter struct{ b Boot }

func (e evilBooter) Decide(context.Context, net.HardwareAddr, Firmware) (Boot, error) {
	return e.b, nil
}
func (e evilBooter) Arm(context.Context, net.HardwareAddr, Boot) (Boot, error) { return e.b, nil }

func TestScriptRefusesInjectedValues(t *testing.T) {
	for _, b := range []Boot{
		{Action: ActionInstall, Image: "inst1", Cmdline: []string{"quiet\nshell"}},
		{Action: ActionInstall, Image: "inst1", Cmdline: []string{"a=${root-path}"}},
		{Action: ActionInstall, Image: "inst1", Cmdline: []string{"a=b c"}},
		{Action: ActionInstall, Image: "inst1", Cmdline: []string{"a=b;shell"}},
		{Action: ActionInstall, Image: "../etc"},
		{Action: ActionDiscover, Image: "disc\nshell"},
		{Action: "chain http://evil/"},
	} {
		h, _ := newHTTP(t)
		h.Booter = evilBooter{b}
		_, body := get(t, h, "/boot/ipxe?mac=52:54:00:00:00:01")
		if strings.Contains(body, "kernel") || strings.Contains(body, "shell") || strings.Contains(body, "evil") || !strings.Contains(body, "exit 1") {
			t.Errorf("%+v: script should refuse:\n%s", b, body)
		}
	}
}

func TestImagesRangeRequests(t *testing.T) {
	h, _ := newHTTP(t)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/boot/images/inst1/bzImage", nil)
	req.Header.Set("Range", "bytes=0-5")
	h.ServeHTTP(rec, req)
	if rec.Code != 206 || rec.Body.String() != "kernel" {
		t.Fatalf("range: %d %q", rec.Code, rec.Body.String())
	}
	for _, p := range []string{"/boot/images/inst1/cmdline", "/boot/images/..%2f..%2fetc/bzImage", "/boot/images/nope/initrd", "/boot/passwd"} {
		if code, _ := get(t, h, p); code != 404 {
			t.Errorf("%s: %d, want 404", p, code)
		}
	}
}

func post(h http.Handler, url, auth, body, remote string) int {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", url, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	if remote != "" {
		req.RemoteAddr = remote
	}
	h.ServeHTTP(rec, req)
	return rec.Code
}

func TestMachineEndpoints(t *testing.T) {
	h, mem := newHTTP(t)
	h.ReportRate = rate.Inf
	h.ClientMAC = func(ip net.IP) (net.HardwareAddr, bool) {
		if ip.String() == "10.97.0.50" {
			hw, _ := net.ParseMAC("52:54:00:00:00:05")
			return hw, true
		}
		return nil, false
	}
	const m1 = "52:54:00:00:00:01"
	mem.Assign(m1, "prod-server1", "inst1", nil)
	tok, _, _ := mem.ArmInstall(m1)
	const hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOvD8Dx1Tm0iULqKVZ1m2ZfmoTqHcTdk3GJ0hZr9Z4Zb"
	steps := []struct {
		name, url, auth, body, remote string
		code                          int
	}{
		{"discovery facts recorded", "/machine/v1/discover?mac=52:54:00:00:00:07", "", `{"mac":"52-54-00-00-00-07","cpus":2}`, "", 204},
		{"facts for another MAC refused", "/machine/v1/discover?mac=52:54:00:00:00:07", "", `{"mac":"52:54:00:00:00:08"}`, "", 403},
		{"facts without a MAC refused", "/machine/v1/discover?mac=52:54:00:00:00:07", "", `{"cpus":2}`, "", 400},
		{"facts not an object refused", "/machine/v1/discover?mac=52:54:00:00:00:07", "", `[1]`, "", 400},
		{"facts too large refused", "/machine/v1/discover?mac=52:54:00:00:00:07", "", `{"mac":"52:54:00:00:00:07","x":"` + strings.Repeat("a", 70000) + `"}`, "", 413},
		{"a leased client cannot report for another MAC", "/machine/v1/discover?mac=52:54:00:00:00:07", "", `{"mac":"52:54:00:00:00:07"}`, "10.97.0.50:1234", 403},
		{"progress without token", "/machine/v1/progress?mac=" + m1, "", `{"generation":1,"phase":"disko"}`, "", 401},
		{"progress with a wrong token", "/machine/v1/progress?mac=" + m1, "x" + tok, `{"generation":1,"phase":"disko"}`, "", 403},
		{"progress with the token for another MAC", "/machine/v1/progress?mac=52:54:00:00:00:07", tok, `{"generation":1,"phase":"disko"}`, "", 403},
		{"progress of another generation", "/machine/v1/progress?mac=" + m1, tok, `{"generation":2,"phase":"disko"}`, "", 403},
		{"progress with unknown fields", "/machine/v1/progress?mac=" + m1, tok, `{"generation":1,"phase":"disko","state":"ready"}`, "", 400},
		{"progress recorded", "/machine/v1/progress?mac=" + m1, tok, `{"generation":1,"phase":"disko"}`, "", 204},
		{"host key before done refused", "/machine/v1/progress?mac=" + m1, tok, `{"generation":1,"phase":"install","hostKey":"` + hostKey + `"}`, "", 400},
		{"host key with a comment refused", "/machine/v1/progress?mac=" + m1, tok, `{"generation":1,"phase":"reboot","done":true,"hostKey":"` + hostKey + ` root@nixos"}`, "", 400},
		{"two host keys refused", "/machine/v1/progress?mac=" + m1, tok, `{"generation":1,"phase":"reboot","done":true,"hostKey":"` + hostKey + `\n10.0.0.9 ` + hostKey + `"}`, "", 400},
		{"host key of an unknown type refused", "/machine/v1/progress?mac=" + m1, tok, `{"generation":1,"phase":"reboot","done":true,"hostKey":"ssh-dss ` + strings.Fields(hostKey)[1] + `"}`, "", 400},
		{"host key not base64 refused", "/machine/v1/progress?mac=" + m1, tok, `{"generation":1,"phase":"reboot","done":true,"hostKey":"ssh-ed25519 AAAA$$"}`, "", 400},
		{"host key too long refused", "/machine/v1/progress?mac=" + m1, tok, `{"generation":1,"phase":"reboot","done":true,"hostKey":"ssh-rsa ` + strings.Repeat("A", 5000) + `"}`, "", 400},
		{"done recorded", "/machine/v1/progress?mac=" + m1, tok, `{"generation":1,"phase":"reboot","done":true,"hostKey":"` + hostKey + `"}`, "", 204},
		{"token invalid after done", "/machine/v1/progress?mac=" + m1, tok, `{"generation":1,"phase":"again"}`, "", 403},
	}
	for _, s := range steps {
		if code := post(h, s.url, s.auth, s.body, s.remote); code != s.code {
			t.Errorf("%s: %d, want %d", s.name, code, s.code)
		}
	}
	// Done: installing, disarmed, until its node registers (as a stored machine).
	if x := mem.Machine(m1); x.State != store.StateInstalling || x.armed || strings.Join(x.Phases, ",") != "disko,reboot" || x.HostKey != hostKey {
		t.Errorf("machine after install: %+v", x)
	}
	if _, body := get(t, h, "/boot/ipxe?mac="+m1); !strings.Contains(body, "sanboot") {
		t.Errorf("installed machine should boot its disk:\n%s", body)
	}
	if x := mem.Machine("52:54:00:00:00:07"); x == nil || !strings.Contains(string(x.Facts), `"cpus":2`) {
		t.Errorf("discovered machine: %+v", x)
	}
}

func TestReportRateLimit(t *testing.T) {
	h, _ := newHTTP(t)
	var limited bool
	for i := 0; i < 30; i++ {
		if post(h, "/machine/v1/discover?mac=52:54:00:00:00:07", "", `{"mac":"52:54:00:00:00:07"}`, "10.97.0.9:1") == 429 {
			limited = true
		}
	}
	if !limited {
		t.Error("30 reports in a burst from one address were all accepted")
	}
}

func discover(mac string, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	hw, _ := net.ParseMAC(mac)
	m, _ := dhcpv4.NewDiscovery(hw, mods...)
	return m
}

func TestDHCPBootFiles(t *testing.T) {
	mem := &Memory{DiscoveryImage: "disc"}
	_, n, _ := net.ParseCIDR("10.97.0.0/24")
	tests := []struct {
		name     string
		mode     Mode
		req      *dhcpv4.DHCPv4
		file     string
		class    string // option 60 in the reply
		etherbot bool
	}{
		{"BIOS PXE gets undionly over TFTP (proxy)", ModeProxy, discover("52:54:00:00:01:01", dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")), dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC))), "undionly.kpxe", "PXEClient", false},
		{"UEFI PXE gets ipxe.efi (full, no option 60)", ModeFull, discover("52:54:00:00:01:02", dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003016")), dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64))), "ipxe.efi", "", false},
		{"UEFI HTTP boot gets the URL of ipxe.efi, option 60 echoed", ModeFull, discover("52:54:00:00:01:03", dhcpv4.WithOption(dhcpv4.OptClassIdentifier("HTTPClient:Arch:00016:UNDI:003001")), dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64_HTTP))), "http://10.97.0.1:8081/boot/ipxe.efi", "HTTPClient", false},
		{"iPXE gets the script URL and 175.176=1 (full)", ModeFull, discover("52:54:00:00:01:04", dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")), dhcpv4.WithUserClass("iPXE", false)), "http://10.97.0.1:8081/boot/ipxe?mac=52:54:00:00:01:04", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &DHCP{Mode: tc.mode, ServerIP: net.ParseIP("10.97.0.1").To4(), Subnet: n, RangeStart: net.ParseIP("10.97.0.100"),
				RangeEnd: net.ParseIP("10.97.0.110"), Leases: &MemLeases{}, Booter: mem, HTTPBase: "http://10.97.0.1:8081"}
			if err := d.Check(); err != nil {
				t.Fatal(err)
			}
			r, err := d.Handle(context.Background(), tc.req, false)
			if err != nil || r == nil {
				t.Fatalf("no reply: %v", err)
			}
			if r.BootFileName != tc.file || r.MessageType() != dhcpv4.MessageTypeOffer {
				t.Errorf("file %q type %v, want %q offer", r.BootFileName, r.MessageType(), tc.file)
			}
			if got := r.ClassIdentifier(); got != tc.class {
				t.Errorf("option 60 %q, want %q", got, tc.class)
			}
			if got := r.Options.Has(dhcpv4.OptionEtherboot); got != tc.etherbot {
				t.Errorf("option 175 present %v, want %v", got, tc.etherbot)
			}
			if tc.mode == ModeProxy && !r.YourIPAddr.IsUnspecified() {
				t.Errorf("proxy offered an address %v", r.YourIPAddr)
			}
			if tc.mode == ModeFull && !n.Contains(r.YourIPAddr) {
				t.Errorf("full mode offered %v", r.YourIPAddr)
			}
		})
	}
}

func TestDHCPProxyLeavesOthersAlone(t *testing.T) {
	mem := &Memory{} // no discovery: unknown machines are ignored
	d := &DHCP{Mode: ModeProxy, ServerIP: net.ParseIP("10.97.0.1").To4(), Booter: mem, HTTPBase: "http://10.97.0.1:8081"}
	for _, m := range []*dhcpv4.DHCPv4{
		discover("52:54:00:00:02:01"), // not a PXE client
		discover("52:54:00:00:02:02", dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000"))), // unknown
	} {
		if r, _ := d.Handle(context.Background(), m, false); r != nil {
			t.Errorf("answered %v", m.ClientHWAddr)
		}
	}
}

func TestDHCPChainLoopBroken(t *testing.T) {
	mem := &Memory{DiscoveryImage: "disc"}
	d := &DHCP{Mode: ModeProxy, ServerIP: net.ParseIP("10.97.0.1").To4(), Booter: mem, HTTPBase: "http://10.97.0.1:8081"}
	m := discover("52:54:00:00:03:01", dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000")))
	var answered int
	for i := 0; i < 10; i++ {
		if r, _ := d.Handle(context.Background(), m, false); r != nil {
			answered++
		}
	}
	if answered != chainLimit {
		t.Errorf("answered %d binary requests in a row, want %d", answered, chainLimit)
	}
}

func TestDHCPFullPlanIPAndCheck(t *testing.T) {
	mem := &Memory{DiscoveryImage: "disc"}
	_, n, _ := net.ParseCIDR("10.97.0.0/24")
	mem.Assign("52:54:00:00:04:01", "prod-a", "inst1", net.ParseIP("10.97.0.21"))
	d := &DHCP{Mode: ModeFull, ServerIP: net.ParseIP("10.97.0.1").To4(), Subnet: n, RangeStart: net.ParseIP("10.97.0.100"),
		RangeEnd: net.ParseIP("10.97.0.100"), Leases: &MemLeases{}, Booter: mem, HTTPBase: "http://10.97.0.1:8081"}
	r, err := d.Handle(context.Background(), discover("52:54:00:00:04:01"), false)
	if err != nil || !r.YourIPAddr.Equal(net.ParseIP("10.97.0.21")) {
		t.Fatalf("assigned member got %v (%v), want its plan IP", r, err)
	}
	// The range's and gateway's values are the core's to check (tests/cases.nix); Check wants them present.
	bad := &DHCP{Mode: ModeFull, ServerIP: net.ParseIP("10.97.0.1").To4(), RangeStart: net.ParseIP("10.97.0.5"),
		Booter: mem, HTTPBase: "http://x/y"}
	err = bad.Check()
	for _, w := range []string{"full mode needs a subnet", "full mode needs an IPv4 range, got 10.97.0.5-<nil>", "lease store", "base URL"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Check: %v; want %q", err, w)
		}
	}
}

// A waiting machine stays in iPXE and asks again; its message is printed only when it is plain words.
func TestWaitScript(t *testing.T) {
	h, _ := newHTTP(t)
	h.WaitInterval = 7 * time.Second
	h.Booter = evilBooter{Boot{Action: ActionWait, Message: "waiting for dev-server (installing) to be ready"}}
	_, body := get(t, h, "/boot/ipxe?mac=52-54-00-00-00-01")
	want := "#!ipxe\necho nix8s: waiting for dev-server (installing) to be ready\nsleep 7\n" +
		"chain --replace --autofree http://10.97.0.1:8081/boot/ipxe?mac=52:54:00:00:00:01 || exit 1\n"
	if body != want {
		t.Fatalf("script:\n%s\nwant:\n%s", body, want)
	}
	for _, msg := range []string{"x\nshell", "${root-path}", "a; shell", `say "hi"`, "#comment"} {
		h.Booter = evilBooter{Boot{Action: ActionWait, Message: msg}}
		_, body := get(t, h, "/boot/ipxe?mac=52:54:00:00:00:01")
		if strings.Contains(body, msg) || !strings.Contains(body, "echo nix8s: waiting\n") {
			t.Errorf("message %q should be replaced:\n%s", msg, body)
		}
	}
}

// NixBuild with a stand-in nix program (real builds need nixpkgs, which cannot be had here): the arguments it
// passes, the image it serves from the printed store path, and a failed build's log.
func TestNixBuildWithAStandInNix(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "store", "0c8n7sxsb3x6wf5p0y1gn1z4l2vxqi9a-nix8s-netboot-dev-server")
	os.MkdirAll(out, 0o755)
	os.WriteFile(filepath.Join(out, "bzImage"), []byte("kernel"), 0o644)
	os.WriteFile(filepath.Join(out, "initrd"), []byte("initrd"), 0o644)
	os.WriteFile(filepath.Join(out, "cmdline"), []byte("init=/nix/store/x-nixos-system/init loglevel=4\n"), 0o644)
	nix := filepath.Join(dir, "nix")
	os.WriteFile(nix, []byte(`#!/bin/sh
echo "$@" > `+dir+`/args
case "$*" in
  *broken*) echo "error: builder for 'installer.drv' failed" >&2; exit 1 ;;
esac
echo "building..." >&2
echo `+out+`
`), 0o755)
	n := &NixBuild{Flake: "/srv/flake", Nix: nix}
	var log strings.Builder
	id, err := n.Build(context.Background(), MemberInstallable("dev", "server"), &log)
	if err != nil {
		t.Fatal(err)
	}
	args, _ := os.ReadFile(filepath.Join(dir, "args"))
	if want := "--extra-experimental-features nix-command flakes build --no-link --print-out-paths --print-build-logs /srv/flake#nixosConfigurations.dev-server.config.system.build.nix8sNetboot\n"; string(args) != want {
		t.Errorf("nix args:\n%s\nwant\n%s", args, want)
	}
	if id != "0c8n7sxsb3x6wf5p0y1gn1z4l2vxqi9a" || !strings.Contains(log.String(), "building...") {
		t.Errorf("id %q, log %q", id, log.String())
	}
	img, err := n.Image(context.Background(), id)
	if err != nil || img.Kernel != filepath.Join(out, "bzImage") || strings.Join(img.Cmdline, " ") != "init=/nix/store/x-nixos-system/init loglevel=4" {
		t.Fatalf("image: %+v, %v", img, err)
	}
	log.Reset()
	if _, err := n.Build(context.Background(), MemberInstallable("dev", "broken"), &log); err == nil || !strings.Contains(log.String(), "builder for 'installer.drv' failed") {
		t.Fatalf("failed build: %v, log %q", err, log.String())
	}
	for _, bad := range []string{"x#y", "../etc", "a b", ""} {
		if _, err := n.Build(context.Background(), bad, &log); err == nil {
			t.Errorf("installable %q accepted", bad)
		}
	}
	if _, err := n.Image(context.Background(), "unknown"); err == nil {
		t.Error("unknown image served")
	}
}

// The boot file follows the client's architecture (option 93, else the Arch of its vendor class); one without
// a binary gets no answer at all, counted by reason, and option 97 goes back as it came.
func TestBootFileByArchitecture(t *testing.T) {
	files := BootFiles{ArchBIOS: "undionly.kpxe", ArchX64: "snponly.efi", ArchX64Alt: "snponly.efi", ArchX64HTTP: "snponly.efi",
		ArchARM64: "snp-arm64.efi", ArchARM64HTTP: "snp-arm64.efi", ArchIA32: ""}
	guid := append([]byte{0}, []byte("0123456789abcdef")...)
	pxe := func(a Arch) []dhcpv4.Modifier {
		return []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClassIdentifier(fmt.Sprintf("PXEClient:Arch:%05d:UNDI:003016", a))),
			dhcpv4.WithOption(dhcpv4.OptClientArch(a))}
	}
	http := func(a Arch) []dhcpv4.Modifier {
		return []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClassIdentifier(fmt.Sprintf("HTTPClient:Arch:%05d:UNDI:003016", a))),
			dhcpv4.WithOption(dhcpv4.OptClientArch(a))}
	}
	tests := []struct {
		name   string
		mods   []dhcpv4.Modifier
		file   string // "" no answer
		reason string // of the no-boot-file metric, with arch
		arch   string
	}{
		{"x86 BIOS gets undionly.kpxe", pxe(ArchBIOS), "undionly.kpxe", "", ""},
		{"x86-64 UEFI (7) gets the x86-64 EFI binary", pxe(ArchX64), "snponly.efi", "", ""},
		{"x86-64 UEFI (9) gets the x86-64 EFI binary", pxe(ArchX64Alt), "snponly.efi", "", ""},
		{"ARM64 UEFI gets the ARM64 binary", pxe(ArchARM64), "snp-arm64.efi", "", ""},
		{"ARM64 UEFI named in the vendor class only", []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00011:UNDI:003000"))}, "snp-arm64.efi", "", ""},
		{"x86-64 HTTP boot gets its URL", http(ArchX64HTTP), "http://10.97.0.1:8081/boot/snponly.efi", "", ""},
		{"ARM64 HTTP boot gets the ARM64 URL", http(ArchARM64HTTP), "http://10.97.0.1:8081/boot/snp-arm64.efi", "", ""},
		{"32-bit UEFI mapped to nothing gets no answer", pxe(ArchIA32), "", "no-binary", "6"},
		{"32-bit UEFI HTTP, not in the table, gets no answer", http(ArchIA32HTTP), "", "no-binary", "15"},
		{"HTTP boot announcing a PXE architecture gets no answer", http(ArchX64), "", "no-binary", "7"},
		{"ARM32 UEFI is not an architecture nix8s boots", pxe(10), "", "unknown-arch", "other"},
		{"RISC-V 64 is not an architecture nix8s boots", pxe(27), "", "unknown-arch", "other"},
	}
	for _, mode := range []Mode{ModeProxy, ModeFull} {
		for i, tc := range tests {
			t.Run(string(mode)+"/"+tc.name, func(t *testing.T) {
				_, n, _ := net.ParseCIDR("10.97.0.0/24")
				metrics := NewMetrics(prometheus.NewRegistry())
				d := &DHCP{Mode: mode, ServerIP: net.ParseIP("10.97.0.1").To4(), Subnet: n, RangeStart: net.ParseIP("10.97.0.100"),
					RangeEnd: net.ParseIP("10.97.0.110"), Leases: &MemLeases{}, Booter: &Memory{DiscoveryImage: "disc"},
					BootFiles: files, HTTPBase: "http://10.97.0.1:8081", Metrics: metrics}
				mods := append(tc.mods, dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, guid)))
				r, err := d.Handle(context.Background(), discover(fmt.Sprintf("52:54:00:00:05:%02x", i), mods...), false)
				if err != nil {
					t.Fatal(err)
				}
				if tc.file == "" {
					if r != nil {
						t.Fatalf("answered with %q, want no answer", r.BootFileName)
					}
					if got := counter(metrics.NoBootFile.WithLabelValues(tc.arch, tc.reason)); got != 1 {
						t.Errorf("nix8s_pxe_dhcp_no_boot_file_total{arch=%q,reason=%q} = %v, want 1", tc.arch, tc.reason, got)
					}
					return
				}
				if r == nil || r.BootFileName != tc.file || r.Options.Get(dhcpv4.OptionBootfileName) == nil {
					t.Fatalf("reply %v, want boot file %q", r, tc.file)
				}
				if got := r.Options.Get(dhcpv4.OptionClientMachineIdentifier); !bytes.Equal(got, guid) {
					t.Errorf("option 97 %x, want %x echoed", got, guid)
				}
			})
		}
	}
}

func TestDefaultBootFiles(t *testing.T) {
	tests := []struct {
		name  string
		have  []string
		want  BootFiles
		check string // error of Check, "" none
	}{
		{"Debian's ipxe: snponly.efi for UEFI, nothing for ARM64", []string{"undionly.kpxe", "ipxe.efi", "snponly.efi"},
			BootFiles{0: "undionly.kpxe", 7: "snponly.efi", 9: "snponly.efi", 16: "snponly.efi", 11: "", 19: "", 6: "", 15: ""}, ""},
		{"nixpkgs' ipxe: snp.efi", []string{"undionly.kpxe", "ipxe.efi", "snp.efi"},
			BootFiles{0: "undionly.kpxe", 7: "snp.efi", 9: "snp.efi", 16: "snp.efi", 11: "", 19: "", 6: "", 15: ""}, ""},
		{"ipxe.efi alone", []string{"undionly.kpxe", "ipxe.efi"},
			BootFiles{0: "undionly.kpxe", 7: "ipxe.efi", 9: "ipxe.efi", 16: "ipxe.efi", 11: "", 19: "", 6: "", 15: ""}, ""},
		{"ARM64 and 32-bit binaries beside them", []string{"undionly.kpxe", "ipxe.efi", "ipxe-arm64.efi", "snp-arm64.efi", "ipxe-i386.efi"},
			BootFiles{0: "undionly.kpxe", 7: "ipxe.efi", 9: "ipxe.efi", 16: "ipxe.efi", 11: "snp-arm64.efi", 19: "snp-arm64.efi", 6: "ipxe-i386.efi", 15: "ipxe-i386.efi"}, ""},
		{"an empty directory: the x86 files are named missing", nil,
			BootFiles{0: "undionly.kpxe", 7: "ipxe.efi", 9: "ipxe.efi", 16: "ipxe.efi", 11: "", 19: "", 6: "", 15: ""},
			"the boot file of architecture 0 (x86 BIOS), DIR/undionly.kpxe, is missing\nthe boot file of architecture 7 (x86-64 UEFI), DIR/ipxe.efi, is missing\n" +
				"the boot file of architecture 9 (x86-64 UEFI), DIR/ipxe.efi, is missing\nthe boot file of architecture 16 (x86-64 UEFI HTTP), DIR/ipxe.efi, is missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range tc.have {
				os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644)
			}
			got := DefaultBootFiles(dir)
			if !maps.Equal(got, tc.want) {
				t.Errorf("table %v, want %v", got, tc.want)
			}
			err := got.Check(dir)
			if msg := ""; err != nil {
				msg = strings.ReplaceAll(err.Error(), dir, "DIR")
				if msg != tc.check {
					t.Errorf("Check:\n%s\nwant:\n%s", msg, tc.check)
				}
			} else if tc.check != "" {
				t.Errorf("Check passed, want %q", tc.check)
			}
		})
	}
}

func TestParseBootFile(t *testing.T) {
	tests := []struct {
		in   string
		arch Arch
		file string
		err  string
	}{
		{"11=snp-arm64.efi", ArchARM64, "snp-arm64.efi", ""},
		{"19=my_ipxe+arm64.efi", ArchARM64HTTP, "my_ipxe+arm64.efi", ""},
		{"0=", ArchBIOS, "", ""},
		{"arm64=snp.efi", 0, "", `"arm64=snp.efi": want ARCH=FILE, ARCH a client architecture number (DHCP option 93) of 0 (x86 BIOS), 6 (x86 UEFI), 7 (x86-64 UEFI), 9 (x86-64 UEFI), 11 (ARM64 UEFI), 15 (x86 UEFI HTTP), 16 (x86-64 UEFI HTTP), 19 (ARM64 UEFI HTTP)`},
		{"11", 0, "", "want ARCH=FILE"},
		{"10=ipxe-arm32.efi", 0, "", `"10=ipxe-arm32.efi": architecture 10 is not one nix8s boots; known: 0 (x86 BIOS)`},
		{"11=../etc/passwd", 0, "", `"11=../etc/passwd": "../etc/passwd" is not a plain file name in the iPXE directory`},
		{"11=/srv/ipxe/snp.efi", 0, "", "is not a plain file name"},
		{"11=a..b.efi", 0, "", "is not a plain file name"},
		{"11=${net0/mac}", 0, "", "is not a plain file name"},
	}
	for _, tc := range tests {
		a, f, err := ParseBootFile(tc.in)
		switch {
		case tc.err == "" && (err != nil || a != tc.arch || f != tc.file):
			t.Errorf("%q: %d %q %v, want %d %q", tc.in, a, f, err, tc.arch, tc.file)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
		}
	}
}

// Unknown paths and wrong methods under /machine/v1/ answer in the endpoints' error shape, not Go's plain text.
func TestMachineAPIUnknownPathsAndMethods(t *testing.T) {
	h, _ := newHTTP(t)
	tests := []struct {
		name, method, path string
		status             int
		code, allow        string
	}{
		{"unknown endpoint", http.MethodPost, "/machine/v1/nope", 404, "not_found", ""},
		{"GET of a POST endpoint", http.MethodGet, "/machine/v1/progress?mac=52:54:00:00:00:01", 405, "method_not_allowed", "POST"},
		{"PUT of discover", http.MethodPut, "/machine/v1/discover", 405, "method_not_allowed", "POST"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
			var body struct {
				Code    string   `json:"code"`
				Message string   `json:"message"`
				Details []string `json:"details"`
			}
			err := json.Unmarshal(rec.Body.Bytes(), &body)
			if rec.Code != tc.status || err != nil || body.Code != tc.code || body.Message == "" || body.Details == nil ||
				rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Allow") != tc.allow {
				t.Errorf("%s %s: %d %v %q (Allow %q); want %d with code %s", tc.method, tc.path, rec.Code, rec.Header(), rec.Body, rec.Header().Get("Allow"), tc.status, tc.code)
			}
		})
	}
}

// The issue 11 flood: fresh MACs sending DISCOVERs and never taking their offer used to hold a 51-address range
// with offers. Outstanding offers to MACs without a plan address are bounded (a quarter of the range here): the
// rest get no answer and are counted; a client taking its offer frees its slot; a member still gets its plan
// address in the middle of the flood.
func TestDHCPOffersBounded(t *testing.T) {
	mem := &Memory{DiscoveryImage: "disc"}
	const member = "52:54:00:00:09:01"
	mem.Assign(member, "prod-server1", "inst1", net.ParseIP("10.97.0.10"))
	_, n, _ := net.ParseCIDR("10.97.0.0/24")
	m := NewMetrics(prometheus.NewRegistry())
	d := &DHCP{Mode: ModeFull, ServerIP: net.ParseIP("10.97.0.1"), Subnet: n, RangeStart: net.ParseIP("10.97.0.100"),
		RangeEnd: net.ParseIP("10.97.0.150"), Leases: &MemLeases{}, Booter: mem, HTTPBase: "http://10.97.0.1:8081", Metrics: m}
	ctx := context.Background()
	pxeClass := dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001"))
	var offered []*dhcpv4.DHCPv4
	for i := range 280 {
		r, err := d.Handle(ctx, discover(fmt.Sprintf("02:00:00:00:%02x:%02x", i/256, i%256), pxeClass), false)
		if err != nil {
			t.Fatal(err)
		}
		if r != nil {
			offered = append(offered, r)
		}
	}
	if len(offered) != 12 { // 51 addresses / 4
		t.Fatalf("%d of 280 flooding MACs got an offer, want 12 (a quarter of the range)", len(offered))
	}
	if got := counter(m.DHCPDropped.WithLabelValues("offers-full", "unknown")); got != 268 {
		t.Errorf("offers-full drops counted: %v, want 268", got)
	}
	if r, err := d.Handle(ctx, discover(member, pxeClass), false); err != nil || r == nil || !r.YourIPAddr.Equal(net.ParseIP("10.97.0.10")) {
		t.Fatalf("the member in the flood: %v, %v; want its plan address", r, err)
	}
	// One flooding client takes its offer: its slot goes to the next newcomer.
	req, _ := dhcpv4.NewRequestFromOffer(offered[0], pxeClass)
	if r, err := d.Handle(ctx, req, false); err != nil || r == nil || r.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("REQUEST of an offer: %v, %v", r, err)
	}
	if r, _ := d.Handle(ctx, discover("02:00:00:00:ff:01", pxeClass), false); r == nil {
		t.Error("a newcomer after an offer was taken got no offer")
	}
	if r, _ := d.Handle(ctx, discover("02:00:00:00:ff:02", pxeClass), false); r != nil {
		t.Error("a second newcomer got an offer beyond the bound")
	}
}
