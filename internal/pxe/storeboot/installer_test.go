package storeboot

// The programs of the NixOS netboot images (modules/nixos/nix8s-install.sh, nix8s-discover.sh, after
// netboot-prelude.sh) run here against the daemon's real HTTP endpoints on the store: the kernel command line
// they read is the one nix8sd's iPXE script gives them. The images themselves cannot be built here (no
// nixpkgs), so what the NixOS system provides is a stand-in: disko, nixos-install and systemctl are small
// scripts that record their calls; curl, jq, ssh-keygen, lsblk and ip are the real programs.

import (
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nix8s/nix8s/internal/pxe"
	"github.com/nix8s/nix8s/internal/pxetest"
	"github.com/nix8s/nix8s/internal/store"
)

const nixosDir = "../../../modules/nixos/"

type imageRig struct {
	t      *testing.T
	st     *store.Store
	a      *Adapter
	url    string
	dir    string
	mu     sync.Mutex
	keys   []string // host keys OnInstalled got
	called []string
}

func newImageRig(t *testing.T) *imageRig {
	for _, p := range []string{"bash", "curl", "jq", "ssh-keygen", "lsblk", "ip"} {
		if _, err := exec.LookPath(p); err != nil {
			pxetest.Unavailable(t, "the netboot programs need %s: %v", p, err)
		}
	}
	st, a := setup(t)
	r := &imageRig{t: t, st: st, a: a, dir: t.TempDir()}
	a.OnInstalled = func(_ context.Context, mac, hostKey string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.called = append(r.called, mac)
		r.keys = append(r.keys, hostKey)
	}
	images := filepath.Join(r.dir, "images")
	for _, id := range []string{"installer-dev-s1", "discovery"} {
		os.MkdirAll(filepath.Join(images, id), 0o755)
		os.WriteFile(filepath.Join(images, id, "bzImage"), []byte("k"), 0o644)
		os.WriteFile(filepath.Join(images, id, "initrd"), []byte("i"), 0o644)
	}
	srv := httptest.NewUnstartedServer(nil)
	r.url = "http://" + srv.Listener.Addr().String()
	srv.Config.Handler = &pxe.HTTP{Booter: a, Machines: a, Images: pxe.DirImages{Dir: images}, BaseURL: r.url}
	srv.Start()
	t.Cleanup(srv.Close)
	// Stand-ins for what the NixOS image has: each records its call.
	bin := filepath.Join(r.dir, "bin")
	os.MkdirAll(bin, 0o755)
	for name, body := range map[string]string{
		"disko":         `echo "disko" >> "$CALLS"; mkdir -p "$NIX8S_ROOT/etc"`,
		"nixos-install": `echo "nixos-install $*" >> "$CALLS"; if [ -n "${FAIL_INSTALL:-}" ]; then echo "error: copying the closure failed"; exit 1; fi`,
		"systemctl":     `echo "systemctl $*" >> "$CALLS"`,
	} {
		os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755)
	}
	return r
}

// cmdline is what the kernel of mac's next network boot gets: the arguments of the script's kernel line.
func (r *imageRig) cmdline(mac string) string {
	r.t.Helper()
	rec := httptest.NewRecorder()
	h := &pxe.HTTP{Booter: r.a, Machines: r.a, Images: pxe.DirImages{Dir: filepath.Join(r.dir, "images")}, BaseURL: r.url}
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/boot/ipxe?mac="+mac, nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[0] == "kernel" {
			return strings.Join(f[2:], " ")
		}
	}
	r.t.Fatalf("no kernel line in the script of %s:\n%s", mac, rec.Body.String())
	return ""
}

