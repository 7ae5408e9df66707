package storeboot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix8s/nix8s"
	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/inventory"
	"github.com/nix8s/nix8s/internal/jobs"
	"github.com/nix8s/nix8s/internal/pgtest"
	"github.com/nix8s/nix8s/internal/pxe"
	"github.com/nix8s/nix8s/internal/store"
	"github.com/nix8s/nix8s/internal/store/storetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// images serves every member's installer as "installer-<cluster>-<member>", or ErrBuilding for the ones in
// building.
type images struct{ building map[string]bool }

func (i images) Installer(_ context.Context, m *store.Machine) (string, error) {
	id := "installer-" + *m.Cluster + "-" + *m.Member
	if i.building[id] {
		return "", ErrBuilding
	}
	return id, nil
}

const cfg = `{"nodes": {"vm": {"install": {"disk": "/dev/vda"}}}, "clusters": {"dev": {"ha": {"enable": true, "vip": "192.168.1.100"}, "members": {
  "s1": {"node": "vm", "role": "server", "ip": "192.168.1.10", "network": {"mac": "52:54:00:ee:00:01"}},
  "s2": {"node": "vm", "role": "server", "ip": "192.168.1.11", "network": {"mac": "52:54:00:ee:00:02"}},
  "a1": {"node": "vm", "role": "agent", "ip": "192.168.1.20", "network": {"mac": "52:54:00:ee:00:03"}}}}}}`

func setup(t *testing.T) (*store.Store, *Adapter) {
	t.Helper()
	ctx := context.Background()
	st := storetest.Open(t)
	var c map[string]any
	json.Unmarshal([]byte(cfg), &c)
	if _, err := st.Modify(ctx, "test", func(*store.Snapshot) (map[string]any, error) { return c, nil }); err != nil {
		t.Fatal(err)
	}
	ev, err := core.New(core.Options{Lib: nix8s.Lib, CacheDir: filepath.Join(t.TempDir(), "cache")})
	if err != nil {
		t.Fatal(err)
	}
	// The plans of the stored inventory with the real core, as the daemon has them.
	return st, &Adapter{Store: st, Plans: inventory.NewPlans(st, ev, nil), Images: images{}, DiscoveryImage: "discovery", ArmOnBoot: true}
}

// bootOf is the boot answer for mac's firmware fw: for FirmwareIPXE what the script handler serves (Decide,
// then Arm when the decision calls for it: pxe.ScriptBoot), for any other Decide's (as DHCP asks it).
func bootOf(t *testing.T, a *Adapter, mac string, fw pxe.Firmware, want pxe.Action) pxe.Boot {
	t.Helper()
	hw, _ := net.ParseMAC(mac)
	var b pxe.Boot
	var err error
	if fw == pxe.FirmwareIPXE {
		b, err = pxe.ScriptBoot(context.Background(), a, hw)
	} else {
		b, err = a.Decide(context.Background(), hw, fw)
	}
	if err != nil || b.Action != want {
		t.Fatalf("boot %s (%s): %+v, %v; want %s", mac, fw, b, err, want)
	}
	return b
}

