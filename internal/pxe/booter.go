// Package pxe serves network boot for nix8sd: DHCP (proxy or full mode), TFTP for the iPXE binaries, and HTTP
// for iPXE scripts matched by MAC, netboot images and the machine-facing phone-home endpoints. What a machine
// boots is decided server-side by a Booter; what a machine may report goes through Machines. Both are small
// seams so this package does not talk to the database (memory.go implements both in memory, with the store's
// state names; internal/pxe/storeboot on the daemon's store).
package pxe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"

	"github.com/nix8s/nix8s/internal/remote"
)

// Firmware is the kind of client asking for a boot file; it picks the file DHCP names.
type Firmware string

const (
	// FirmwareBIOS is legacy PXE: it gets undionly.kpxe over TFTP.
	FirmwareBIOS Firmware = "bios"
	// FirmwareUEFI is UEFI x86-64 PXE: it gets ipxe.efi over TFTP.
	FirmwareUEFI Firmware = "uefi"
	// FirmwareUEFIHTTP is UEFI HTTP boot (vendor class "HTTPClient"): it gets ipxe.efi by an HTTP URL.
	FirmwareUEFIHTTP Firmware = "uefi-http"
	// FirmwareIPXE is iPXE itself (user class "iPXE" or option 175) asking for its boot script: the one request
	// whose decision may call for Booter.Arm (ActionArm). It gets the script URL from DHCP.
	FirmwareIPXE Firmware = "ipxe"
	// FirmwareIPXEDHCP is iPXE's DHCP request: the Booter is only asked whether and what to answer, like for
	// any other firmware's DHCP, and must change nothing (a DHCP packet is anyone's to send).
	FirmwareIPXEDHCP Firmware = "ipxe-dhcp"
)

// Action is what a machine is told to do when it boots from the network.
type Action string

const (
	// ActionInstall boots the installer of the machine's member.
	ActionInstall Action = "install"
	// ActionDiscover boots the discovery image, which reports the machine's facts.
	ActionDiscover Action = "discover"
	// ActionLocal boots the local disk (an installed machine is never reinstalled until an operator asks).
	ActionLocal Action = "local"
	// ActionIgnore answers nothing useful: the firmware falls through to its next boot device.
	ActionIgnore Action = "ignore"
	// ActionWait keeps the machine in iPXE, asking again every WaitInterval: its install waits for its turn in
	// the join order or for its installer image to be built.
	ActionWait Action = "wait"
	// ActionArm says the machine's install goes ahead on this script request, which only Booter.Arm carries
	// out: it arms the install (a new generation) when none is armed, and holds an armed generation to the
	// first client that asked for its script. Only a decision for FirmwareIPXE is this; it is never served as
	// it is (the script handler serves Arm's answer).
	ActionArm Action = "arm"
)

// Boot is a Booter's decision for one machine.
type Boot struct {
	Action Action
	// Image names the netboot image (Install, Discover): an ImageSource ID, served under /boot/images/<ID>/.
	Image string
	// Cmdline holds extra kernel arguments, each "key" or "key=value" (validated before use).
	Cmdline []string
	// Generation is the armed install's generation (Install).
	Generation int64
	// Member is "<cluster>-<member>" of an install, for logs and metrics.
	Member string
	// IP is the member's plan address, handed out by full-mode DHCP (nil: from the range).
	IP net.IP
	// Message says why a machine waits (Wait), printed on its console; plain words only (ValidMessage).
	Message string
}

// Booter decides what a machine boots, and starts the installs its decisions call for. It sees only what DHCP
// and HTTP can know about a machine: its MAC and firmware (and HTTP's client address, ClientIP). It must not
// return secrets: boot answers are given to anyone who claims a MAC.
type Booter interface {
	// Decide says what mac boots now and changes nothing: DHCP asks it for every packet (a DHCP packet is
	// anyone's to send), the script handler before anything else. A decision for FirmwareIPXE may be
	// ActionArm; for any other firmware it never is.
	Decide(ctx context.Context, mac net.HardwareAddr, fw Firmware) (Boot, error)
	// Arm carries out decision d (ActionArm, Decide's answer to mac's script request): the explicit move that
	// arms an install, whose one-time token the boot script then claims (TokenClaimer). It decides again
	// against the machine as it is now and returns what to serve (a wait when the machine changed meanwhile);
	// never ActionArm.
	Arm(ctx context.Context, mac net.HardwareAddr, d Boot) (Boot, error)
}

