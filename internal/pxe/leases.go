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

// Claim asks for a lease of MAC until Expires.
type Claim struct {
	MAC     string
	Expires time.Time
	// Want is the address MAC must get (a member's plan IP): taken from whoever holds it.
	Want net.IP
	// Otherwise: the address MAC already holds inside [Lo, Hi] is renewed, or, when it holds none there, Try
	// is leased to it if no unexpired lease of another client has it.
	Lo, Hi, Try net.IP
}

// Leases persists full-mode leases (in memory here; in PostgreSQL through the store in the daemon). Each call
// is one atomic step: several daemons may share the leases, and the store's uniqueness of MAC and address is
// what decides between them, not a lock of one process.
type Leases interface {
	// Claim leases an address as c says and returns it; nil when Try is held by another client (the caller
	// proposes another address).
	Claim(ctx context.Context, c Claim) (net.IP, error)
	// Release drops mac's lease of ip; a RELEASE naming an address mac does not hold changes nothing.
	Release(ctx context.Context, mac string, ip net.IP) error
	// Decline records mac's DHCPDECLINE of ip: mac's lease of ip goes and ip is not claimed by Try until
	// until. Only a lease mac holds is declined, and at most max addresses are held out at once; it reports
	// whether ip is held out now.
	Decline(ctx context.Context, mac string, ip net.IP, until time.Time, max int) (bool, error)
}

// MemLeases is an in-memory Leases.
type MemLeases struct {
	mu    sync.Mutex
	byMAC map[string]Lease
	byIP  map[string]string
	// declined holds addresses out of Try until a time (Decline).
	declined map[string]time.Time
}

func (m *MemLeases) initLocked() {
	if m.byMAC == nil {
		m.byMAC, m.byIP, m.declined = map[string]Lease{}, map[string]string{}, map[string]time.Time{}
	}
}

// ByMAC returns the MAC's lease, or nil.
func (m *MemLeases) ByMAC(_ context.Context, mac string) (*Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.initLocked()
	if l, ok := m.byMAC[mac]; ok {
		return &l, nil
	}
	return nil, nil
}

// ByIP returns the lease holding ip, or nil.
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

func (m *MemLeases) putLocked(l Lease) {
	if old, ok := m.byMAC[l.MAC]; ok {
		delete(m.byIP, old.IP.String())
	}
	if other, ok := m.byIP[l.IP.String()]; ok {
		delete(m.byMAC, other)
	}
	m.byMAC[l.MAC] = l
	m.byIP[l.IP.String()] = l.MAC
}

// Claim implements Leases.
func (m *MemLeases) Claim(_ context.Context, c Claim) (net.IP, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.initLocked()
	ip := c.Want
	if ip == nil {
		if l, ok := m.byMAC[c.MAC]; ok && l.IP.To4() != nil && inRange(l.IP, c.Lo, c.Hi) {
			ip = l.IP
		} else {
			if other, ok := m.byIP[c.Try.String()]; ok && other != c.MAC && !m.byMAC[other].Expires.Before(time.Now()) {
				return nil, nil
			}
			if time.Now().Before(m.declined[c.Try.String()]) {
				return nil, nil
			}
			ip = c.Try
		}
	}
	m.putLocked(Lease{MAC: c.MAC, IP: ip.To4(), Expires: c.Expires})
	return ip.To4(), nil
}

// Release implements Leases.
func (m *MemLeases) Release(_ context.Context, mac string, ip net.IP) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.initLocked()
	if old, ok := m.byMAC[mac]; ok && old.IP.Equal(ip) {
		delete(m.byIP, old.IP.String())
		delete(m.byMAC, mac)
	}
	return nil
}

// Decline implements Leases.
func (m *MemLeases) Decline(_ context.Context, mac string, ip net.IP, until time.Time, max int) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.initLocked()
	old, ok := m.byMAC[mac]
	if !ok || !old.IP.Equal(ip) {
		return false, nil
	}
	n := 0
	for a, t := range m.declined {
		switch {
		case time.Now().After(t):
			delete(m.declined, a)
		case a != ip.String():
			n++
		}
	}
	if n >= max {
		return false, nil
	}
	delete(m.byIP, old.IP.String())
	delete(m.byMAC, mac)
	m.declined[ip.String()] = until
	return true, nil
}

// Declined reports whether ip is held out after a Decline.
func (m *MemLeases) Declined(ip net.IP) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return time.Now().Before(m.declined[ip.String()])
}
