package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// Network installs on a real PostgreSQL: arming is the move into installing with a new generation, the
// token is claimed once, reports need the armed generation's token, done/error use it up, and leaving
// installing disarms whatever the database is told (also by an operator with psql).
func TestArmClaimReport(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	if _, err := s.Modify(ctx, "test", func(*Snapshot) (map[string]any, error) { return cfgOf(t, sample), nil }); err != nil {
		t.Fatal(err)
	}
	mac := "aa:bb:cc:dd:ee:01"
	var failures []string
	s.Hooks.Failed = func(state, cause string) { failures = append(failures, state+"/"+cause) }
	if _, err := s.CreateMachine(ctx, "pxe", mac, nil, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ArmInstall(ctx, "op", mac, 0, ""); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "must be assigned") {
		t.Fatalf("arming an unassigned machine: %v", err)
	}
	m, err := s.UpdateMachine(ctx, "op", mac, MachineChange{Assign: &[2]string{"dev", "server"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ArmInstall(ctx, "op", mac, m.Version+7, ""); !errors.Is(err, ErrConflict) {
		t.Fatalf("arming with a stale version: %v", err)
	}
	m, err = s.ArmInstall(ctx, "op", mac, m.Version, "first boot")
	if err != nil {
		t.Fatal(err)
	}
	if m.State != "installing" || !m.InstallArmed || m.InstallGeneration != 1 || m.InstallTokenClaimed {
		t.Fatalf("armed machine: %+v", m)
	}
	if _, err := s.ArmInstall(ctx, "op", mac, 0, ""); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "already installing") {
		t.Fatalf("arming twice: %v", err)
	}

	tok := sha256.Sum256([]byte("token-1"))
	if err := s.ClaimInstallToken(ctx, "pxe", mac, 2, tok); !errors.Is(err, ErrInstallToken) {
		t.Fatalf("claiming another generation: %v", err)
	}
	if err := s.ClaimInstallToken(ctx, "pxe", mac, 1, tok); err != nil {
		t.Fatal(err)
	}
	if err := s.ClaimInstallToken(ctx, "pxe", mac, 1, sha256.Sum256([]byte("spoofer"))); !errors.Is(err, ErrInstallToken) {
		t.Fatalf("second claim of a generation: %v", err)
	}
	if m, _ = s.Machine(ctx, mac); !m.InstallTokenClaimed {
		t.Fatal("token not recorded as claimed")
	}

	bad := []struct {
		name string
		hash [32]byte
		r    InstallReport
	}{
		{"wrong token", sha256.Sum256([]byte("nope")), InstallReport{Generation: 1, Phase: "disko"}},
		{"other generation", tok, InstallReport{Generation: 2, Phase: "disko"}},
	}
	for _, b := range bad {
		if err := s.ReportInstall(ctx, "machine", mac, b.hash, b.r); !errors.Is(err, ErrInstallToken) {
			t.Fatalf("%s: %v", b.name, err)
		}
	}
	if err := s.ReportInstall(ctx, "machine", "aa:bb:cc:dd:ee:99", tok, InstallReport{Generation: 1, Phase: "x"}); !errors.Is(err, ErrInstallToken) {
		t.Fatalf("unknown machine: %v", err)
	}
	for _, r := range []InstallReport{{Generation: 1, Phase: "disko"}, {Generation: 1, Phase: "install"}, {Generation: 1, Phase: "done", Done: true}} {
		if err := s.ReportInstall(ctx, "machine", mac, tok, r); err != nil {
			t.Fatalf("%+v: %v", r, err)
		}
	}
	if err := s.ReportInstall(ctx, "machine", mac, tok, InstallReport{Generation: 1, Phase: "again"}); !errors.Is(err, ErrInstallToken) {
		t.Fatalf("report after done: %v", err)
	}
	m, _ = s.Machine(ctx, mac)
	if m.State != "installing" || m.InstallArmed || m.InstallTokenClaimed {
		t.Fatalf("after done the install stays installing (until its node registers), disarmed: %+v", m)
	}

	// Generation 2 fails: install_failed with the installer's reason; then an operator moves the machine on
	// by hand (SQL), and the database disarms it anyway.
	if _, err := s.UpdateMachine(ctx, "op", mac, MachineChange{State: statep("install_failed")}); err != nil {
		t.Fatal(err)
	}
	if m, err = s.ArmInstall(ctx, "op", mac, 0, "reinstall"); err != nil || m.InstallGeneration != 2 {
		t.Fatalf("re-arm: %+v, %v", m, err)
	}
	tok2 := sha256.Sum256([]byte("token-2"))
	if err := s.ClaimInstallToken(ctx, "pxe", mac, 2, tok2); err != nil {
		t.Fatal(err)
	}
	if err := s.ReportInstall(ctx, "machine", mac, tok, InstallReport{Generation: 2, Phase: "disko"}); !errors.Is(err, ErrInstallToken) {
		t.Fatalf("the first generation's token on the second: %v", err)
	}
	if err := s.ReportInstall(ctx, "machine", mac, tok2, InstallReport{Generation: 2, Phase: "disko", Error: "no disk /dev/sda"}); err != nil {
		t.Fatal(err)
	}
	if m, _ = s.Machine(ctx, mac); m.State != "install_failed" || m.InstallArmed {
		t.Fatalf("after an error: %+v", m)
	}
	if got := strings.Join(failures, " "); got != "install_failed/daemon install_failed/installer" {
		t.Fatalf("failures counted: %s", got)
	}
	if _, err := s.pool.Exec(ctx, `UPDATE machines SET install_generation = 1 WHERE mac = $1::macaddr`, mac); err == nil || !strings.Contains(err.Error(), "only grows") {
		t.Fatalf("lowering the generation by SQL: %v", err)
	}
	if _, err := s.pool.Exec(ctx, `UPDATE machines SET install_armed = true, install_generation = 3 WHERE mac = $1::macaddr`, mac); err == nil {
		t.Fatal("arming by SQL without moving into installing was accepted")
	}

	evs, err := s.Events(ctx, mac, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range evs {
		if e.Kind == "armed" || e.Kind == "progress" || (e.Kind == "state" && *e.NewState == "install_failed") {
			kinds = append(kinds, e.Kind+":"+e.Reason)
		}
	}
	want := "armed:first boot,progress:installer: disko,progress:installer: install,progress:installer: done," +
		"state:,armed:reinstall,progress:installer failed in disko: no disk /dev/sda,state:installer failed in disko: no disk /dev/sda"
	if got := strings.Join(kinds, ","); got != want {
		t.Fatalf("events:\n got %s\nwant %s", got, want)
	}
}

// An install over SSH moves to installing without arming: the machine is not handed an installer.
func TestInstallingWithoutArming(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	if _, err := s.Modify(ctx, "test", func(*Snapshot) (map[string]any, error) { return cfgOf(t, sample), nil }); err != nil {
		t.Fatal(err)
	}
	mac := "aa:bb:cc:dd:ee:01"
	s.CreateMachine(ctx, "op", mac, nil, "")
	m, err := s.UpdateMachine(ctx, "op", mac, MachineChange{Assign: &[2]string{"dev", "server"}, State: statep("installing")})
	if err != nil {
		t.Fatal(err)
	}
	if m.InstallArmed || m.InstallGeneration != 0 {
		t.Fatalf("%+v", m)
	}
	if err := s.ClaimInstallToken(ctx, "pxe", mac, 0, sha256.Sum256(nil)); !errors.Is(err, ErrInstallToken) {
		t.Fatalf("claim without arming: %v", err)
	}
}

func TestLeases(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	ip := net.ParseIP
	lo, hi := ip("10.0.0.10"), ip("10.0.0.20")
	claim := func(mac, try string, want net.IP, expires time.Time) net.IP {
		t.Helper()
		got, err := s.ClaimLease(ctx, LeaseClaim{MAC: mac, Expires: expires, Want: want, Lo: lo, Hi: hi, Try: ip(try)})
		if err != nil {
			t.Fatalf("claim of %s (try %s): %v", mac, try, err)
		}
		return got
	}
	holder := func(addr string) string {
		t.Helper()
		l, err := s.LeaseByIP(ctx, ip(addr))
		if err != nil {
			t.Fatal(err)
		}
		if l == nil {
			return ""
		}
		return l.MAC
	}
	a, b, c, d := "52:54:00:00:00:0a", "52:54:00:00:00:0b", "52:54:00:00:00:0c", "52:54:00:00:00:0d"
	tests := []struct {
		name string
		run  func() net.IP
		want string
	}{
		{"a free address is leased", func() net.IP { return claim(a, "10.0.0.10", nil, exp) }, "10.0.0.10"},
		{"another client's unexpired address is not", func() net.IP { return claim(b, "10.0.0.10", nil, exp) }, "<nil>"},
		{"a client keeps its address whatever it tries", func() net.IP { return claim(a, "10.0.0.11", nil, exp) }, "10.0.0.10"},
		{"an expired lease is taken over", func() net.IP {
			claim(a, "10.0.0.10", nil, time.Now().Add(-time.Second))
			return claim(b, "10.0.0.10", nil, exp)
		}, "10.0.0.10"},
		{"a member's plan IP is taken from whoever holds it", func() net.IP { return claim(c, "", ip("10.0.0.10"), exp) }, "10.0.0.10"},
		{"a lease outside the range gives way to one inside", func() net.IP {
			claim(d, "", ip("10.0.0.50"), exp)
			return claim(d, "10.0.0.12", nil, exp)
		}, "10.0.0.12"},
	}
	for _, tc := range tests {
		if got := tc.run(); got.String() != tc.want {
			t.Errorf("%s: got %v, want %s", tc.name, got, tc.want)
		}
	}
	if h := holder("10.0.0.10"); h != c {
		t.Errorf(".10 is held by %q, want %s", h, c)
	}
	if l, _ := s.LeaseByMAC(ctx, a); l != nil {
		t.Errorf("a still holds %v after losing its expired address", l.IP)
	}
	if h := holder("10.0.0.50"); h != "" {
		t.Errorf(".50 still held by %s", h)
	}
	// A RELEASE counts only from the holder of the address it names.
	if err := s.ReleaseLease(ctx, b, ip("10.0.0.10")); err != nil {
		t.Fatal(err)
	}
	if h := holder("10.0.0.10"); h != c {
		t.Errorf("a RELEASE of .10 by %s (not its holder) removed the lease: held by %q", b, h)
	}
	if err := s.ReleaseLease(ctx, c, ip("10.0.0.10")); err != nil {
		t.Fatal(err)
	}
	if h := holder("10.0.0.10"); h != "" {
		t.Errorf("the holder's RELEASE left the lease with %q", h)
	}
}

// Many clients claiming at once, proposing the same addresses: the table's uniqueness hands each address to one.
func TestLeaseClaimsConcurrent(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	lo, hi := net.ParseIP("10.0.1.1"), net.ParseIP("10.0.1.40")
	var mu sync.Mutex
	got := map[string][]string{}
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mac := fmt.Sprintf("52:54:00:00:01:%02x", i)
			for try := 1; try <= 40; try++ {
				ip, err := s.ClaimLease(ctx, LeaseClaim{MAC: mac, Expires: exp, Lo: lo, Hi: hi, Try: net.ParseIP(fmt.Sprintf("10.0.1.%d", try))})
				if err != nil {
					t.Error(err)
					return
				}
				if ip != nil {
					mu.Lock()
					got[ip.String()] = append(got[ip.String()], mac)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(got) != 40 {
		t.Errorf("%d of the 40 addresses leased to 60 clients, want all", len(got))
	}
	for ip, macs := range got {
		if len(macs) != 1 {
			t.Errorf("%s went to %v", ip, macs)
		}
	}
}
