// Package storeboot puts the PXE seams (pxe.Booter, pxe.Machines, pxe.TokenClaimer, pxe.Leases) on the
// daemon's store: what a machine boots follows its state in the database, discovery facts become machines,
// install progress goes into the machine's audit log, and full-mode leases live in PostgreSQL.
//
// The boot decision (Adapter.Decide, which changes nothing), by state:
//
//	unknown, discovered and unassigned   the discovery image (or nothing when discovery is off)
//	discovered and assigned              on its iPXE script request, once every member of earlier join waves
//	                                     counts as ready, armed by Adapter.Arm (-> installing, new generation);
//	                                     until then it waits
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
	MemberStates(ctx context.Context, cluster string, members []string) (map[string]store.State, error)
	// StateSets are the state sets the database defines (which states count as ready for the join order).
	StateSets() *store.StateSets
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
	// ArmOnBoot, when true, arms an assigned machine in state discovered when it asks for its iPXE script (in
	// its turn in the join order; Decide says ActionArm, Arm arms). When false, only POST
	// /v1/machines/{mac}/reinstall arms installs.
	ArmOnBoot bool
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

func (a *Adapter) log() *slog.Logger {
	if a.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Logger
}

func (a *Adapter) served(cluster string) bool {
	return a.Clusters == nil || slices.Contains(a.Clusters, cluster)
}

// Decide implements pxe.Booter: what the machine's state says it boots, changing nothing. An assigned machine
// in state discovered is ActionArm on its script request (FirmwareIPXE) once every member of the earlier join
// waves counts as ready, and so is an armed install's script request from a client (the generation is held to
// its first client): Arm carries both out. DHCP and the firmware are told only that the machine boots iPXE.
func (a *Adapter) Decide(ctx context.Context, hw net.HardwareAddr, fw pxe.Firmware) (pxe.Boot, error) {
	b, _, err := a.decide(ctx, hw, fw)
	return b, err
}

// decide is Decide, with the machine it decided on (nil when none is stored).
func (a *Adapter) decide(ctx context.Context, hw net.HardwareAddr, fw pxe.Firmware) (pxe.Boot, *store.Machine, error) {
	m, b, plan, err := a.machine(ctx, hw)
	if m == nil || err != nil {
		return b, m, err
	}
	b, err = a.decideFor(ctx, m, b, plan, fw)
	return b, m, err
}

