package storeboot

// What the DHCP server tells the adapter (pxe.DHCPWatcher, docs/pxe.md "Conflicts on DHCP"): the segment
// each MAC's DHCP came from, recorded with the machine its discovery report makes, and the conflicts it
// noticed, which lock a member and are an event of any other machine.

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/nix8s/nix8s/internal/pxe"
	"github.com/nix8s/nix8s/internal/store"
)

var _ pxe.DHCPWatcher = (*Adapter)(nil)

// dhcpSeen is what the adapter remembers of DHCP: the latest segment of each MAC, and when a conflict event
// was last recorded for each MAC and cause (so a client repeating itself does not grow the audit log).
type dhcpSeen struct {
	mu       sync.Mutex
	segments map[string]string
	events   map[[2]string]time.Time
}

// maxSeen bounds the MACs remembered; beyond it they are forgotten all at once (a flood of made-up MACs
// forgets, it does not grow). A forgotten MAC's machine is recorded with no segment.
const maxSeen = 100000

// conflictEventEvery is how often one MAC's conflict of one cause is recorded as an event at most.
const conflictEventEvery = 10 * time.Minute

// Segment implements pxe.DHCPWatcher.
func (a *Adapter) Segment(hw net.HardwareAddr, segment string) {
	mac := hw.String()
	a.seen.mu.Lock()
	defer a.seen.mu.Unlock()
	if a.seen.segments == nil || len(a.seen.segments) >= maxSeen {
		if a.seen.segments[mac] == segment {
			return
		}
		a.seen.segments = map[string]string{}
	}
	a.seen.segments[mac] = segment
}

// segmentOf is the segment of mac's latest DHCP packet, "" when none was seen.
func (a *Adapter) segmentOf(mac string) string {
	a.seen.mu.Lock()
	defer a.seen.mu.Unlock()
	return a.seen.segments[mac]
}

// Conflict implements pxe.DHCPWatcher: a conflict that asks for a lock locks a machine assigned to a member
// (store.LockForConflict: a locked event with the reason, nix8s_machine_locks_total{cause}, and an armed
// install stopped); any other conflict of a known machine is a conflict event, at most one per MAC and cause
// in conflictEventEvery; an unknown MAC has nothing to record.
func (a *Adapter) Conflict(ctx context.Context, hw net.HardwareAddr, c pxe.Conflict) (string, error) {
	mac := hw.String()
	m, err := a.Store.Machine(ctx, mac)
	if errors.Is(err, store.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if c.Lock && m.Member != nil {
		locked, err := a.Store.LockForConflict(ctx, actor, mac, c.Cause, c.Reason)
		switch {
		case err != nil:
			return "", err
		case !locked:
			return "locked already", nil
		}
		a.log().Warn("machine locked", "mac", mac, "cause", c.Cause, "reason", c.Reason)
		return "locked", nil
	}
	key, now := [2]string{mac, c.Cause}, time.Now()
	a.seen.mu.Lock()
	if a.seen.events == nil || len(a.seen.events) >= maxSeen {
		a.seen.events = map[[2]string]time.Time{}
	}
	last, seen := a.seen.events[key]
	if !seen || now.Sub(last) >= conflictEventEvery {
		a.seen.events[key] = now
	}
	a.seen.mu.Unlock()
	if seen && now.Sub(last) < conflictEventEvery {
		return "event repeated (not recorded again)", nil
	}
	details := map[string]any{"cause": c.Cause}
	for k, v := range c.Details {
		details[k] = v
	}
	if err := a.Store.RecordConflict(ctx, actor, mac, c.Reason, details); err != nil && !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	return "event", nil
}

// Decline implements pxe.Leases.
func (l Leases) Decline(ctx context.Context, mac string, ip net.IP, until time.Time, max int) (bool, error) {
	return l.Store.DeclineLease(ctx, mac, ip, until, max)
}
