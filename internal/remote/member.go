package remote

import "github.com/nix8s/nix8s/internal/core"

// HostOf is how a planned member is reached: the SSH endpoint the plan resolved for it (its address and
// provisioning.nixos-anywhere.ssh), named by its host name in messages.
func HostOf(m core.Member) Host {
	h := Host{Name: m.HostName, Addr: m.SSH.Host, User: m.SSH.User, Port: m.SSH.Port}
	if m.SSH.KeyFile != nil {
		h.KeyFile = *m.SSH.KeyFile
	}
	return h
}