// decideFor is the decision for machine m of b's member (plan: its cluster's, nil when m is unassigned).
func (a *Adapter) decideFor(ctx context.Context, m *store.Machine, b pxe.Boot, plan *inventory.Cluster, fw pxe.Firmware) (pxe.Boot, error) {
	served := plan != nil && a.served(*m.Cluster)
	switch m.State {
	case store.StateDiscovered:
		if !served || !a.ArmOnBoot {
			d := a.discover()
			d.IP, d.Member = b.IP, b.Member
			return d, nil
		}
		if m.Locked {
			// Locked refuses every destructive move: it waits until an operator unlocks it.
			b.Action, b.Message = pxe.ActionWait, "locked: unlock it (POST /v1/machines/"+m.MAC+"/unlock) to install it"
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
		b.Action = pxe.ActionArm
		return b, nil
	case store.StateInstalling:
		if !m.InstallArmed || !served {
			// Reported done (rebooting into the installed system), or installed over SSH: never wipe on our own.
			b.Action = pxe.ActionLocal
			return b, nil
		}
		if m.Locked {
			b.Action, b.Message = pxe.ActionWait, lockedMessage(m.MAC)
			return b, nil
		}
		if fw == pxe.FirmwareIPXE && pxe.ClientIP(ctx) != nil {
			// The script's client is held to the generation's first (Arm): two hosts boot with this MAC when
			// it is another.
			b.Action, b.Generation = pxe.ActionArm, m.InstallGeneration
			return b, nil
		}
		return a.install(ctx, m, b)
	case store.StateDeprovisioning:
		// A wipe image is not there yet: leave the machine to its next boot device.
		b.Action = pxe.ActionIgnore
		return b, nil
	default: // joined, ready, rebuilding, and the failed states: the disk holds the system, or what is left.
		b.Action = pxe.ActionLocal
		return b, nil
	}
}

// Arm implements pxe.Booter: it carries out Decide's ActionArm for a script request. An assigned machine in
// state discovered is armed (installing, a new generation, its one-time token for the first script) when
// Decide still says so; the request's client becomes the generation's first script client, and the machine
// is told to boot its installer. A script request of an armed generation from another client than its first
// locks the machine and stops the install (conflict.go) instead of one of two hosts with the MAC winning.
func (a *Adapter) Arm(ctx context.Context, hw net.HardwareAddr, d pxe.Boot) (pxe.Boot, error) {
	// Decide again on the machine as it is now: it may have changed since d (another daemon armed it, an
	// operator locked it, an earlier member left ready). ArmInstall moves it only at the version read here.
	b, m, err := a.decide(ctx, hw, pxe.FirmwareIPXE)
	if err != nil || b.Action != pxe.ActionArm {
		return b, err
	}
	switch m.State {
	case store.StateDiscovered:
		m, err = a.Store.ArmInstall(ctx, actor, m.MAC, m.Version, "network boot of an assigned machine, in its turn of the join order")
		if errors.Is(err, store.ErrConflict) {
			// Changed under us (another daemon armed it): decide again on the next request.
			b.Action, b.Message = pxe.ActionWait, "the machine changed; asking again"
			return b, nil
		}
		if err != nil {
			return pxe.Boot{}, err
		}
		a.log().Info("install armed", "mac", m.MAC, "member", b.Member, "generation", m.InstallGeneration)
		if a.OnArm != nil {
			a.OnArm(ctx, m)
		}
		// The first script of the generation: its client is the one later script requests must come from.
		if _, err := a.secondClient(ctx, m.MAC, m.InstallGeneration, "script"); err != nil {
			return pxe.Boot{}, err
		}
	case store.StateInstalling:
		second, err := a.secondClient(ctx, m.MAC, m.InstallGeneration, "script")
		if err != nil {
			return pxe.Boot{}, err
		}
		if second {
			b.Action, b.Message = pxe.ActionWait, lockedMessage(m.MAC)
			return b, nil
		}
	default:
		b.Action, b.Message = pxe.ActionWait, "the machine changed; asking again"
		return b, nil
	}
	return a.install(ctx, m, b)
}

// machine reads the machine of hw with the boot answer's member and plan address, and the plan of its cluster
// when it is assigned; no machine: the answer for an unknown machine (discovery or nothing).
func (a *Adapter) machine(ctx context.Context, hw net.HardwareAddr) (*store.Machine, pxe.Boot, *inventory.Cluster, error) {
	m, err := a.Store.Machine(ctx, hw.String())
	if errors.Is(err, store.ErrNotFound) {
		return nil, a.discover(), nil, nil
	}
	if err != nil {
		return nil, pxe.Boot{}, nil, err
	}
	var b pxe.Boot
	if m.Cluster == nil || m.Member == nil {
		return m, b, nil, nil
	}
	b.Member = *m.Cluster + "-" + *m.Member
	c, err := a.Plans.Cluster(ctx, *m.Cluster)
	if err != nil {
		return nil, pxe.Boot{}, nil, fmt.Errorf("the plan of %s: %w", *m.Cluster, err)
	}
	if mp, ok := c.Members[*m.Member]; ok {
		b.IP = net.ParseIP(mp.IP)
	}
	return m, b, c, nil
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
// (first server, each other server alone, then the agents) must be in a state that counts as ready
// (machine_states.counts_as_ready: ready, rebuilding, rebuild_failed); "" when it may go. It reads the states
// of those members only.
func (a *Adapter) waitingFor(ctx context.Context, c *inventory.Cluster, member string) (string, error) {
	before := c.Before(member)
	if len(before) == 0 {
		return "", nil
	}
	states, err := a.Store.MemberStates(ctx, c.Name, before)
	if err != nil {
		return "", err
	}
	sets := a.Store.StateSets()
	var waiting []string
	for _, name := range before {
		if st, ok := states[name]; !ok {
			waiting = append(waiting, c.Name+"-"+name+" (no machine)")
		} else if !sets.CountsAsReady(st) {
			waiting = append(waiting, c.Name+"-"+name+" ("+strings.ReplaceAll(string(st), "_", " ")+")")
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
		a.log().Warn("discovery report with an identity not in its shape; not recorded", "mac", hw.String(), "err", err)
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
		a.Logger.Debug("discover report", "mac", hw.String(), "outcome", d)
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
