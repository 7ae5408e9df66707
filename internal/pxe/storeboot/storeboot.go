// Package storeboot puts the PXE seams (pxe.Booter, pxe.Machines, pxe.TokenClaimer) on the daemon's store:
// what a machine boots follows its state in the database (installing: its member's installer; joined, ready
// and later: its disk; unknown or discovered: discovery), and discovery facts become machines.
//
// The store has no place yet for the armed install (generation, one-time token) nor for install progress
// events; Arming is that seam, with an in-memory implementation (MemArming) until the store offers it. See
// docs/pxe.md, "What the store must offer".
package storeboot

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/nix8s/nix8s/internal/pxe"
	"github.com/nix8s/nix8s/internal/store"
)

// MachineStore is the part of *store.Store this adapter uses.
type MachineStore interface {
	Machine(ctx context.Context, mac string) (*store.Machine, error)
	CreateMachine(ctx context.Context, actor, mac string, facts json.RawMessage, reason string) (*store.Machine, error)
	UpdateMachine(ctx context.Context, actor, mac string, c store.MachineChange) (*store.Machine, error)
}

// Arming keeps the one-shot install arming of each machine: a generation number and the hash of a one-time
// phone-home token. The store should hold it (columns on machines) so that several daemons agree.
type Arming interface {
	// Arm starts a new generation for mac and returns its token (only the hash is kept).
	Arm(ctx context.Context, mac string) (token string, generation int64, err error)
	// Armed returns the armed generation, if any.
	Armed(ctx context.Context, mac string) (generation int64, ok bool, err error)
	// Claim returns the token of the armed generation once (for the installer's boot script).
	Claim(ctx context.Context, mac string, generation int64) (string, error)
	// Check verifies a token of the armed generation; done disarms it (the token is then used up).
	Check(ctx context.Context, mac string, generation int64, token string, done bool) error
}

// Images names the installer image of a member and its plan IP (nil: none).
type Images interface {
	Installer(ctx context.Context, cluster, member string) (imageID string, ip net.IP, err error)
}

// Adapter implements pxe.Booter, pxe.Machines and pxe.TokenClaimer on a store.
type Adapter struct {
	Store  MachineStore
	Arming Arming
	Images Images
	// DiscoveryImage is the discovery image's ID; "" turns discovery off (unknown machines fall through).
	DiscoveryImage string
	// OnProgress, when set, receives every accepted progress report (the store has no event kind for it yet).
	OnProgress func(mac string, p pxe.Progress)
}

const actor = "nix8sd:pxe"

// Boot implements pxe.Booter.
func (a *Adapter) Boot(ctx context.Context, hw net.HardwareAddr, _ pxe.Firmware) (pxe.Boot, error) {
	mac := hw.String()
	m, err := a.Store.Machine(ctx, mac)
	if errors.Is(err, store.ErrNotFound) {
		return a.discover(), nil
	}
	if err != nil {
		return pxe.Boot{}, err
	}
	var b pxe.Boot
	if m.Cluster != nil && m.Member != nil {
		b.Member = *m.Cluster + "-" + *m.Member
		if _, ip, err := a.Images.Installer(ctx, *m.Cluster, *m.Member); err == nil {
			b.IP = ip
		}
	}
	switch m.State {
	case "discovered":
		d := a.discover()
		d.IP, d.Member = b.IP, b.Member
		return d, nil
	case "installing":
		gen, armed, err := a.Arming.Armed(ctx, mac)
		if err != nil {
			return pxe.Boot{}, err
		}
		if !armed {
			// Reported done (rebooting into the installed system) or never armed: never wipe on our own.
			b.Action = pxe.ActionLocal
			return b, nil
		}
		img, _, err := a.Images.Installer(ctx, *m.Cluster, *m.Member)
		if err != nil {
			return pxe.Boot{}, fmt.Errorf("installer of %s: %w", b.Member, err)
		}
		b.Action, b.Image, b.Generation = pxe.ActionInstall, img, gen
		return b, nil
	case "deprovisioning":
		// A wipe image is not there yet: leave the machine to its next boot device.
		b.Action = pxe.ActionIgnore
		return b, nil
	default: // joined, ready, rebuilding, and the failed states: the disk holds the system, or what is left.
		b.Action = pxe.ActionLocal
		return b, nil
	}
}

