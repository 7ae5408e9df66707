package pxe

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"sync"

	"github.com/nix8s/nix8s/internal/store"
)

// Memory is an in-memory Booter and Machines: the unit tests' inventory, and the model the store adapter
// follows, in the database's machine states (store.State). An install is armed as a one-shot with a generation
// number and a one-time token (ArmInstall, as an operator's reinstall arms one); an installed machine boots its
// disk until it is armed again. Memory has no node watcher: a machine whose installer reported done stays
// installing (disarmed), as a stored one does until its node registers; MarkInstalled stands for the rest.
type Memory struct {
	// Discovery: unknown machines boot this image ID; "" means they are ignored.
	DiscoveryImage string

	mu       sync.Mutex
	machines map[string]*MemMachine
}

// MemMachine is one machine of a Memory.
type MemMachine struct {
	MAC   string
	Facts json.RawMessage
	// Member "<cluster>-<member>" and its installer image, set by Assign.
	Member, Image string
	Cmdline       []string
	IP            net.IP
	// State is discovered, installing (armed until the done report), install_failed (the installer reported
	// an error), or ready (MarkInstalled).
	State      store.State
	Generation int64
	tokenHash  [32]byte
	token      string // plaintext until the first install script claims it
	armed      bool
	// Phases lists the reported install phases, in order.
	Phases []string
	Failed string
	// HostKey is the host key of the done report.
	HostKey string
}

// Machine returns a copy of a machine, or nil.
func (m *Memory) Machine(mac string) *MemMachine {
	m.mu.Lock()
	defer m.mu.Unlock()
	x := m.machines[mac]
	if x == nil {
		return nil
	}
	c := *x
	c.Phases = append([]string(nil), x.Phases...)
	return &c
}

func (m *Memory) get(mac string) *MemMachine {
	if m.machines == nil {
		m.machines = map[string]*MemMachine{}
	}
	x := m.machines[mac]
	if x == nil {
		x = &MemMachine{MAC: mac, State: store.StateDiscovered, Facts: json.RawMessage("{}")}
		m.machines[mac] = x
	}
	return x
}

// Assign binds a machine to a member's installer image (creating the machine if needed).
func (m *Memory) Assign(mac, member, image string, ip net.IP, cmdline ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	x := m.get(mac)
	x.Member, x.Image, x.IP, x.Cmdline = member, image, ip, cmdline
}

// ArmInstall starts an install of an assigned machine: a new generation and a one-time token (returned once;
// only its hash is kept).
func (m *Memory) ArmInstall(mac string) (token string, generation int64, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	x := m.machines[mac]
	if x == nil || x.Member == "" {
		return "", 0, fmt.Errorf("machine %s: not assigned to a member", mac)
	}
	token, err = NewToken()
	if err != nil {
		return "", 0, err
	}
	x.Generation++
	x.tokenHash = sha256.Sum256([]byte(token))
	x.token = token
	x.armed = true
	x.State = store.StateInstalling
	x.Phases, x.Failed, x.HostKey = nil, "", ""
	return token, x.Generation, nil
}

// MarkInstalled sets a machine installed with a Ready node (ready, disarmed), as a test shortcut.
func (m *Memory) MarkInstalled(mac string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	x := m.get(mac)
	x.State, x.armed = store.StateReady, false
}

// Decide implements Booter, like storeboot's for the states Memory has; it never answers ActionArm: its
// installs are armed by ArmInstall only.
func (m *Memory) Decide(_ context.Context, mac net.HardwareAddr, _ Firmware) (Boot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	x := m.machines[mac.String()]
	switch {
	case x != nil && x.State == store.StateInstalling && x.armed:
		return Boot{Action: ActionInstall, Image: x.Image, Member: x.Member, IP: x.IP, Generation: x.Generation,
			Cmdline: x.Cmdline}, nil
	case x != nil && x.State != store.StateDiscovered:
		// Installed (done, or ready), or the install failed: never wipe again on its own; the operator re-arms.
		return Boot{Action: ActionLocal, Member: x.Member, IP: x.IP}, nil
	case m.DiscoveryImage != "":
		b := Boot{Action: ActionDiscover, Image: m.DiscoveryImage}
		if x != nil {
			b.IP = x.IP
		}
		return b, nil
	}
	return Boot{Action: ActionIgnore}, nil
}

// Arm implements Booter. Memory's decisions never call for it (Decide never answers ActionArm); it answers
// the script request's decision again.
func (m *Memory) Arm(ctx context.Context, mac net.HardwareAddr, _ Boot) (Boot, error) {
	return m.Decide(ctx, mac, FirmwareIPXE)
}

// ClaimToken implements TokenClaimer: the armed generation's token, once.
func (m *Memory) ClaimToken(_ context.Context, mac net.HardwareAddr, generation int64) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	x := m.machines[mac.String()]
	if x == nil || !x.armed || x.Generation != generation || x.token == "" {
		return "", ErrToken
	}
	t := x.token
	x.token = ""
	return t, nil
}

// Discovered implements Machines.
func (m *Memory) Discovered(_ context.Context, mac net.HardwareAddr, facts json.RawMessage) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	x := m.get(mac.String())
	x.Facts = append(json.RawMessage(nil), facts...)
	return nil
}

// Progress implements Machines.
func (m *Memory) Progress(_ context.Context, mac net.HardwareAddr, token string, p Progress) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	x := m.machines[mac.String()]
	if x == nil || !x.armed || x.State != store.StateInstalling || p.Generation != x.Generation {
		return ErrToken
	}
	h := sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(h[:], x.tokenHash[:]) != 1 {
		return ErrToken
	}
	x.Phases = append(x.Phases, p.Phase)
	switch {
	case p.Error != "":
		// installing's failed state (machine_states.failed_state; Memory has no database to read it from).
		x.armed, x.Failed, x.State = false, p.Error, store.StateInstallFailed
	case p.Done:
		// Installing, disarmed, until its node registers (which Memory does not watch).
		x.armed, x.HostKey = false, p.HostKey
	}
	return nil
}

// NewToken returns a random phone-home token.
func NewToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