// ScriptBoot is what the script handler serves mac: Booter.Decide for FirmwareIPXE, carried out by
// Booter.Arm when the decision is ActionArm.
func ScriptBoot(ctx context.Context, b Booter, mac net.HardwareAddr) (Boot, error) {
	d, err := b.Decide(ctx, mac, FirmwareIPXE)
	if err != nil || d.Action != ActionArm {
		return d, err
	}
	d, err = b.Arm(ctx, mac, d)
	if err == nil && d.Action == ActionArm {
		return Boot{}, errors.New("the booter's Arm answered arm again")
	}
	return d, err
}

// TokenClaimer hands the phone-home token of an armed install to the installer's boot script, once per
// generation: a second network boot of the same generation gets the installer without a token (it cannot
// report, and the install runs into its deadline), so a MAC spoofer who fetches the script after the real
// machine gets nothing, and one who fetches it first makes the real install fail visibly instead of silently.
// The token is no secret of the cluster: it can only report progress for this MAC and this generation.
type TokenClaimer interface {
	ClaimToken(ctx context.Context, mac net.HardwareAddr, generation int64) (string, error)
}

// Progress is one phone-home report of an install.
type Progress struct {
	// Generation is the install generation the token was minted for.
	Generation int64 `json:"generation"`
	// Phase names the installer's phase (disko, install, reboot, ...); free text, length-limited.
	Phase string `json:"phase"`
	// Done reports the install finished: the token is used up and the install disarmed.
	Done bool `json:"done"`
	// Error, when set, reports the install failed.
	Error string `json:"error,omitempty"`
	// HostKey is the installed system's public SSH host key, `<type> <base64>` (remote.CheckHostKey), which
	// the installer generated; only in the done report. The daemon pins it for its first ssh connection to
	// the installed machine (delivering the token files), so nothing is trusted on first use.
	HostKey string `json:"hostKey,omitempty"`
	// Identity is the hardware the installer runs on, in the first report of a generation and in the done
	// report (optional in the others). It must match what the machine's discovery or first install report
	// recorded, else the machine is locked and the report refused (ErrLocked).
	Identity *Identity `json:"identity,omitempty"`
}

// Identity is who a machine is beyond its MAC, as the netboot programs read it (modules/nixos/netboot-prelude.sh
// `identity`): the DMI system UUID and serial, the serials of its whole disks, the permanent MACs of its
// physical NICs. Lists are sorted and without duplicates, so the same hardware always gives the same value.
type Identity struct {
	SystemUUID   string   `json:"systemUUID"`
	SystemSerial string   `json:"systemSerial"`
	DiskSerials  []string `json:"diskSerials"`
	NICMACs      []string `json:"nicMACs"`
}

// Check refuses an identity that is too large or not in its stable shape.
func (id Identity) Check() error {
	switch {
	case len(id.SystemUUID) > 64 || len(id.SystemSerial) > 128:
		return errors.New("identity: systemUUID must be at most 64 bytes and systemSerial at most 128")
	case len(id.DiskSerials) > 64 || len(id.NICMACs) > 64:
		return errors.New("identity: at most 64 disk serials and 64 NIC MACs")
	case !slices.IsSorted(id.DiskSerials) || !slices.IsSorted(id.NICMACs) ||
		len(slices.Compact(slices.Clone(id.DiskSerials))) != len(id.DiskSerials) ||
		len(slices.Compact(slices.Clone(id.NICMACs))) != len(id.NICMACs):
		return errors.New("identity: diskSerials and nicMACs must be sorted and without duplicates")
	}
	for _, s := range id.DiskSerials {
		if s == "" || len(s) > 128 {
			return fmt.Errorf("identity: disk serial %q must be 1 to 128 bytes", truncate(s, 40))
		}
	}
	for _, m := range id.NICMACs {
		if hw, err := ParseMAC(m); err != nil || hw.String() != m {
			return fmt.Errorf("identity: NIC MAC %q is not a lower-case aa:bb:cc:dd:ee:ff", truncate(m, 40))
		}
	}
	return nil
}

// Differs names the first fact in which id and other differ, with both values ("" when they are the same).
func (id Identity) Differs(other Identity) (fact, this, that string) {
	list := func(l []string) string { return "[" + strings.Join(l, " ") + "]" }
	switch {
	case id.SystemUUID != other.SystemUUID:
		return "systemUUID", id.SystemUUID, other.SystemUUID
	case id.SystemSerial != other.SystemSerial:
		return "systemSerial", id.SystemSerial, other.SystemSerial
	case !slices.Equal(id.DiskSerials, other.DiskSerials):
		return "diskSerials", list(id.DiskSerials), list(other.DiskSerials)
	case !slices.Equal(id.NICMACs, other.NICMACs):
		return "nicMACs", list(id.NICMACs), list(other.NICMACs)
	}
	return "", "", ""
}

