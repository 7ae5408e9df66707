package store

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// DHCPDECLINE in PostgreSQL: only the holder's lease is declined, the address is then skipped by claims in the
// range until its hold ends, the quarantine is bounded, and a conflict event needs a machine.
func TestDeclineLease(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	ip := net.ParseIP
	lo, hi := ip("10.0.0.10"), ip("10.0.0.20")
	claim := func(mac, try string) net.IP {
		t.Helper()
		got, err := s.ClaimLease(ctx, LeaseClaim{MAC: mac, Expires: time.Now().Add(time.Hour), Lo: lo, Hi: hi, Try: ip(try)})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	decline := func(mac, addr string, until time.Time, max int) bool {
		t.Helper()
		ok, err := s.DeclineLease(ctx, mac, ip(addr), until, max)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	const a, b = "52:54:00:00:01:0a", "52:54:00:00:01:0b"
	claim(a, "10.0.0.10")
	if decline(b, "10.0.0.10", time.Now().Add(time.Hour), 4) {
		t.Fatal("another client's decline held out a's address")
	}
	if !decline(a, "10.0.0.10", time.Now().Add(time.Hour), 4) {
		t.Fatal("the holder's decline was not taken")
	}
	if l, _ := s.LeaseByMAC(ctx, a); l != nil {
		t.Fatalf("the decliner keeps its lease %v", l.IP)
	}
	if got := claim(b, "10.0.0.10"); got != nil {
		t.Fatalf("the held-out address was leased to %s: %v", b, got)
	}
	// A hold that ended gives the address back.
	claim(b, "10.0.0.11")
	if !decline(b, "10.0.0.11", time.Now().Add(-time.Second), 4) {
		t.Fatal("decline not taken")
	}
	if got := claim(a, "10.0.0.11"); !got.Equal(ip("10.0.0.11")) {
		t.Fatalf("an address whose hold ended was not leased again: %v", got)
	}
	// Bounded: with 10.0.0.10 held out, a limit of 2 takes one more and refuses the next (its lease stays).
	claim(b, "10.0.0.12")
	if !decline(b, "10.0.0.12", time.Now().Add(time.Hour), 2) {
		t.Fatal("the second address was not held out")
	}
	claim(b, "10.0.0.13")
	if decline(b, "10.0.0.13", time.Now().Add(time.Hour), 2) {
		t.Fatal("a third address was held out beyond the limit of 2")
	}
	if l, _ := s.LeaseByMAC(ctx, b); l == nil || !l.IP.Equal(ip("10.0.0.13")) {
		t.Fatalf("a refused decline dropped the lease: %+v", l)
	}
	q, err := s.Quarantined(ctx)
	if err != nil || len(q) != 2 {
		t.Fatalf("quarantined %v, %v; want 10.0.0.10 and 10.0.0.12", q, err)
	}

	if err := s.RecordConflict(ctx, "nix8sd:pxe", a, "why", map[string]any{"cause": "declined"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("conflict event of an unknown machine: %v", err)
	}
	if _, err := s.CreateMachine(ctx, "op", a, nil, "test"); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordConflict(ctx, "nix8sd:pxe", a, "a declined 10.0.0.10", map[string]any{"cause": "declined", "address": "10.0.0.10"}); err != nil {
		t.Fatal(err)
	}
	events, err := s.Events(ctx, a, 0, 10)
	if err != nil || len(events) != 2 {
		t.Fatalf("events %v, %v", events, err)
	}
	e := events[1]
	if e.Kind != "conflict" || e.Actor != "nix8sd:pxe" || e.Reason != "a declined 10.0.0.10" || !strings.Contains(string(e.Details), `"address": "10.0.0.10"`) ||
		e.OldState == nil || *e.OldState != "discovered" {
		t.Fatalf("conflict event %+v", e)
	}
}
