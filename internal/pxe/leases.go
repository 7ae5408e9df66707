package pxe

import (
	"context"
	"net"
	"sync"
	"time"
)

// Lease is one full-mode DHCP lease.
type Lease struct {
	MAC     string
	IP      net.IP
	Expires time.Time
}

// Leases persists full-mode leases (in memory here; in PostgreSQL through the store in the daemon).
type Leases interface {
	// ByMAC returns the MAC's lease, or nil.
	ByMAC(ctx context.Context, mac string) (*Lease, error)
	// ByIP returns the lease holding ip, or nil.
	ByIP(ctx context.Context, ip net.IP) (*Lease, error)
	// Put stores l, replacing the MAC's previous lease.
	Put(ctx context.Context, l Lease) error
	// Release drops the MAC's lease.
	Release(ctx context.Context, mac string) error
}

// MemLeases is an in-memory Leases.
type MemLeases struct {
	mu    sync.Mutex
	byMAC map[string]Lease
	byIP  map[string]string
}

func (m *MemLeases) initLocked() {
	if m.byMAC == nil {
		m.byMAC, m.byIP = map[string]Lease{}, map[string]string{}
	}
}

// ByMAC implements Leases.
func (m *MemLeases) ByMAC(_ context.Context, mac string) (*Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.initLocked()
	if l, ok := m.byMAC[mac]; ok {
		return &l, nil
	}
	return nil, nil
}

// ByIP implements Leases.
func (m *MemLeases) ByIP(_ context.Context, ip net.IP) (*Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.initLocked()
	if mac, ok := m.byIP[ip.String()]; ok {
		l := m.byMAC[mac]
		return &l, nil
	}
	return nil, nil
}

// Put implements Leases.
func (m *MemLeases) Put(_ context.Context, l Lease) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.initLocked()
	if old, ok := m.byMAC[l.MAC]; ok {
		delete(m.byIP, old.IP.String())
	}
	if other, ok := m.byIP[l.IP.String()]; ok {
		delete(m.byMAC, other)
	}
	m.byMAC[l.MAC] = l
	m.byIP[l.IP.String()] = l.MAC
	return nil
}

// Release implements Leases.
func (m *MemLeases) Release(_ context.Context, mac string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.initLocked()
	if old, ok := m.byMAC[mac]; ok {
		delete(m.byIP, old.IP.String())
		delete(m.byMAC, mac)
	}
	return nil
}
