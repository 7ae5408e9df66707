package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// A member's install lock: one holder at a time, the holder's name in the refusal, and a holder whose
// connection PostgreSQL ends (as when its daemon dies) loses it, hears so, and the next attempt gets it.
func TestMemberLock(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	a, err := st.LockMember(ctx, "t", "a1", "nix8sd:h:1 job 7", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()

	// Another member is not held up.
	other, err := st.LockMember(ctx, "t", "a2", "nix8sd:h:2 job 8", 0, nil)
	if err != nil {
		t.Fatalf("lock of another member: %v", err)
	}
	other.Release()

	var told *LockHeldError
	_, err = st.LockMember(ctx, "t", "a1", "nix8sd:h:2 job 7", 1500*time.Millisecond, func(h *LockHeldError) { told = h })
	var held *LockHeldError
	if !errors.As(err, &held) {
		t.Fatalf("second lock: %v, want a LockHeldError", err)
	}
	if held.Holder != "nix8sd:h:1 job 7" || told == nil || told.Holder != "nix8sd:h:1 job 7" {
		t.Errorf("holder %q (told %v), want nix8sd:h:1 job 7", held.Holder, told)
	}
	for _, want := range []string{`member a1 of cluster "t": nix8sd:h:1 job 7 (connected since `, "still holds its member lock (held by installs and rollouts) after ", "no second attempt starts"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}

	// PostgreSQL ends the holder's session: the lock is free for the next attempt, and the holder knows.
	if _, err := st.pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'nix8sd:h:1 job 7'`); err != nil {
		t.Fatal(err)
	}
	b, err := st.LockMember(ctx, "t", "a1", "nix8sd:h:2 job 7", 10*time.Second, nil)
	if err != nil {
		t.Fatalf("lock after the holder's session ended: %v", err)
	}
	defer b.Release()
	select {
	case <-a.Lost().Done():
		if cause := context.Cause(a.Lost()); !strings.Contains(cause.Error(), "the connection holding its member lock failed") {
			t.Errorf("cause %v", cause)
		}
	case <-time.After(3 * MemberLockPing):
		t.Error("the first holder never heard that its lock was lost")
	}
	// Released, the lock is free at once.
	b.Release()
	c, err := st.LockMember(ctx, "t", "a1", "x", 0, nil)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	c.Release()
}
