package storeboot

// Identity and conflicts (conflict.go) with the real netboot programs against the daemon's real endpoints on
// PostgreSQL (the rig of installer_test.go). The DMI values come from a stand-in directory (NIX8S_DMI): the
// test cannot give this host another system serial, and /sys/class/dmi/id is root's to read. Disk serials and
// NIC MACs are this host's own, read by the real lsblk and ip; they are the same in every run of one test.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nix8s/nix8s/internal/pxe"
	"github.com/nix8s/nix8s/internal/store"
)

// dmiDir is a stand-in for /sys/class/dmi/id with this system UUID and serial.
func dmiDir(t *testing.T, uuid, serial string) string {
	d := t.TempDir()
	os.WriteFile(filepath.Join(d, "product_uuid"), []byte(uuid+"\n"), 0o444)
	os.WriteFile(filepath.Join(d, "product_serial"), []byte(serial+"\n"), 0o444)
	return "NIX8S_DMI=" + d
}

// lockRig is the image rig counting the store's lock hook (the metric's) and keeping the adapter's log.
type lockRig struct {
	*imageRig
	mu    sync.Mutex
	locks []string
	log   *bytes.Buffer
}

func newLockRig(t *testing.T) *lockRig {
	r := &lockRig{imageRig: newImageRig(t), log: &bytes.Buffer{}}
	r.st.Hooks.Locked = func(cause string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.locks = append(r.locks, cause)
	}
	r.a.Logger = slog.New(slog.NewTextHandler(&syncWriter{w: r.log}, nil))
	return r
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// assigned creates mac's machine (unless discovery did) assigned to dev.s1.
func (r *lockRig) assigned(mac string) {
	r.t.Helper()
	ctx := context.Background()
	if _, err := r.st.Machine(ctx, mac); err != nil {
		r.st.CreateMachine(ctx, "op", mac, nil, "")
	}
	if _, err := r.st.UpdateMachine(ctx, "op", mac, store.MachineChange{Assign: &[2]string{"dev", "s1"}}); err != nil {
		r.t.Fatal(err)
	}
}

// lockedFor checks mac is locked with the install stopped, once, for cause, and that its locked event's
// reason holds every one of want.
func (r *lockRig) lockedFor(mac, cause string, want ...string) {
	r.t.Helper()
	m, err := r.st.Machine(context.Background(), mac)
	if err != nil {
		r.t.Fatal(err)
	}
	if !m.Locked || m.State != "install_failed" || m.InstallArmed {
		r.t.Errorf("machine: locked %v, state %s, armed %v; want locked, install_failed, disarmed", m.Locked, m.State, m.InstallArmed)
	}
	evs := r.events(mac, "locked")
	if len(evs) != 1 {
		r.t.Fatalf("locked events %q, want one", evs)
	}
	for _, w := range want {
		if !strings.Contains(evs[0], w) {
			r.t.Errorf("the locked event's reason lacks %q: %s", w, evs[0])
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if strings.Join(r.locks, ",") != cause {
		r.t.Errorf("lock hook (metric) causes %q, want %s", r.locks, cause)
	}
	if !strings.Contains(r.log.String(), "machine locked") || !strings.Contains(r.log.String(), "cause="+cause) {
		r.t.Errorf("no log line of the lock:\n%s", r.log)
	}
	if len(r.called) != 0 {
		r.t.Errorf("OnInstalled ran for %v: a secret delivery was queued", r.called)
	}
}

// noToken checks that the next script of mac carries no token.
func (r *lockRig) noToken(mac string) {
	r.t.Helper()
	rec := httptest.NewRecorder()
	h := &pxe.HTTP{Booter: r.a, Machines: r.a, Images: pxe.DirImages{Dir: filepath.Join(r.dir, "images")}, BaseURL: r.url}
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/boot/ipxe?mac="+mac, nil))
	if strings.Contains(rec.Body.String(), "nix8s.token=") {
		r.t.Errorf("a locked machine's script carries a token:\n%s", rec.Body.String())
	}
}

// Discovery records the hardware identity; the installer on the same hardware reports the same identity and
// installs; on other hardware (another DMI serial) its first report is refused, before disko, so before any
// secret could move: the machine is locked, its install stopped, the event names the fact and both values.
// Without a recorded identity the first install report records it, and the next generation is held to it.
func TestInstallerIdentity(t *testing.T) {
	ctx := context.Background()
	mac := "52:54:00:ee:00:01"
	here := dmiDir(t, "4c4c4544-0042-3510-8052-b4c04f4b4d32", "SN-REAL-1")
	other := dmiDir(t, "4c4c4544-0042-3510-8052-b4c04f4b4d32", "SN-IMPOSTOR")
	want := []string{"disko", "nixos-install --system /nix/store/0000-nixos-system-dev-s1 --root PLACEHOLDER --no-root-passwd --no-channel-copy", "systemctl reboot"}

	t.Run("matching identity installs", func(t *testing.T) {
		r := newLockRig(t)
		if code, out, _ := r.run("nix8s-discover.sh", r.cmdline(mac), here); code != 0 {
			t.Fatalf("discovery: exit %d:\n%s", code, out)
		}
		id, err := r.st.MachineIdentity(ctx, mac)
		if err != nil || id == nil || id.Source != "discovery" || !strings.Contains(string(id.Identity), `"systemSerial": "SN-REAL-1"`) {
			t.Fatalf("recorded identity %+v, %v", id, err)
		}
		r.assigned(mac)
		code, out, calls := r.run("nix8s-install.sh", r.cmdline(mac), here)
		want[1] = strings.Replace(want[1], "PLACEHOLDER", filepath.Join(r.dir, "mnt"), 1)
		if code != 0 || strings.Join(calls, "|") != strings.Join(want, "|") {
			t.Fatalf("install: exit %d, calls %q:\n%s", code, calls, out)
		}
		if len(r.called) != 1 {
			t.Fatalf("OnInstalled ran %d times", len(r.called))
		}
		evs, _ := r.st.Events(ctx, mac, 0, 100)
		var withIdentity int
		for _, e := range evs {
			if e.Kind == "progress" && strings.Contains(string(e.Details), `"SN-REAL-1"`) {
				withIdentity++
			}
		}
		if withIdentity != 3 {
			t.Errorf("%d progress events carry the identity, want 3 (disko, install, done)", withIdentity)
		}
		if m, _ := r.st.Machine(ctx, mac); m.Locked {
			t.Errorf("locked after an honest install")
		}
	})

	t.Run("mismatching identity locks and refuses before done", func(t *testing.T) {
		r := newLockRig(t)
		if code, out, _ := r.run("nix8s-discover.sh", r.cmdline(mac), here); code != 0 {
			t.Fatalf("discovery: exit %d:\n%s", code, out)
		}
		r.assigned(mac)
		code, out, calls := r.run("nix8s-install.sh", r.cmdline(mac), other)
		if code != 1 || calls != nil || !strings.Contains(out, "did not accept the first report") || !strings.Contains(out, "403") {
			t.Fatalf("impostor: exit %d, calls %v:\n%s", code, calls, out)
		}
		if strings.Contains(out, "SN-REAL-1") {
			t.Errorf("the refusal tells the impostor the recorded serial:\n%s", out)
		}
		r.lockedFor(mac, "identity", `systemSerial is "SN-IMPOSTOR"`, `"SN-REAL-1" recorded (discovery)`)
		if got := r.events(mac, "progress"); len(got) != 0 {
			t.Errorf("progress recorded from other hardware: %q", got)
		}
		r.noToken(mac)
	})

	t.Run("the first install report records the identity", func(t *testing.T) {
		r := newLockRig(t)
		r.assigned(mac)
		if code, out, _ := r.run("nix8s-install.sh", r.cmdline(mac), here); code != 0 {
			t.Fatalf("install: exit %d:\n%s", code, out)
		}
		id, err := r.st.MachineIdentity(ctx, mac)
		if err != nil || id == nil || id.Source != "install generation 1" || !strings.Contains(string(id.Identity), `"SN-REAL-1"`) {
			t.Fatalf("recorded identity %+v, %v", id, err)
		}
		// Generation 2 on other hardware.
		failed := store.StateInstallFailed
		if _, err := r.st.UpdateMachine(ctx, "op", mac, store.MachineChange{State: &failed}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.st.ArmInstall(ctx, "op", mac, 0, "reinstall"); err != nil {
			t.Fatal(err)
		}
		code, out, calls := r.run("nix8s-install.sh", r.cmdline(mac), other)
		if code != 1 || calls != nil {
			t.Fatalf("impostor: exit %d, calls %v:\n%s", code, calls, out)
		}
		r.called = nil // generation 1's delivery
		r.lockedFor(mac, "identity", `systemSerial is "SN-IMPOSTOR" in the installer's "disko" report of install generation 2`, `"SN-REAL-1" recorded (install generation 1)`)
	})
}

// Two clients in one install generation: a second iPXE script request from another address, a progress
// report with the install's token from another address (a host that sniffed it), a discovery report for a
// machine that is installing. Each locks the machine and stops the install; no later script carries a token.
func TestInstallConflicts(t *testing.T) {
	mac := "52:54:00:ee:00:01"

	t.Run("script requests from two addresses", func(t *testing.T) {
		r := newLockRig(t)
		r.assigned(mac)
		first := r.cmdline(mac) // from 192.0.2.1 (httptest.NewRequest)
		if !strings.Contains(first, "nix8s.token=") {
			t.Fatalf("first script: %s", first)
		}
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/boot/ipxe?mac="+mac, nil)
		req.RemoteAddr = "192.0.2.99:4711"
		h := &pxe.HTTP{Booter: r.a, Machines: r.a, Images: pxe.DirImages{Dir: filepath.Join(r.dir, "images")}, BaseURL: r.url}
		h.ServeHTTP(rec, req)
		if s := rec.Body.String(); !strings.Contains(s, "echo nix8s: locked") || strings.Contains(s, "nix8s.token=") || strings.Contains(s, "kernel ") {
			t.Fatalf("the second client's script:\n%s", s)
		}
		r.lockedFor(mac, "two-clients", "iPXE script requests of install generation 1 came from 192.0.2.1 and from 192.0.2.99")
		r.noToken(mac)
		// The first client's installer, with the token it got, is refused too: nobody wins.
		code, out, calls := r.run("nix8s-install.sh", first)
		if code != 1 || calls != nil {
			t.Fatalf("installer after the conflict: exit %d, calls %v:\n%s", code, calls, out)
		}
		if n := len(r.events(mac, "locked")); n != 1 {
			t.Errorf("%d locked events, want 1", n)
		}
	})

	t.Run("progress reports from two addresses", func(t *testing.T) {
		r := newLockRig(t)
		r.assigned(mac)
		cmdline := r.cmdline(mac)
		var token string
		for _, w := range strings.Fields(cmdline) {
			if v, ok := strings.CutPrefix(w, "nix8s.token="); ok {
				token = v
			}
		}
		// During disko another host (127.0.0.2: loopback answers all of 127/8) reports with the same token.
		impostor := filepath.Join(r.dir, "bin", "disko")
		os.WriteFile(impostor, []byte(fmt.Sprintf(`#!/bin/sh
echo disko >> "$CALLS"
curl --silent --interface 127.0.0.2 -o /dev/null -w 'impostor %%{http_code}\n' -H 'Authorization: Bearer %s' \
  --data-binary '{"generation": 1, "phase": "disko"}' '%s/machine/v1/progress?mac=%s' >> "$CALLS"
`, token, r.url, mac)), 0o755)
		code, out, calls := r.run("nix8s-install.sh", cmdline)
		if code != 1 || len(calls) < 2 || calls[1] != "impostor 403" || !strings.Contains(out, "did not take the done report") {
			t.Fatalf("install with an impostor: exit %d, calls %q:\n%s", code, calls, out)
		}
		r.lockedFor(mac, "two-clients", "progress reports of install generation 1 came from 127.0.0.1 and from 127.0.0.2")
		if got := strings.Join(r.events(mac, "progress"), ","); got != "installer: disko" {
			t.Errorf("progress events %q, want the first client's disko only", got)
		}
		r.noToken(mac)
	})

	t.Run("a discovery report for a machine that is installing", func(t *testing.T) {
		r := newLockRig(t)
		r.assigned(mac)
		r.cmdline(mac) // armed
		body, _ := json.Marshal(map[string]any{"mac": mac, "cpus": 1})
		req, _ := http.NewRequest("POST", r.url+"/machine/v1/discover?mac="+mac, bytes.NewReader(body))
		resp, err := (&http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}}).DialContext}}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Code, Message string }
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || e.Code != "forbidden" || !strings.Contains(e.Message, "machine locked") {
			t.Fatalf("discover while installing: %d %+v", resp.StatusCode, e)
		}
		r.lockedFor(mac, "discovery", "a discovery report came from 127.0.0.3 while the machine is installing (generation 1)")
		r.noToken(mac)
	})

	t.Run("a locked armed machine gets no token", func(t *testing.T) {
		r := newLockRig(t)
		r.assigned(mac)
		if _, err := r.st.ArmInstall(context.Background(), "op", mac, 0, "reinstall"); err != nil {
			t.Fatal(err)
		}
		locked := true
		if _, err := r.st.UpdateMachine(context.Background(), "op", mac, store.MachineChange{Locked: &locked}); err != nil {
			t.Fatal(err)
		}
		b := bootOf(t, r.a, mac, pxe.FirmwareIPXE, pxe.ActionWait)
		if !pxe.ValidMessage(b.Message) || !strings.HasPrefix(b.Message, "locked: ") {
			t.Errorf("wait message %q", b.Message)
		}
		r.noToken(mac)
		if _, err := r.a.ClaimToken(context.Background(), net.HardwareAddr{0x52, 0x54, 0, 0xee, 0, 1}, 1); err == nil {
			t.Error("a token was claimed for a locked machine")
		}
	})
}