func (a *Adapter) discover() pxe.Boot {
	if a.DiscoveryImage == "" {
		return pxe.Boot{Action: pxe.ActionIgnore}
	}
	return pxe.Boot{Action: pxe.ActionDiscover, Image: a.DiscoveryImage}
}

// ClaimToken implements pxe.TokenClaimer.
func (a *Adapter) ClaimToken(ctx context.Context, hw net.HardwareAddr, generation int64) (string, error) {
	return a.Arming.Claim(ctx, hw.String(), generation)
}

// Discovered implements pxe.Machines: a new machine is created as discovered; a known one in state
// discovered gets its facts refreshed; any other state keeps its facts (a booted discovery image cannot
// rewrite what an installed machine is).
func (a *Adapter) Discovered(ctx context.Context, hw net.HardwareAddr, facts json.RawMessage) error {
	mac := hw.String()
	_, err := a.Store.CreateMachine(ctx, actor, mac, facts, "reported by the discovery image")
	if !errors.Is(err, store.ErrConflict) {
		return err
	}
	m, err := a.Store.Machine(ctx, mac)
	if err != nil {
		return err
	}
	if m.State != "discovered" {
		return nil
	}
	_, err = a.Store.UpdateMachine(ctx, actor, mac, store.MachineChange{Version: m.Version, Facts: facts, Reason: "reported by the discovery image"})
	return err
}

// Progress implements pxe.Machines: accepted only while the machine is installing with that generation armed.
func (a *Adapter) Progress(ctx context.Context, hw net.HardwareAddr, token string, p pxe.Progress) error {
	mac := hw.String()
	m, err := a.Store.Machine(ctx, mac)
	if errors.Is(err, store.ErrNotFound) {
		return pxe.ErrToken
	}
	if err != nil {
		return err
	}
	if m.State != "installing" {
		return pxe.ErrToken
	}
	if err := a.Arming.Check(ctx, mac, p.Generation, token, p.Done || p.Error != ""); err != nil {
		return err
	}
	if p.Error != "" {
		state := "install_failed"
		if _, err := a.Store.UpdateMachine(ctx, actor, mac, store.MachineChange{State: &state, Reason: "installer: " + p.Error}); err != nil {
			return err
		}
	}
	if a.OnProgress != nil {
		a.OnProgress(mac, p)
	}
	return nil
}

// MemArming is an in-memory Arming (one daemon; lost on restart).
type MemArming struct {
	mu sync.Mutex
	m  map[string]*arm
}

type arm struct {
	gen   int64
	hash  [32]byte
	token string
	armed bool
}

func (s *MemArming) get(mac string) *arm {
	if s.m == nil {
		s.m = map[string]*arm{}
	}
	if s.m[mac] == nil {
		s.m[mac] = &arm{}
	}
	return s.m[mac]
}

// Arm implements Arming.
func (s *MemArming) Arm(_ context.Context, mac string) (string, int64, error) {
	tok, err := pxe.NewToken()
	if err != nil {
		return "", 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	x := s.get(mac)
	x.gen++
	x.hash, x.token, x.armed = sha256.Sum256([]byte(tok)), tok, true
	return tok, x.gen, nil
}

// Armed implements Arming.
func (s *MemArming) Armed(_ context.Context, mac string) (int64, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	x := s.get(mac)
	return x.gen, x.armed, nil
}

// Claim implements Arming.
func (s *MemArming) Claim(_ context.Context, mac string, gen int64) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	x := s.get(mac)
	if !x.armed || x.gen != gen || x.token == "" {
		return "", pxe.ErrToken
	}
	t := x.token
	x.token = ""
	return t, nil
}

// Check implements Arming.
func (s *MemArming) Check(_ context.Context, mac string, gen int64, token string, done bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	x := s.get(mac)
	h := sha256.Sum256([]byte(token))
	if !x.armed || x.gen != gen || subtle.ConstantTimeCompare(h[:], x.hash[:]) != 1 {
		return pxe.ErrToken
	}
	if done {
		x.armed = false
	}
	return nil
}
