package storeboot

// Who a machine is beyond its MAC, and two clients claiming one MAC (docs/pxe.md, "Identity and conflicts"):
// the checks Arm, Discovered and Progress make before they take anything from a machine, and the lock that
// ends an install when one fails.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nix8s/nix8s/internal/pxe"
	"github.com/nix8s/nix8s/internal/store"
)

// refused is what a refused machine is told: never the recorded facts (an impostor would learn what to claim
// next time); the event the operator reads has them.
var refused = fmt.Errorf("%w: this report conflicts with what nix8sd knows of the machine; an operator must read its events and unlock it", pxe.ErrLocked)

// lockedMessage is the console message of a locked machine (pxe.ValidMessage).
func lockedMessage(mac string) string {
	return "locked: read its events, then unlock it (POST /v1/machines/" + mac + "/unlock)"
}

// lock locks mac for cause with reason (the event's) and logs it once; a machine locked already is left as
// it is (LockForConflict adds no event then).
func (a *Adapter) lock(ctx context.Context, mac, cause, reason string) error {
	locked, err := a.Store.LockForConflict(ctx, actor, mac, cause, reason)
	if err != nil {
		return fmt.Errorf("locking %s: %w", mac, err)
	}
	if locked {
		a.log().Warn("machine locked", "mac", mac, "cause", cause, "reason", reason)
	}
	return nil
}

// secondClient records the request's client as the first of conversation kind ("script", "progress") of mac's
// install generation, or compares it with the first: another address is a second machine with this MAC, and
// the machine is locked. Without a client address (DHCP, a caller outside HTTP) there is nothing to compare.
func (a *Adapter) secondClient(ctx context.Context, mac string, generation int64, kind string) (bool, error) {
	ip := pxe.ClientIP(ctx)
	if ip == nil {
		return false, nil
	}
	first, _, err := a.Store.InstallClient(ctx, mac, generation, kind, ip)
	if err != nil || first.Equal(ip) {
		return false, err
	}
	what := map[string]string{"script": "iPXE script requests", "progress": "progress reports"}[kind]
	reason := fmt.Sprintf("two clients claim MAC %s: %s of install generation %d came from %s and from %s (another host uses this MAC); the install is stopped",
		mac, what, generation, first, ip)
	return true, a.lock(ctx, mac, "two-clients", reason)
}

// identityOf reads the "identity" of discovery facts: nil when there is none.
func identityOf(facts json.RawMessage) (*pxe.Identity, error) {
	var f struct {
		Identity *pxe.Identity `json:"identity"`
	}
	if err := json.Unmarshal(facts, &f); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if f.Identity == nil {
		return nil, nil
	}
	return f.Identity, f.Identity.Check()
}

// differs compares reported with the recorded identity rec and returns the event's reason, "" when they match.
func differs(rec *store.Identity, reported *pxe.Identity, what string) (string, error) {
	var want pxe.Identity
	if err := json.Unmarshal(rec.Identity, &want); err != nil {
		return "", fmt.Errorf("the recorded identity: %w", err)
	}
	if reported == nil {
		return fmt.Sprintf("%s carries no hardware identity, and one is recorded (%s): systemUUID %q, systemSerial %q",
			what, rec.Source, want.SystemUUID, want.SystemSerial), nil
	}
	fact, got, had := reported.Differs(want)
	if fact == "" {
		return "", nil
	}
	return fmt.Sprintf("hardware identity differs: %s is %q in %s, %q recorded (%s)", fact, got, what, had, rec.Source), nil
}

// checkReport runs before a progress report is recorded: the token must be the armed install's, the report
// must come from the client of the generation's first report, and its identity must be the recorded one (or
// becomes it when none is recorded). A failed check locks the machine; the report is refused.
func (a *Adapter) checkReport(ctx context.Context, mac string, hash [32]byte, p pxe.Progress) error {
	switch err := a.Store.CheckInstallToken(ctx, mac, p.Generation, hash); {
	case errors.Is(err, store.ErrInstallToken):
		return pxe.ErrToken
	case errors.Is(err, store.ErrLocked):
		return refused
	case err != nil:
		return err
	}
	if second, err := a.secondClient(ctx, mac, p.Generation, "progress"); err != nil || second {
		return errors.Join(err, refused)
	}
	rec, err := a.Store.MachineIdentity(ctx, mac)
	if err != nil {
		return err
	}
	if rec == nil && p.Identity != nil {
		raw, _ := json.Marshal(p.Identity)
		if rec, err = a.Store.RecordIdentity(ctx, mac, raw, fmt.Sprintf("install generation %d", p.Generation), false); err != nil || rec == nil {
			return err // recorded now: nothing to compare with
		}
	}
	if rec == nil {
		return nil
	}
	reason, err := differs(rec, p.Identity, fmt.Sprintf("the installer's %q report of install generation %d", p.Phase, p.Generation))
	if err != nil || reason == "" {
		return err
	}
	return errors.Join(a.lock(ctx, mac, "identity", reason+"; the install is stopped before any secret is delivered"), refused)
}

// discoveredConflict checks a discovery report for a machine that exists: for one that is installing it is a
// second host with this MAC (the machine is installing, not discovering); for an assigned machine whose
// recorded identity differs, other hardware claims the member's MAC. Both lock the machine.
func (a *Adapter) discoveredConflict(ctx context.Context, m *store.Machine, id *pxe.Identity) error {
	ip := pxe.ClientIP(ctx)
	from := ""
	if ip != nil {
		from = " from " + ip.String()
	}
	switch {
	case m.State == store.StateInstalling:
		reason := fmt.Sprintf("a discovery report came%s while the machine is installing (generation %d): another host uses this MAC; the install is stopped",
			from, m.InstallGeneration)
		return errors.Join(a.lock(ctx, m.MAC, "discovery", reason), refused)
	case m.State != store.StateDiscovered || m.Member == nil || m.Locked || id == nil:
		return nil
	}
	rec, err := a.Store.MachineIdentity(ctx, m.MAC)
	if err != nil || rec == nil {
		return err
	}
	reason, err := differs(rec, id, "a discovery report"+from+" for a machine assigned to "+*m.Cluster+"."+*m.Member)
	if err != nil || reason == "" {
		return err
	}
	return errors.Join(a.lock(ctx, m.MAC, "identity", reason), refused)
}
