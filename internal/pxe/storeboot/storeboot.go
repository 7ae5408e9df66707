// Package storeboot puts the PXE seams (pxe.Booter, pxe.Machines, pxe.TokenClaimer, pxe.Leases) on the
// daemon's store: what a machine boots follows its state in the database, discovery facts become machines,
// install progress goes into the machine's audit log, and full-mode leases live in PostgreSQL.
//
// The boot decision, by state:
//
//	unknown, discovered and unassigned   the discovery image (or nothing when discovery is off)
//	discovered and assigned              armed (-> installing, new generation) on its iPXE script request once
//	                                     every member of earlier join waves is ready; until then it waits
//	installing, armed                    its member's installer, with the one-time token on the first script;
//	                                     locked (a conflict, conflict.go) it waits, never given a token
//	installing, not armed                its disk (an install over SSH, or the installer reported done)
//	deprovisioning                       nothing (no wipe image yet)
//	anything else                        its disk: never reinstalled until an operator asks
package storeboot

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"

	"github.com/nix8s/nix8s/internal/inventory"
	"github.com/nix8s/nix8s/internal/pxe"
	"github.com/nix8s/nix8s/internal/store"
)

// MachineStore is the part of *store.Store this adapter uses.
type MachineStore interface {
	Machine(ctx context.Context, mac string) (*store.Machine, error)
	MemberStates(ctx context.Context, cluster string, members []string) (map[string]string, error)
	CreateMachine(ctx context.Context, actor, mac string, facts json.RawMessage, reason string) (*store.Machine, error)
	DiscoverMachine(ctx context.Context, actor, mac string, facts json.RawMessage, lim store.DiscoverLimits, reason string) (store.Discovery, error)
	UpdateMachine(ctx context.Context, actor, mac string, c store.MachineChange) (*store.Machine, error)
	ArmInstall(ctx context.Context, actor, mac string, version int64, reason string) (*store.Machine, error)
	ClaimInstallToken(ctx context.Context, actor, mac string, generation int64, hash [32]byte) error
	ReportInstall(ctx context.Context, actor, mac string, hash [32]byte, r store.InstallReport) error
	// Identity and conflicts (conflict.go).
	CheckInstallToken(ctx context.Context, mac string, generation int64, hash [32]byte) error
	MachineIdentity(ctx context.Context, mac string) (*store.Identity, error)
	RecordIdentity(ctx context.Context, mac string, identity json.RawMessage, source string, replace bool) (*store.Identity, error)
	InstallClient(ctx context.Context, mac string, generation int64, kind string, ip net.IP) (net.IP, bool, error)
	LockForConflict(ctx context.Context, actor, mac, cause, reason string) (bool, error)
	// Conflicts the DHCP server noticed that lock nothing (dhcp.go).
	RecordConflict(ctx context.Context, actor, mac, reason string, details map[string]any) error
}

// Planner is the core's plan of the stored inventory (*inventory.Plans, shared with the API server): decoded
// once per inventory version, so a decision costs the same in a cluster of 5 or 5,000 members.
type Planner interface {
	Cluster(ctx context.Context, name string) (*inventory.Cluster, error)
}

// ErrBuilding: the installer image is being built; the machine waits.
var ErrBuilding = errors.New("the installer image is being built")

// Images names the installer image of an armed machine.
type Images interface {
	// Installer returns the image ID of m's member's installer, ErrBuilding while it is built. A build that
	// failed is reported by the implementation (the machine moves to install_failed with the build log).
	Installer(ctx context.Context, m *store.Machine) (imageID string, err error)
}

// Adapter implements pxe.Booter, pxe.Machines and pxe.TokenClaimer on a store.
type Adapter struct {
	Store  MachineStore
	Plans  Planner
	Images Images
	// Clusters limits network installs to these clusters (nil: every cluster). Machines of other clusters
	// are told to boot their disk.
	Clusters []string
	// DiscoveryImage is the discovery image's ID; "" turns discovery off (unknown machines fall through).
	DiscoveryImage string
	// Arm, when true, arms an assigned machine in state discovered when it boots from the network (in its
	// turn in the join order). When false, only POST /v1/machines/{mac}/reinstall arms installs.
	Arm bool
	// OnArm, when set, runs after an install was armed by a boot (e.g. to forget the member's old node).
	OnArm func(ctx context.Context, m *store.Machine)
	// OnInstalled, when set, runs after a done report (not an error) was recorded, with the host key the
	// installer reported ("" when it sent none): the daemon queues the delivery of the member's token files
	// over ssh (jobs.Runner.QueueDeliverSecrets), which the netboot installer does not carry.
	OnInstalled func(ctx context.Context, mac string, hostKey string)
	// Approve is provisioning.pxe.approve from the core's PXE view ("servers", "all" or "none"; nix8sd sets
	// it): a done report of a member it names does not run OnInstalled but records the reported host key in
	// Approvals and waits for POST /v1/machines/{mac}/approve (approval.go). "" is "none".
	Approve   string
	Approvals Approvals
	// MaxDiscovered is how many machines may wait in state discovered before new MACs are refused
	// (default DefaultMaxDiscovered; negative: no cap).
	MaxDiscovered int
	// MaxDiscoveredPerSegment is how many of them may come from one segment (the segment of the MAC's DHCP
	// packets: its relay's address, or the DHCP interface's subnet; dhcp.go), so that a flood on one segment
	// leaves room for machines of the others. Default a quarter of MaxDiscovered (at least 1); negative: no
	// cap per segment.
	MaxDiscoveredPerSegment int
	Logger                  *slog.Logger

	mu        sync.RWMutex
	discovery *string  // set by SetDiscoveryImage, overrides DiscoveryImage
	seen      dhcpSeen // what DHCP told of MACs (dhcp.go)
}