// The adapter on a real PostgreSQL with the daemon's migrations and the real core's plan: discovery creates
// machines, an assigned machine is armed on its script request, the token is handed out once, progress
// needs it, done sends the machine to its disk, a reported failure to install_failed.
func TestAdapterOnTheStore(t *testing.T) {
	ctx := context.Background()
	st, a := setup(t)
	mac := "52:54:00:ee:00:01"
	hw, _ := net.ParseMAC(mac)
	bootOf(t, a, mac, pxe.FirmwareIPXE, pxe.ActionDiscover)
	if err := a.Discovered(ctx, hw, json.RawMessage(`{"mac":"52:54:00:ee:00:01","cpus":4}`)); err != nil {
		t.Fatal(err)
	}
	if m, err := st.Machine(ctx, mac); err != nil || m.State != "discovered" || !strings.Contains(string(m.Facts), `"cpus": 4`) {
		t.Fatalf("after discovery: %+v %v", m, err)
	}
	if err := a.Discovered(ctx, hw, json.RawMessage(`{"mac":"52:54:00:ee:00:01","cpus":8}`)); err != nil {
		t.Fatalf("facts refresh: %v", err)
	}
	bootOf(t, a, mac, pxe.FirmwareIPXE, pxe.ActionDiscover) // discovered, unassigned: discovery again
	if _, err := st.UpdateMachine(ctx, "op", mac, store.MachineChange{Assign: &[2]string{"dev", "s1"}}); err != nil {
		t.Fatal(err)
	}
	// DHCP asks first: it is answered (the machine will install) but nothing is armed.
	bootOf(t, a, mac, pxe.FirmwareBIOS, pxe.ActionWait)
	if m, _ := st.Machine(ctx, mac); m.State != "discovered" {
		t.Fatalf("DHCP armed the install: %s", m.State)
	}
	b := bootOf(t, a, mac, pxe.FirmwareIPXE, pxe.ActionInstall)
	if b.Image != "installer-dev-s1" || b.Generation != 1 || !b.IP.Equal(net.ParseIP("192.168.1.10")) || b.Member != "dev-s1" {
		t.Fatalf("install boot: %+v", b)
	}

	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "installer-dev-s1"), 0o755)
	for _, f := range []string{"bzImage", "initrd"} {
		os.WriteFile(filepath.Join(dir, "installer-dev-s1", f), []byte(f), 0o644)
	}
	h := &pxe.HTTP{Booter: a, Machines: a, Images: pxe.DirImages{Dir: dir}, BaseURL: "http://10.97.0.1"}
	script := func() string {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/boot/ipxe?mac="+mac, nil))
		return rec.Body.String()
	}
	first := script()
	i := strings.Index(first, "nix8s.token=")
	if i < 0 || !strings.Contains(first, "nix8s.generation=1") {
		t.Fatalf("first install script has no token:\n%s", first)
	}
	tok := strings.Fields(first[i+len("nix8s.token="):])[0]
	if again := script(); strings.Contains(again, "nix8s.token") || !strings.Contains(again, "installer-dev-s1/bzImage") {
		t.Fatalf("second script of the generation:\n%s", again)
	}
	post := func(tok, body string) int {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/machine/v1/progress?mac="+mac, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	if code := post("wrong", `{"generation":1,"phase":"disko"}`); code != http.StatusForbidden {
		t.Errorf("wrong token: %d", code)
	}
	if code := post(tok, `{"generation":1,"phase":"disko"}`); code != http.StatusNoContent {
		t.Errorf("progress: %d", code)
	}
	if code := post(tok, `{"generation":1,"phase":"reboot","done":true}`); code != http.StatusNoContent {
		t.Errorf("done: %d", code)
	}
	if code := post(tok, `{"generation":1,"phase":"again"}`); code != http.StatusForbidden {
		t.Errorf("token after done: %d", code)
	}
	bootOf(t, a, mac, pxe.FirmwareIPXE, pxe.ActionLocal) // done: the next network boot goes to the disk

	// Re-armed by an operator (POST /v1/machines/{mac}/reinstall) after a failed state; a reported failure
	// moves it to install_failed, and it boots its disk.
	failed := store.StateInstallFailed
	if _, err := st.UpdateMachine(ctx, "op", mac, store.MachineChange{State: &failed}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ArmInstall(ctx, "op", mac, 0, "reinstall"); err != nil {
		t.Fatal(err)
	}
	s := script()
	tok = strings.Fields(s[strings.Index(s, "nix8s.token=")+len("nix8s.token="):])[0]
	if code := post(tok, `{"generation":2,"phase":"disko","error":"no disk /dev/sda"}`); code != http.StatusNoContent {
		t.Errorf("error report: %d", code)
	}
	if m, _ := st.Machine(ctx, mac); m.State != "install_failed" {
		t.Errorf("state after a reported failure: %s", m.State)
	}
	bootOf(t, a, mac, pxe.FirmwareIPXE, pxe.ActionLocal)
	// Discovery cannot rewrite the facts of a machine that is no longer discovered.
	a.Discovered(ctx, hw, json.RawMessage(`{"mac":"52:54:00:ee:00:01","cpus":1}`))
	if m, _ := st.Machine(ctx, mac); !strings.Contains(string(m.Facts), `"cpus": 8`) {
		t.Errorf("facts rewritten in state %s: %s", m.State, m.Facts)
	}
	evs, _ := st.Events(ctx, mac, 0, 100)
	var progress []string
	for _, e := range evs {
		if e.Kind == "progress" {
			progress = append(progress, e.Actor+" "+e.Reason)
		}
	}
	if got := strings.Join(progress, "|"); got != "machine:"+mac+" installer: disko|machine:"+mac+" installer: reboot|machine:"+mac+" installer failed in disko: no disk /dev/sda" {
		t.Errorf("progress events: %s", got)
	}
}