type clientKey struct{}

// WithClient returns ctx carrying the address of the client a request came from (HTTP.ServeHTTP sets it), so
// a Booter or Machines can tell two clients claiming the same MAC apart.
func WithClient(ctx context.Context, ip net.IP) context.Context {
	return context.WithValue(ctx, clientKey{}, ip)
}

// ClientIP is the client address WithClient put into ctx, nil when none (DHCP, or a caller outside HTTP).
func ClientIP(ctx context.Context) net.IP {
	ip, _ := ctx.Value(clientKey{}).(net.IP)
	return ip
}

// Check refuses a report whose fields are too long or do not fit together: a host key only with done,
// and only a well-formed one; an identity only in its stable shape (Identity.Check).
func (p Progress) Check() error {
	switch {
	case len(p.Phase) > 64:
		return errors.New("phase must be at most 64 bytes")
	case len(p.Error) > 4096:
		return errors.New("error must be at most 4096 bytes")
	case p.Identity != nil:
		if err := p.Identity.Check(); err != nil {
			return err
		}
	}
	switch {
	case p.HostKey == "":
		return nil
	case !p.Done:
		return errors.New("hostKey is accepted only in the done report")
	}
	if err := remote.CheckHostKey(p.HostKey); err != nil {
		return fmt.Errorf("hostKey: %w", err)
	}
	return nil
}

// Machines records what booting machines report about themselves.
type Machines interface {
	// Discovered records a machine's hardware facts (a JSON object) reported by the discovery image, and
	// their "identity" (Identity) when they have one; ErrLocked for a MAC whose install is under way.
	Discovered(ctx context.Context, mac net.HardwareAddr, facts json.RawMessage) error
	// Progress checks token against the machine's armed install and records p; ErrToken when the token is
	// wrong, used, or the machine is not installing; ErrLocked when the report conflicts with the machine's
	// recorded identity or another client of the same install (the machine is then locked).
	Progress(ctx context.Context, mac net.HardwareAddr, token string, p Progress) error
}

// Errors the HTTP layer maps to status codes.
var (
	// ErrToken: the phone-home token is wrong, used up, or the machine is not installing (403).
	ErrToken = errors.New("token not valid for this machine")
	// ErrLocked: the report conflicts with what is known of the machine (another hardware identity, a second
	// client of one install) or the machine is locked; it is refused and the machine locked (403).
	ErrLocked = errors.New("machine locked")
	// ErrNotFound: no such machine or image (404).
	ErrNotFound = errors.New("not found")
)

// ParseMAC accepts a 6-byte MAC in any form net.ParseMAC takes and nothing else.
func ParseMAC(s string) (net.HardwareAddr, error) {
	if len(s) > 17 {
		return nil, fmt.Errorf("%q is not a MAC address like aa:bb:cc:dd:ee:ff", truncate(s, 40))
	}
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return nil, fmt.Errorf("%q is not a MAC address like aa:bb:cc:dd:ee:ff", s)
	}
	return hw, nil
}

var (
	// Image IDs are store path hashes or simple names: nothing that could leave a URL path segment.
	imageIDRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,99}$`)
	// Kernel arguments: no spaces, quotes, semicolons, ${} or newlines that iPXE or the kernel would interpret.
	cmdlineArgRe = regexp.MustCompile(`^[a-zA-Z0-9_.-]+(=[a-zA-Z0-9_.,:/@+-]*)?$`)
	// Console messages: words and punctuation that iPXE prints as they are (no $, quotes, ;, # or newlines).
	messageRe = regexp.MustCompile(`^[a-zA-Z0-9 _.,:()/+-]{0,200}$`)
)

// ValidMessage reports whether s may be printed by an iPXE script as it is.
func ValidMessage(s string) bool { return messageRe.MatchString(s) }

// ValidImageID reports whether id may be used as an image ID.
func ValidImageID(id string) bool { return imageIDRe.MatchString(id) && !strings.Contains(id, "..") }

// ValidateCmdline checks every kernel argument of a Boot.
func ValidateCmdline(args []string) error {
	var errs []error
	for i, a := range args {
		if !cmdlineArgRe.MatchString(a) {
			errs = append(errs, fmt.Errorf("cmdline[%d]: %q is not a plain kernel argument (letters, digits, _.- and =value)", i, truncate(a, 60)))
		}
	}
	return errors.Join(errs...)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