// SetDiscoveryImage turns discovery on with image id (once it is built), safe while serving.
func (a *Adapter) SetDiscoveryImage(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.discovery = &id
}

// EnsureAssigned makes the machine with mac exist and be assigned to cluster.member (nix8sd serve --config:
// the flake's members are the machines). A machine already assigned elsewhere is an error naming the fix.
func EnsureAssigned(ctx context.Context, st MachineStore, mac, cluster, member string) error {
	m, err := st.Machine(ctx, mac)
	if errors.Is(err, store.ErrNotFound) {
		m, err = st.CreateMachine(ctx, actor, mac, nil, "a member of the served config names this MAC")
	}
	if err != nil {
		return err
	}
	switch {
	case m.Cluster != nil && m.Member != nil && *m.Cluster == cluster && *m.Member == member:
		return nil
	case m.Member != nil:
		return fmt.Errorf("it is assigned to %s.%s (state %s); the config gives that MAC to %s.%s: fix network.mac, or release the machine (POST /v1/machines/%s/unassign while discovered)",
			*m.Cluster, *m.Member, m.State, cluster, member, mac)
	}
	_, err = st.UpdateMachine(ctx, actor, mac, store.MachineChange{Version: m.Version, Assign: &[2]string{cluster, member},
		Reason: "a member of the served config names this MAC"})
	return err
}

const actor = "nix8sd:pxe"

// readyStates are the states in which a member counts as joined for the ones after it.
var readyStates = []string{"ready", "rebuilding", "rebuild_failed"}

func (a *Adapter) log() *slog.Logger {
	if a.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Logger
}

func (a *Adapter) served(cluster string) bool {
	return a.Clusters == nil || slices.Contains(a.Clusters, cluster)
}