// run runs program (nix8s-install.sh or nix8s-discover.sh) as writeShellApplication would (errexit, nounset,
// pipefail, the prelude first) with the kernel command line cmdline; it returns the exit code, the output and
// the stand-ins' calls.
func (r *imageRig) run(program, cmdline string, env ...string) (int, string, []string) {
	r.t.Helper()
	prelude, err := os.ReadFile(nixosDir + "netboot-prelude.sh")
	if err != nil {
		r.t.Fatal(err)
	}
	body, err := os.ReadFile(nixosDir + program)
	if err != nil {
		r.t.Fatal(err)
	}
	script := filepath.Join(r.dir, program)
	os.WriteFile(script, append(prelude, body...), 0o755)
	cmdFile, calls := filepath.Join(r.dir, "cmdline"), filepath.Join(r.dir, "calls")
	os.WriteFile(cmdFile, []byte(cmdline+"\n"), 0o644)
	os.Remove(calls)
	cmd := exec.Command("bash", "-o", "errexit", "-o", "nounset", "-o", "pipefail", script)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Join(r.dir, "bin")+":"+os.Getenv("PATH"), "CALLS="+calls,
		"NIX8S_CMDLINE="+cmdFile, "NIX8S_LOG="+filepath.Join(r.dir, "install.log"),
		"NIX8S_DISKO="+filepath.Join(r.dir, "bin", "disko"), "NIX8S_SYSTEM=/nix/store/0000-nixos-system-dev-s1",
		"NIX8S_SYSTEM_NAME=nixos-system-dev-s1", "NIX8S_ROOT="+filepath.Join(r.dir, "mnt"),
		"NIX8S_HOST_KEY=/etc/ssh/ssh_host_ed25519_key")
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		r.t.Fatal(err)
	}
	b, _ := os.ReadFile(calls)
	var got []string
	if s := strings.TrimSpace(string(b)); s != "" {
		got = strings.Split(s, "\n")
	}
	return code, string(out), got
}

func (r *imageRig) events(mac, kind string) []string {
	evs, err := r.st.Events(context.Background(), mac, 0, 1000)
	if err != nil {
		r.t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		if e.Kind == kind {
			out = append(out, e.Reason)
		}
	}
	return out
}

