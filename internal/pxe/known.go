package pxe

import (
	"context"
	"log/slog"
	"net"
	"sync/atomic"
	"time"
)

// KnownMACs is the set of MACs whose DHCP packets are answered first (DHCP.Known): a snapshot in memory,
// reloaded in the background from Load when it is older than Every, so the packet path reads a map and
// never waits for the database.
type KnownMACs struct {
	// Load returns every MAC nix8s knows (the stored machines); nil: the set is only what Set put in.
	Load  func(ctx context.Context) ([]string, error)
	Every time.Duration // default 5 s
	// Logger gets failed reloads (the old set stays).
	Logger *slog.Logger

	set     atomic.Pointer[map[string]struct{}]
	loaded  atomic.Int64 // when the last reload began, unix nanoseconds
	loading atomic.Bool
}

// Set replaces the set by macs (any notation net.ParseMAC reads; others are left out).
func (k *KnownMACs) Set(macs []string) {
	set := make(map[string]struct{}, len(macs))
	for _, s := range macs {
		if hw, err := net.ParseMAC(s); err == nil {
			set[hw.String()] = struct{}{}
		}
	}
	k.set.Store(&set)
}

// Known reports whether mac is in the set, and starts a reload when the set is stale.
func (k *KnownMACs) Known(mac net.HardwareAddr) bool {
	k.maybeReload()
	set := k.set.Load()
	if set == nil {
		return false
	}
	_, ok := (*set)[mac.String()]
	return ok
}

func (k *KnownMACs) maybeReload() {
	every := k.Every
	if every <= 0 {
		every = 5 * time.Second
	}
	if k.Load == nil || time.Since(time.Unix(0, k.loaded.Load())) < every || !k.loading.CompareAndSwap(false, true) {
		return
	}
	k.loaded.Store(time.Now().UnixNano())
	go func() {
		defer k.loading.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		macs, err := k.Load(ctx)
		if err != nil {
			if k.Logger != nil {
				k.Logger.Warn("reloading the known MACs failed; keeping the old set", "err", err)
			}
			return
		}
		k.Set(macs)
	}()
}