// Boot implements pxe.Booter. Only an iPXE script request (fw == FirmwareIPXE) changes anything (arming):
// DHCP asks too, to know whether to answer, and must not.
func (a *Adapter) Boot(ctx context.Context, hw net.HardwareAddr, fw pxe.Firmware) (pxe.Boot, error) {
	mac := hw.String()
	m, err := a.Store.Machine(ctx, mac)
	if errors.Is(err, store.ErrNotFound) {
		return a.discover(), nil
	}
	if err != nil {
		return pxe.Boot{}, err
	}
	var b pxe.Boot
	var plan *inventory.Cluster
	assigned := m.Cluster != nil && m.Member != nil
	if assigned {
		b.Member = *m.Cluster + "-" + *m.Member
		c, err := a.Plans.Cluster(ctx, *m.Cluster)
		if err != nil {
			return pxe.Boot{}, fmt.Errorf("the plan of %s: %w", *m.Cluster, err)
		}
		plan = c
		if mp, ok := c.Members[*m.Member]; ok {
			b.IP = net.ParseIP(mp.IP)
		}
	}
	served := assigned && a.served(*m.Cluster)
	switch m.State {
	case "discovered":
		if !served || !a.Arm {
			d := a.discover()
			d.IP, d.Member = b.IP, b.Member
			return d, nil
		}
		if m.Locked {
			// Locked refuses every destructive move: it waits until an operator unlocks it.
			b.Action, b.Message = pxe.ActionWait, "locked: unlock it (POST /v1/machines/"+mac+"/unlock) to install it"
			return b, nil
		}
		if fw != pxe.FirmwareIPXE {
			// DHCP and the firmware only need to know that the machine boots iPXE (and its plan address): the
			// join-order gate is the script request's, which is asked again every wait interval anyway.
			b.Action = pxe.ActionWait
			return b, nil
		}
		if wait, err := a.waitingFor(ctx, plan, *m.Member); err != nil || wait != "" {
			b.Action, b.Message = pxe.ActionWait, wait
			return b, err
		}
		m, err = a.Store.ArmInstall(ctx, actor, mac, m.Version, "network boot of an assigned machine, in its turn of the join order")
		if errors.Is(err, store.ErrConflict) {
			// Changed under us (another daemon armed it): decide again on the next request.
			b.Action, b.Message = pxe.ActionWait, "the machine changed; asking again"
			return b, nil
		}
		if err != nil {
			return pxe.Boot{}, err
		}
		a.log().Info("pxe: install armed", "mac", mac, "member", b.Member, "generation", m.InstallGeneration)
		if a.OnArm != nil {
			a.OnArm(ctx, m)
		}
		// The first script of the generation: its client is the one later script requests must come from.
		if _, err := a.secondClient(ctx, mac, m.InstallGeneration, "script"); err != nil {
			return pxe.Boot{}, err
		}
		return a.install(ctx, m, b)
	case "installing":
		if !m.InstallArmed || !served {
			// Reported done (rebooting into the installed system), or installed over SSH: never wipe on our own.
			b.Action = pxe.ActionLocal
			return b, nil
		}
		if m.Locked {
			b.Action, b.Message = pxe.ActionWait, lockedMessage(mac)
			return b, nil
		}
		if fw == pxe.FirmwareIPXE {
			// A script request of the armed generation from another client than its first: two hosts boot
			// with this MAC. The machine is locked and the install stopped instead of one of them winning.
			second, err := a.secondClient(ctx, mac, m.InstallGeneration, "script")
			if err != nil {
				return pxe.Boot{}, err
			}
			if second {
				b.Action, b.Message = pxe.ActionWait, lockedMessage(mac)
				return b, nil
			}
		}
		return a.install(ctx, m, b)
	case "deprovisioning":
		// A wipe image is not there yet: leave the machine to its next boot device.
		b.Action = pxe.ActionIgnore
		return b, nil
	default: // joined, ready, rebuilding, and the failed states: the disk holds the system, or what is left.
		b.Action = pxe.ActionLocal
		return b, nil
	}
}

func (a *Adapter) install(ctx context.Context, m *store.Machine, b pxe.Boot) (pxe.Boot, error) {
	img, err := a.Images.Installer(ctx, m)
	if errors.Is(err, ErrBuilding) {
		b.Action, b.Message = pxe.ActionWait, "building the installer of "+b.Member
		return b, nil
	}
	if err != nil {
		return pxe.Boot{}, fmt.Errorf("installer of %s: %w", b.Member, err)
	}
	b.Action, b.Image, b.Generation = pxe.ActionInstall, img, m.InstallGeneration
	return b, nil
}

// waitingFor names what the member waits for before it may install: every member of an earlier join wave
// (first server, each other server alone, then the agents) must be ready; "" when it may go. It reads the
// states of those members only.
func (a *Adapter) waitingFor(ctx context.Context, c *inventory.Cluster, member string) (string, error) {
	before := c.Before(member)
	if len(before) == 0 {
		return "", nil
	}
	states, err := a.Store.MemberStates(ctx, c.Name, before)
	if err != nil {
		return "", err
	}
	var waiting []string
	for _, name := range before {
		if st, ok := states[name]; !ok {
			waiting = append(waiting, c.Name+"-"+name+" (no machine)")
		} else if !slices.Contains(readyStates, st) {
			waiting = append(waiting, c.Name+"-"+name+" ("+strings.ReplaceAll(st, "_", " ")+")")
		}
	}
	if len(waiting) == 0 {
		return "", nil
	}
	return "waiting for " + strings.Join(waiting, ", ") + " to be ready", nil
}

func (a *Adapter) discover() pxe.Boot {
	a.mu.RLock()
	img := a.DiscoveryImage
	if a.discovery != nil {
		img = *a.discovery
	}
	a.mu.RUnlock()
	if img == "" {
		return pxe.Boot{Action: pxe.ActionIgnore}
	}
	return pxe.Boot{Action: pxe.ActionDiscover, Image: img}
}

// ClaimToken implements pxe.TokenClaimer: a new token for the armed generation, once; only its hash is stored.
func (a *Adapter) ClaimToken(ctx context.Context, hw net.HardwareAddr, generation int64) (string, error) {
	tok, err := pxe.NewToken()
	if err != nil {
		return "", err
	}
	err = a.Store.ClaimInstallToken(ctx, actor, hw.String(), generation, sha256.Sum256([]byte(tok)))
	if errors.Is(err, store.ErrInstallToken) {
		return "", pxe.ErrToken
	}
	if err != nil {
		return "", err
	}
	return tok, nil
}

