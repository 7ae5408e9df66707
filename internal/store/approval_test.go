package store

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
)

// Pending approvals on a real PostgreSQL (migration 00007): only a finished, disarmed install can wait; the
// wait pauses the installing deadline and is dropped when the machine leaves installing (however it is told
// to, psql included) or a new install is armed; two operators approving at once queue one job; a fingerprint
// the database would not hold as SHA256 is refused there too.
func TestApprovalLifecycle(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	if _, err := s.Modify(ctx, "test", func(*Snapshot) (map[string]any, error) { return cfgOf(t, sample), nil }); err != nil {
		t.Fatal(err)
	}
	const mac, key = "aa:bb:cc:dd:ee:01", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOvD8Dx1Tm0iULqKVZ1m2ZfmoTqHcTdk3GJ0hZr9Z4Zb"
	fp := "SHA256:" + strings.Repeat("A", 43)
	if _, err := s.CreateMachine(ctx, "pxe", mac, nil, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateMachine(ctx, "op", mac, MachineChange{Assign: &[2]string{"dev", "server"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AwaitApproval(ctx, "pxe", mac, key, fp, ""); !errors.Is(err, ErrConflict) {
		t.Fatalf("a discovered machine waits for approval: %v", err)
	}
	installed := func() {
		t.Helper()
		m, err := s.ArmInstall(ctx, "op", mac, 0, "")
		if err != nil {
			t.Fatal(err)
		}
		tok := sha256.Sum256([]byte(m.MAC + string(rune(m.InstallGeneration))))
		if err := s.ClaimInstallToken(ctx, "pxe", mac, m.InstallGeneration, tok); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AwaitApproval(ctx, "pxe", mac, key, fp, ""); !errors.Is(err, ErrConflict) {
			t.Fatalf("an armed install waits for approval before its done report: %v", err)
		}
		if err := s.ReportInstall(ctx, "machine:"+mac, mac, tok, InstallReport{Generation: m.InstallGeneration, Phase: "reboot", Done: true, HostKey: key}); err != nil {
			t.Fatal(err)
		}
		m, err = s.AwaitApproval(ctx, "pxe", mac, key, fp, "approve servers")
		if err != nil || m.AwaitingApproval == nil || m.AwaitingApproval.Fingerprint != fp || m.StateDeadline != nil {
			t.Fatalf("waiting: %+v %v", m, err)
		}
	}
	installed()
	if _, err := s.pool.Exec(ctx, `UPDATE machines SET approval_fingerprint = 'MD5:00' WHERE mac = $1`, mac); err == nil {
		t.Error("the database took a fingerprint that is not SHA256")
	}
	if n, err := s.AwaitingApproval(ctx); err != nil || n != 1 {
		t.Fatalf("awaiting: %d %v", n, err)
	}
	// Leaving installing (here by psql) drops the wait.
	if _, err := s.pool.Exec(ctx, `UPDATE machines SET state = 'install_failed' WHERE mac = $1`, mac); err != nil {
		t.Fatal(err)
	}
	if m, _ := s.Machine(ctx, mac); m.AwaitingApproval != nil {
		t.Fatalf("install_failed still waits: %+v", m.AwaitingApproval)
	}
	if _, _, err := s.ApproveMachine(ctx, "op", mac, fp, "", nil); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "not awaiting approval") {
		t.Fatalf("approving a failed install: %v", err)
	}

	// Two operators at once: one job, the other told there is nothing to approve.
	installed()
	job := func(m *Machine, a Approval) (string, json.RawMessage, error) {
		p, _ := json.Marshal(map[string]string{"mac": m.MAC, "hostKey": a.HostKey})
		return "deliver-secrets", p, nil
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); _, _, errs[i] = s.ApproveMachine(ctx, "op", mac, fp, "", job) }()
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) || !errors.Is(errors.Join(errs...), ErrConflict) {
		t.Fatalf("concurrent approvals: %v", errs)
	}
	js, _ := s.Jobs(ctx, JobFilter{Kind: "deliver-secrets", Limit: 10})
	if len(js) != 1 || js[0].MAC == nil || *js[0].MAC != mac || !strings.Contains(string(js[0].Params), key) {
		t.Fatalf("jobs after two approvals: %+v", js)
	}
	if m, _ := s.Machine(ctx, mac); m.AwaitingApproval != nil || m.StateDeadline == nil {
		t.Fatalf("approved machine: %+v deadline %v", m.AwaitingApproval, m.StateDeadline)
	}
}