// Every machine powers on at once: the first server installs, the second server waits for it to be ready,
// the agent waits for both; as each becomes ready the next one is armed on its next script request.
func TestJoinOrderWhenAllPowerOnAtOnce(t *testing.T) {
	ctx := context.Background()
	st, a := setup(t)
	macs := map[string]string{"s1": "52:54:00:ee:00:01", "s2": "52:54:00:ee:00:02", "a1": "52:54:00:ee:00:03"}
	for member, mac := range macs {
		if _, err := st.CreateMachine(ctx, "op", mac, nil, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := st.UpdateMachine(ctx, "op", mac, store.MachineChange{Assign: &[2]string{"dev", member}}); err != nil {
			t.Fatal(err)
		}
	}
	// The agent and the second server ask before the first server.
	if b := bootOf(t, a, macs["a1"], pxe.FirmwareIPXE, pxe.ActionWait); b.Message != "waiting for dev-s1 (discovered), dev-s2 (discovered) to be ready" {
		t.Fatalf("agent: %q", b.Message)
	}
	bootOf(t, a, macs["s2"], pxe.FirmwareIPXE, pxe.ActionWait)
	bootOf(t, a, macs["s1"], pxe.FirmwareIPXE, pxe.ActionInstall)
	if b := bootOf(t, a, macs["s2"], pxe.FirmwareIPXE, pxe.ActionWait); b.Message != "waiting for dev-s1 (installing) to be ready" {
		t.Fatalf("second server while the first installs: %q", b.Message)
	}
	for _, to := range []store.State{store.StateJoined, store.StateReady} {
		if _, err := st.UpdateMachine(ctx, "nodewatch", macs["s1"], store.MachineChange{State: &to}); err != nil {
			t.Fatal(err)
		}
	}
	if b := bootOf(t, a, macs["a1"], pxe.FirmwareIPXE, pxe.ActionWait); b.Message != "waiting for dev-s2 (discovered) to be ready" {
		t.Fatalf("agent after the first server: %q", b.Message)
	}
	bootOf(t, a, macs["s2"], pxe.FirmwareIPXE, pxe.ActionInstall)
	for _, to := range []store.State{store.StateJoined, store.StateReady} {
		st.UpdateMachine(ctx, "nodewatch", macs["s2"], store.MachineChange{State: &to})
	}
	bootOf(t, a, macs["a1"], pxe.FirmwareIPXE, pxe.ActionInstall)

	// An installed machine is never reinstalled by a network boot; a member of a cluster this daemon does
	// not serve boots its disk while installing; an image being built keeps the machine waiting.
	bootOf(t, a, macs["s1"], pxe.FirmwareIPXE, pxe.ActionLocal)
	a.Clusters = []string{"other"}
	bootOf(t, a, macs["a1"], pxe.FirmwareIPXE, pxe.ActionLocal)
	a.Clusters = nil
	a.Images = images{building: map[string]bool{"installer-dev-a1": true}}
	if b := bootOf(t, a, macs["a1"], pxe.FirmwareIPXE, pxe.ActionWait); b.Message != "building the installer of dev-a1" {
		t.Fatalf("while building: %q", b.Message)
	}
	// Arm off: an assigned discovered machine boots discovery until an operator arms it.
	a.ArmOnBoot = false
	if _, err := st.CreateMachine(ctx, "op", "52:54:00:ee:00:09", nil, ""); err != nil {
		t.Fatal(err)
	}
	bootOf(t, a, "52:54:00:ee:00:09", pxe.FirmwareIPXE, pxe.ActionDiscover)
}

// Full-mode leases in PostgreSQL through pxe.Leases: claimed, renewed, released only by their holder.
func TestLeases(t *testing.T) {
	st, _ := setup(t)
	var l pxe.Leases = Leases{Store: st}
	ctx := context.Background()
	c := pxe.Claim{MAC: "52:54:00:ee:00:01", Expires: time.Now().Add(time.Hour), Lo: net.ParseIP("10.0.0.5"), Hi: net.ParseIP("10.0.0.9"), Try: net.ParseIP("10.0.0.5")}
	if ip, err := l.Claim(ctx, c); err != nil || !ip.Equal(net.ParseIP("10.0.0.5")) {
		t.Fatalf("claim: %v %v", ip, err)
	}
	other := c
	other.MAC = "52:54:00:ee:00:02"
	if ip, err := l.Claim(ctx, other); err != nil || ip != nil {
		t.Fatalf("claim of a held address: %v %v", ip, err)
	}
	if err := l.Release(ctx, other.MAC, c.Try); err != nil {
		t.Fatal(err)
	}
	if got, err := st.LeaseByIP(ctx, c.Try); err != nil || got == nil || got.MAC != c.MAC {
		t.Fatalf("after another client's RELEASE: %+v %v", got, err)
	}
}

// fakeBuilder stands in for nix build (it needs nixpkgs, which cannot be had here): it writes a line to the
// log and succeeds, or fails for members named in fail.
type fakeBuilder struct{ fail map[string]bool }

func (f fakeBuilder) Build(_ context.Context, installable string, log io.Writer) (string, error) {
	fmt.Fprintf(log, "building %s\n", installable)
	for m := range f.fail {
		if strings.Contains(installable, "dev-"+m+".") {
			fmt.Fprintln(log, "error: builder for 'nixos-system.drv' failed with exit code 1")
			return "", errors.New("nix build exited 1")
		}
	}
	return "img-" + strings.Split(installable, ".")[1], nil
}

// Installer images are built as jobs by the daemon's real job runner: the machine waits while its job runs,
// gets the image once built; a failed build moves it to install_failed naming the job, whose log has the
// build output.
func TestBuildsAsJobs(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, a := setup(t)
	runner := &jobs.Runner{Store: st, Poll: 50 * time.Millisecond}
	b := &Builds{Store: st, Builder: fakeBuilder{fail: map[string]bool{"s2": true}}, Wake: runner.Wake}
	runner.Handle(JobKind, b.Handle)
	go runner.Run(ctx)
	a.Images = b
	for member, mac := range map[string]string{"s1": "52:54:00:ee:00:01", "s2": "52:54:00:ee:00:02"} {
		st.CreateMachine(ctx, "op", mac, nil, "")
		if _, err := st.UpdateMachine(ctx, "op", mac, store.MachineChange{Assign: &[2]string{"dev", member}}); err != nil {
			t.Fatal(err)
		}
	}
	if b := bootOf(t, a, "52:54:00:ee:00:01", pxe.FirmwareIPXE, pxe.ActionWait); b.Message != "building the installer of dev-s1" {
		t.Fatalf("first boot: %+v", b)
	}
	var got pxe.Boot
	for i := 0; i < 100 && got.Action != pxe.ActionInstall; i++ {
		time.Sleep(50 * time.Millisecond)
		hw, _ := net.ParseMAC("52:54:00:ee:00:01")
		got, _ = pxe.ScriptBoot(ctx, a, hw)
	}
	if got.Action != pxe.ActionInstall || got.Image != "img-dev-s1" || got.Generation != 1 {
		t.Fatalf("after the build: %+v", got)
	}
	// s2 fails to build (armed directly, as the reinstall endpoint does; it is not its turn by boot yet).
	if _, err := st.ArmInstall(ctx, "op", "52:54:00:ee:00:02", 0, "reinstall"); err != nil {
		t.Fatal(err)
	}
	bootOf(t, a, "52:54:00:ee:00:02", pxe.FirmwareIPXE, pxe.ActionWait)
	var m *store.Machine
	for i := 0; i < 100; i++ {
		time.Sleep(50 * time.Millisecond)
		if m, _ = st.Machine(ctx, "52:54:00:ee:00:02"); m.State == "install_failed" {
			break
		}
	}
	evs, _ := st.Events(ctx, m.MAC, 0, 100)
	last := evs[len(evs)-1]
	if m.State != "install_failed" || !strings.Contains(last.Reason, "building the installer failed (its log is job ") {
		t.Fatalf("after a failed build: %s, %+v", m.State, last)
	}
	// The handler moves the machine before the runner records the job's end: wait for that too.
	var js []*store.Job
	for i := 0; i < 100 && len(js) == 0; i++ {
		js, _ = st.Jobs(ctx, store.JobFilter{Kind: JobKind, Status: "failed", Limit: 10})
		if len(js) == 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if len(js) != 1 {
		t.Fatalf("failed build jobs: %d", len(js))
	}
	j, _ := st.Job(ctx, js[0].ID)
	if !strings.Contains(j.Log, "builder for 'nixos-system.drv' failed") || !strings.Contains(last.Reason, fmt.Sprintf("job %d", j.ID)) {
		t.Fatalf("job %d log %q, reason %q", j.ID, j.Log, last.Reason)
	}
	bootOf(t, a, "52:54:00:ee:00:02", pxe.FirmwareIPXE, pxe.ActionLocal)
}

// A done report runs OnInstalled once with the reported host key, which the progress event keeps; a
// failure report, a refused report and a report before done do not run it.
func TestOnInstalled(t *testing.T) {
	ctx := context.Background()
	st, a := setup(t)
	type call struct{ mac, key string }
	var calls []call
	a.OnInstalled = func(_ context.Context, mac, key string) { calls = append(calls, call{mac, key}) }
	const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOvD8Dx1Tm0iULqKVZ1m2ZfmoTqHcTdk3GJ0hZr9Z4Zb"
	arm := func(mac string, member string) (net.HardwareAddr, string, int64) {
		t.Helper()
		if _, err := st.CreateMachine(ctx, "op", mac, nil, "test"); err != nil && !errors.Is(err, store.ErrConflict) {
			t.Fatal(err)
		}
		m, _ := st.Machine(ctx, mac)
		if m.Member == nil {
			if _, err := st.UpdateMachine(ctx, "op", mac, store.MachineChange{Assign: &[2]string{"dev", member}}); err != nil {
				t.Fatal(err)
			}
		}
		m, err := st.ArmInstall(ctx, "op", mac, 0, "test")
		if err != nil {
			t.Fatal(err)
		}
		hw, _ := net.ParseMAC(mac)
		tok, err := a.ClaimToken(ctx, hw, m.InstallGeneration)
		if err != nil {
			t.Fatal(err)
		}
		return hw, tok, m.InstallGeneration
	}

	hw, tok, gen := arm("52:54:00:ee:00:01", "s1")
	if err := a.Progress(ctx, hw, tok, pxe.Progress{Generation: gen, Phase: "install"}); err != nil {
		t.Fatal(err)
	}
	if err := a.Progress(ctx, hw, tok, pxe.Progress{Generation: gen, Phase: "install", HostKey: key}); err == nil {
		t.Error("a host key before done was accepted")
	}
	if len(calls) != 0 {
		t.Fatalf("OnInstalled before done: %v", calls)
	}
	if err := a.Progress(ctx, hw, tok, pxe.Progress{Generation: gen, Phase: "reboot", Done: true, HostKey: key}); err != nil {
		t.Fatal(err)
	}
	if err := a.Progress(ctx, hw, tok, pxe.Progress{Generation: gen, Phase: "reboot", Done: true, HostKey: key}); !errors.Is(err, pxe.ErrToken) {
		t.Errorf("second done: %v, want ErrToken", err)
	}
	if len(calls) != 1 || calls[0] != (call{"52:54:00:ee:00:01", key}) {
		t.Fatalf("OnInstalled calls after done: %v", calls)
	}
	evs, _ := st.Events(ctx, "52:54:00:ee:00:01", 0, 100)
	var details string
	for _, e := range evs {
		if e.Kind == "progress" && strings.Contains(e.Reason, "reboot") {
			details = string(e.Details)
		}
	}
	if !strings.Contains(details, key) {
		t.Errorf("done event's details do not keep the host key: %s", details)
	}

	// A failed install: no delivery.
	hw, tok, gen = arm("52:54:00:ee:00:03", "a1")
	if err := a.Progress(ctx, hw, tok, pxe.Progress{Generation: gen, Phase: "disko", Done: true, Error: "no disk"}); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 1 {
		t.Errorf("OnInstalled ran for a failed install: %v", calls)
	}
}

// A locked machine is never armed: it waits, saying how to unlock it, and installs once unlocked.
func TestLockedMachineWaits(t *testing.T) {
	ctx := context.Background()
	st, a := setup(t)
	mac := "52:54:00:ee:00:01"
	st.CreateMachine(ctx, "op", mac, nil, "")
	locked, unlocked := true, false
	if _, err := st.UpdateMachine(ctx, "op", mac, store.MachineChange{Assign: &[2]string{"dev", "s1"}, Locked: &locked}); err != nil {
		t.Fatal(err)
	}
	b := bootOf(t, a, mac, pxe.FirmwareIPXE, pxe.ActionWait)
	if !strings.Contains(b.Message, "locked: unlock it") || !pxe.ValidMessage(b.Message) {
		t.Fatalf("locked: %q", b.Message)
	}
	if m, _ := st.Machine(ctx, mac); m.State != "discovered" || m.InstallGeneration != 0 {
		t.Fatalf("a locked machine was armed: %+v", m)
	}
	if _, err := st.UpdateMachine(ctx, "op", mac, store.MachineChange{Locked: &unlocked}); err != nil {
		t.Fatal(err)
	}
	bootOf(t, a, mac, pxe.FirmwareIPXE, pxe.ActionInstall)
}