// Discovered implements pxe.Machines: a new machine is created as discovered, with the segment of its DHCP,
// unless MaxDiscovered wait there already or MaxDiscoveredPerSegment of its segment (a *pxe.FullError); a
// known one in state discovered gets its facts replaced when they changed (the same facts again write
// nothing, so a repeated report adds no event); any other state keeps its facts (a booted discovery image
// cannot rewrite what an installed machine is). The facts' "identity" becomes the machine's
// recorded identity; a report for a machine that is installing, or of other hardware for an assigned one,
// locks the machine (pxe.ErrLocked, conflict.go).
func (a *Adapter) Discovered(ctx context.Context, hw net.HardwareAddr, facts json.RawMessage) error {
	lim := a.discoverLimits(hw.String())
	// Identity and conflicts first (conflict.go): a report for a machine that is installing, or of other
	// hardware for an assigned one, locks it and is refused.
	id, err := identityOf(facts)
	if err != nil {
		a.log().Warn("pxe: discovery report with an identity not in its shape; not recorded", "mac", hw.String(), "err", err)
		id = nil
	}
	m, err := a.Store.Machine(ctx, hw.String())
	switch {
	case errors.Is(err, store.ErrNotFound):
		m = nil
	case err != nil:
		return err
	default:
		if err := a.discoveredConflict(ctx, m, id); err != nil {
			return err
		}
	}
	d, err := a.Store.DiscoverMachine(ctx, actor, hw.String(), facts, lim, "reported by the discovery image")
	if errors.Is(err, store.ErrDiscoveredFull) {
		return &pxe.FullError{Segment: lim.Segment, Err: err}
	}
	if err == nil && a.Logger != nil && d != store.DiscoveryCreated {
		a.Logger.Debug("pxe: discover report", "mac", hw.String(), "outcome", d)
	}
	if err != nil || id == nil || (d != store.DiscoveryCreated && d != store.DiscoveryUpdated) || (m != nil && m.Locked) {
		return err
	}
	// The facts' identity is the machine's, until a new discovery report while it is discovered and unlocked.
	raw, _ := json.Marshal(id)
	_, err = a.Store.RecordIdentity(ctx, hw.String(), raw, "discovery", true)
	return err
}

// DefaultMaxDiscovered is how many machines may wait in state discovered when Adapter.MaxDiscovered is 0.
const DefaultMaxDiscovered = 1024

// discoverLimits are the caps of a discover report of mac, with the segment its DHCP came from.
func (a *Adapter) discoverLimits(mac string) store.DiscoverLimits {
	all := a.MaxDiscovered
	if all == 0 {
		all = DefaultMaxDiscovered
	}
	per := a.MaxDiscoveredPerSegment
	if per == 0 {
		per = max(all/4, 1)
		if all < 0 {
			per = -1
		}
	}
	return store.DiscoverLimits{Max: max(all, 0), PerSegment: max(per, 0), Segment: a.segmentOf(mac)}
}

// Progress implements pxe.Machines: recorded as a progress event when the token is the armed generation's and
// the report passes checkReport (same client, same hardware; else the machine is locked and the report
// refused). A recorded done report (without an error) runs OnInstalled, or waits for approval (Approve).
func (a *Adapter) Progress(ctx context.Context, hw net.HardwareAddr, token string, p pxe.Progress) error {
	if err := p.Check(); err != nil {
		return err
	}
	mac := hw.String()
	hash := sha256.Sum256([]byte(token))
	if err := a.checkReport(ctx, mac, hash, p); err != nil {
		return err
	}
	var identity json.RawMessage
	if p.Identity != nil {
		identity, _ = json.Marshal(p.Identity)
	}
	err := a.Store.ReportInstall(ctx, "machine:"+mac, mac, hash,
		store.InstallReport{Generation: p.Generation, Phase: p.Phase, Done: p.Done, Error: p.Error, HostKey: p.HostKey, Identity: identity})
	if errors.Is(err, store.ErrInstallToken) {
		return pxe.ErrToken
	}
	if errors.Is(err, store.ErrLocked) {
		return refused
	}
	if err != nil {
		return err
	}
	if p.Done && p.Error == "" {
		a.installed(ctx, mac, p.HostKey)
	}
	return nil
}

// Leases implements pxe.Leases on the store's dhcp_leases table.
type Leases struct{ Store *store.Store }

var _ pxe.Leases = Leases{}

// Claim implements pxe.Leases.
func (l Leases) Claim(ctx context.Context, c pxe.Claim) (net.IP, error) {
	return l.Store.ClaimLease(ctx, store.LeaseClaim{MAC: c.MAC, Expires: c.Expires, Want: c.Want, Lo: c.Lo, Hi: c.Hi, Try: c.Try})
}

// Release implements pxe.Leases.
func (l Leases) Release(ctx context.Context, mac string, ip net.IP) error {
	return l.Store.ReleaseLease(ctx, mac, ip)
}
