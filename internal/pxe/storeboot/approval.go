package storeboot

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"strings"

	"github.com/nix8s/nix8s/internal/store"
)

// Approvals holds a member's secrets until an operator confirms the host key its installer reported
// (*store.Store).
type Approvals interface {
	AwaitApproval(ctx context.Context, actor, mac, hostKey, fingerprint, reason string) (*store.Machine, error)
}

// NeedsApproval says whether a member of role waits for an operator's approval under setting
// (provisioning.pxe.approve, as the core's PXE view gives it): "servers" holds the servers' secrets (the
// cluster token lets its holder join as a server and read every secret of the cluster), "all" every
// member's, "none" (or "") nobody's.
func NeedsApproval(setting, role string) bool {
	switch setting {
	case "all":
		return true
	case "servers":
		return role != "agent"
	default:
		return false
	}
}

// Fingerprint is a public host key's (`<type> <base64>`) SHA256 fingerprint as ssh-keygen -lf prints it,
// "SHA256:" and the unpadded base64 of the key blob's SHA-256; "" when the key does not decode.
func Fingerprint(hostKey string) string {
	_, b64, _ := strings.Cut(strings.TrimSpace(hostKey), " ")
	b64, _, _ = strings.Cut(b64, " ")
	blob, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(blob) == 0 {
		return ""
	}
	sum := sha256.Sum256(blob)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// installed runs after a done report was recorded: the member's secrets go out now (OnInstalled), or, when
// Approve names the member, the machine waits with the reported key's fingerprint until an operator confirms
// it. A report without a key goes to OnInstalled either way: the delivery refuses to trust a key on first use
// and says what to do. When the member's role cannot be read, the machine waits (closed, not open).
func (a *Adapter) installed(ctx context.Context, mac, hostKey string) {
	if hostKey != "" && a.Approve != "" && a.Approve != "none" {
		role, member := "", ""
		m, err := a.Store.Machine(ctx, mac)
		if err == nil && m.Cluster != nil && m.Member != nil {
			member = *m.Cluster + "-" + *m.Member
			if a.Plans != nil {
				if c, perr := a.Plans.Cluster(ctx, *m.Cluster); perr == nil {
					if mp, ok := c.Members[*m.Member]; ok {
						role = mp.Role
					}
				} else {
					err = perr
				}
			}
		}
		if err != nil {
			a.log().Warn("could not read the installed machine's member; holding its secrets for approval", "mac", mac, "err", err)
		}
		if err != nil || role == "" || NeedsApproval(a.Approve, role) {
			a.await(ctx, mac, member, role, hostKey)
			return
		}
	}
	if a.OnInstalled != nil {
		a.OnInstalled(ctx, mac, hostKey)
	}
}

func (a *Adapter) await(ctx context.Context, mac, member, role, hostKey string) {
	fp := Fingerprint(hostKey)
	if a.Approvals == nil {
		a.log().Error("secrets need approval, but nothing holds approvals; nothing delivered", "mac", mac, "member", member)
		return
	}
	who := "a member"
	if role != "" {
		who = "a " + role
	}
	reason := "installer reported done; provisioning.pxe.approve is " + a.Approve + " and " + member + " is " + who +
		": its secrets wait until an operator confirms the host key's fingerprint (POST /v1/machines/" + mac + "/approve)"
	if _, err := a.Approvals.AwaitApproval(context.WithoutCancel(ctx), actor, mac, hostKey, fp, reason); err != nil {
		a.log().Error("could not record the pending approval; nothing delivered", "mac", mac, "member", member, "err", err)
		return
	}
	a.log().Warn("awaiting approval: secrets held until an operator confirms the host key on the machine's console",
		"mac", mac, "member", member, "fingerprint", fp, "approve", "POST /v1/machines/"+mac+"/approve")
}
