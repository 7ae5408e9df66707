package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"net"
	"testing"
)

// A conflict lock on a real PostgreSQL: it stops the armed install (install_failed, token gone), adds one
// locked event with the reason, and a second lock adds nothing; a locked machine's token is neither claimed
// nor accepted; install clients and identities keep the first one recorded.
func TestLockForConflict(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	if _, err := s.Modify(ctx, "test", func(*Snapshot) (map[string]any, error) { return cfgOf(t, sample), nil }); err != nil {
		t.Fatal(err)
	}
	mac := "aa:bb:cc:dd:ee:01"
	var locks []string
	s.Hooks.Locked = func(cause string) { locks = append(locks, cause) }
	s.CreateMachine(ctx, "pxe", mac, nil, "")
	if _, err := s.UpdateMachine(ctx, "op", mac, MachineChange{Assign: &[2]string{"dev", "server"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ArmInstall(ctx, "op", mac, 0, "boot"); err != nil {
		t.Fatal(err)
	}
	tok := sha256.Sum256([]byte("t"))
	if err := s.ClaimInstallToken(ctx, "pxe", mac, 1, tok); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckInstallToken(ctx, mac, 1, tok); err != nil {
		t.Fatalf("the claimed token: %v", err)
	}
	if err := s.CheckInstallToken(ctx, mac, 1, sha256.Sum256([]byte("u"))); !errors.Is(err, ErrInstallToken) {
		t.Fatalf("another token: %v", err)
	}

	first, now, err := s.InstallClient(ctx, mac, 1, "progress", net.ParseIP("10.0.0.5"))
	if err != nil || !now || !first.Equal(net.ParseIP("10.0.0.5")) {
		t.Fatalf("first client: %v %v %v", first, now, err)
	}
	if first, now, _ = s.InstallClient(ctx, mac, 1, "progress", net.ParseIP("10.0.0.9")); now || !first.Equal(net.ParseIP("10.0.0.5")) {
		t.Fatalf("second client: %v %v, want the first one kept", first, now)
	}
	if _, now, _ = s.InstallClient(ctx, mac, 1, "script", net.ParseIP("10.0.0.9")); !now {
		t.Fatal("script and progress clients are recorded apart")
	}

	if got, err := s.RecordIdentity(ctx, mac, []byte(`{"systemSerial":"A"}`), "install generation 1", false); got != nil || err != nil {
		t.Fatalf("first identity: %v %v", got, err)
	}
	if got, _ := s.RecordIdentity(ctx, mac, []byte(`{"systemSerial":"B"}`), "install generation 1", false); got == nil || string(got.Identity) != `{"systemSerial": "A"}` {
		t.Fatalf("without replace the first identity stays: %+v", got)
	}

	if ok, err := s.LockForConflict(ctx, "nix8sd:pxe", mac, "two-clients", "two clients: 10.0.0.5 and 10.0.0.9"); !ok || err != nil {
		t.Fatalf("lock: %v %v", ok, err)
	}
	if ok, err := s.LockForConflict(ctx, "nix8sd:pxe", mac, "two-clients", "again"); ok || err != nil {
		t.Fatalf("second lock: %v %v", ok, err)
	}
	m, _ := s.Machine(ctx, mac)
	if !m.Locked || m.State != "install_failed" || m.InstallArmed || m.InstallTokenClaimed {
		t.Fatalf("after the lock: %+v", m)
	}
	evs, _ := s.Events(ctx, mac, 0, 100)
	var locked []string
	for _, e := range evs {
		if e.Kind == "locked" {
			locked = append(locked, e.Reason)
		}
	}
	if len(locked) != 1 || locked[0] != "two clients: 10.0.0.5 and 10.0.0.9" || len(locks) != 1 || locks[0] != "two-clients" {
		t.Fatalf("locked events %q, hook %q", locked, locks)
	}

	// Unlocked and armed again, then locked by an operator: no token is claimed, no report accepted.
	f := false
	if _, err := s.UpdateMachine(ctx, "op", mac, MachineChange{Locked: &f}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ArmInstall(ctx, "op", mac, 0, "reinstall"); err != nil {
		t.Fatal(err)
	}
	if err := s.ClaimInstallToken(ctx, "pxe", mac, 2, tok); err != nil {
		t.Fatal(err)
	}
	tr := true
	if _, err := s.UpdateMachine(ctx, "op", mac, MachineChange{Locked: &tr}); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckInstallToken(ctx, mac, 2, tok); !errors.Is(err, ErrLocked) {
		t.Errorf("check while locked: %v", err)
	}
	if err := s.ReportInstall(ctx, "machine:"+mac, mac, tok, InstallReport{Generation: 2, Phase: "disko"}); !errors.Is(err, ErrLocked) {
		t.Errorf("report while locked: %v", err)
	}
}