// The installer: installs with the token of the first script, reports each phase and its host key, reboots;
// leaves the disks alone without a token or when the daemon refuses it; reports a failed nixos-install with
// the end of its log.
func TestInstallerProgramAgainstTheDaemon(t *testing.T) {
	r := newImageRig(t)
	ctx := context.Background()
	mac := "52:54:00:ee:00:01"
	r.st.CreateMachine(ctx, "op", mac, nil, "")
	if _, err := r.st.UpdateMachine(ctx, "op", mac, store.MachineChange{Assign: &[2]string{"dev", "s1"}}); err != nil {
		t.Fatal(err)
	}
	first := r.cmdline(mac) // arms generation 1, carries the token
	second := r.cmdline(mac)
	if !strings.Contains(first, "nix8s.token=") || strings.Contains(second, "nix8s.token=") {
		t.Fatalf("command lines:\n%s\n%s", first, second)
	}

	code, out, calls := r.run("nix8s-install.sh", second)
	if code != 0 || calls != nil || !strings.Contains(out, "one-time token is spent, so the disks are left alone") {
		t.Fatalf("without a token: exit %d, calls %v:\n%s", code, calls, out)
	}

	code, out, calls = r.run("nix8s-install.sh", first)
	want := []string{"disko", "nixos-install --system /nix/store/0000-nixos-system-dev-s1 --root " + filepath.Join(r.dir, "mnt") +
		" --no-root-passwd --no-channel-copy", "systemctl reboot"}
	if code != 0 || strings.Join(calls, "|") != strings.Join(want, "|") {
		t.Fatalf("install: exit %d, calls %q:\n%s", code, calls, out)
	}
	if got := strings.Join(r.events(mac, "progress"), ","); got != "installer: disko,installer: install,installer: done" {
		t.Fatalf("progress events: %s", got)
	}
	pub, err := os.ReadFile(filepath.Join(r.dir, "mnt", "etc", "ssh", "ssh_host_ed25519_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(string(pub)); len(r.keys) != 1 || r.keys[0] != f[0]+" "+f[1] {
		t.Fatalf("host key reported %q, the member's key is %q", r.keys, pub)
	}
	// The console shows the fingerprint an operator confirms with POST /v1/machines/{mac}/approve.
	if fp := Fingerprint(r.keys[0]); !strings.Contains(out, "nix8s: host key "+fp+"; ") {
		t.Errorf("the installer does not print the host key's fingerprint %s:\n%s", fp, out)
	}
	if m, _ := r.st.Machine(ctx, mac); m.State != "installing" || m.InstallArmed {
		t.Fatalf("after done: %+v", m)
	}

	// The same command line again (a reboot into the installer): the daemon refuses the spent token first.
	code, out, calls = r.run("nix8s-install.sh", first)
	if code != 1 || calls != nil || !strings.Contains(out, "did not accept the first report") {
		t.Fatalf("spent token: exit %d, calls %v:\n%s", code, calls, out)
	}

	// Generation 2, nixos-install fails: reported with the end of its log; the machine is install_failed.
	failed := store.StateInstallFailed
	if _, err := r.st.UpdateMachine(ctx, "op", mac, store.MachineChange{State: &failed}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.st.ArmInstall(ctx, "op", mac, 0, "reinstall"); err != nil {
		t.Fatal(err)
	}
	code, out, calls = r.run("nix8s-install.sh", r.cmdline(mac), "FAIL_INSTALL=1")
	if code != 1 || len(calls) != 2 || calls[1] != want[1] {
		t.Fatalf("failed install: exit %d, calls %v:\n%s", code, calls, out)
	}
	m, _ := r.st.Machine(ctx, mac)
	reasons := r.events(mac, "progress")
	last := reasons[len(reasons)-1]
	if m.State != "install_failed" || !strings.Contains(last, "installer failed in install: nixos-install failed") ||
		!strings.Contains(last, "copying the closure failed") {
		t.Fatalf("after the failure: %s, %q", m.State, last)
	}
	if len(r.called) != 1 {
		t.Errorf("OnInstalled ran %d times, want once (not for the failure)", len(r.called))
	}
}

// The discovery program reports this machine's real facts (CPU, memory, disks, NICs) for the MAC on its
// command line, and powers off.
func TestDiscoveryProgramAgainstTheDaemon(t *testing.T) {
	r := newImageRig(t)
	mac := "52:54:00:ee:00:42"
	code, out, calls := r.run("nix8s-discover.sh", r.cmdline(mac))
	if code != 0 || strings.Join(calls, "|") != "systemctl poweroff" {
		t.Fatalf("discovery: exit %d, calls %v:\n%s", code, calls, out)
	}
	m, err := r.st.Machine(context.Background(), mac)
	if err != nil {
		t.Fatal(err)
	}
	facts := string(m.Facts)
	for _, want := range []string{`"mac": "` + mac + `"`, `"cpus": `, `"memoryBytes": `, `"disks": [`, `"nics": [`, `"cpuModel": `} {
		if !strings.Contains(facts, want) {
			t.Errorf("facts lack %s: %s", want, facts)
		}
	}
	if m.State != "discovered" {
		t.Errorf("state %s", m.State)
	}
}

// Both programs pass shellcheck as writeShellApplication runs it at build time.
func TestNetbootProgramsShellcheck(t *testing.T) {
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		pxetest.Unavailable(t, "shellcheck is not installed (apt-get install shellcheck)")
	}
	prelude, _ := os.ReadFile(nixosDir + "netboot-prelude.sh")
	for _, p := range []string{"nix8s-install.sh", "nix8s-discover.sh"} {
		body, err := os.ReadFile(nixosDir + p)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), p)
		// writeShellApplication's preamble (pkgs/build-support/trivial-builders/default.nix).
		os.WriteFile(f, append([]byte("#!/usr/bin/env bash\nset -o errexit\nset -o nounset\nset -o pipefail\n"), append(prelude, body...)...), 0o644)
		if out, err := exec.Command(sc, f).CombinedOutput(); err != nil {
			t.Errorf("shellcheck %s: %v\n%s", p, err, out)
		}
	}
}
