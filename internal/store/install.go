package store

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrInstallToken: a phone-home report or token claim that does not match the machine's armed install (wrong
// or used token, other generation, not installing, not armed).
var ErrInstallToken = errors.New("not the armed install of this machine")

// ArmInstall starts a network install: the machine moves to installing with a new install generation, armed.
// version, when non-zero, must be the machine's current version. The database refuses the move where its
// state machine does (unassigned, locked, or a state with no move into installing).
func (s *Store) ArmInstall(ctx context.Context, actor, mac string, version int64, reason string) (*Machine, error) {
	var m *Machine
	var from State
	err := s.tx(ctx, actor, reason, func(tx pgx.Tx) error {
		var err error
		if from, _, err = lockMachine(ctx, tx, mac, version); err != nil {
			return err
		}
		if from == StateInstalling {
			return &ConflictError{Msg: fmt.Sprintf("machine %s is already installing; wait for it to finish or fail (or pass its deadline) before arming another install", mac)}
		}
		m, err = scanMachine(tx.QueryRow(ctx, `UPDATE machines SET state = $2, install_armed = true,
				install_generation = install_generation + 1, install_token_hash = NULL
			WHERE mac = $1::macaddr RETURNING `+machineCols, mac, StateInstalling))
		return err
	})
	if err != nil {
		return nil, err
	}
	s.transition(from, StateInstalling)
	return m, nil
}

// ClaimInstallToken records hash as the token of the armed install generation, once: the first boot script
// of a generation carries the token, later ones do not, nor any while the machine is locked (ErrInstallToken).
func (s *Store) ClaimInstallToken(ctx context.Context, actor, mac string, generation int64, hash [32]byte) error {
	return s.tx(ctx, actor, "install token handed to the installer's boot script", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE machines SET install_token_hash = $3
			WHERE mac = $1::macaddr AND state = $4 AND install_armed AND install_generation = $2
			  AND install_token_hash IS NULL AND NOT locked`, mac, generation, hash[:], StateInstalling)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return ErrInstallToken
		}
		return nil
	})
}

// InstallReport is one phone-home report of a network install.
type InstallReport struct {
	Generation int64  `json:"generation"`
	Phase      string `json:"phase"`
	Done       bool   `json:"done,omitempty"`
	Error      string `json:"error,omitempty"`
	// HostKey is the installed system's public SSH host key of the done report (checked by the caller). It is
	// public, so it is kept in the progress event's details, where the secrets delivery finds it again.
	HostKey string `json:"hostKey,omitempty"`
	// Identity is the hardware identity the report carried (pxe.Identity as JSON), checked by the caller
	// against the recorded one; kept in the event's details.
	Identity json.RawMessage `json:"identity,omitempty"`
}

// ReportInstall records a report of the armed install whose token hashes to hash, as a progress event
// (ErrLocked, nothing recorded, while the machine is locked). Done
// or Error use the token up (the install is disarmed); Error also moves the machine to installing's failed
// state (install_failed). The
// machine stays installing after Done until its node registers in the cluster (joined).
func (s *Store) ReportInstall(ctx context.Context, actor, mac string, hash [32]byte, r InstallReport) error {
	reason := "installer: " + r.Phase
	if r.Error != "" {
		reason = "installer failed in " + r.Phase + ": " + r.Error
	}
	var failed bool
	failedState, _ := s.StateSets().FailureOf(StateInstalling)
	err := s.tx(ctx, actor, reason, func(tx pgx.Tx) error {
		var state State
		var armed bool
		var gen int64
		var have []byte
		var locked bool
		err := tx.QueryRow(ctx, `SELECT state, install_armed, install_generation, install_token_hash, locked FROM machines
			WHERE mac = $1::macaddr FOR UPDATE`, mac).Scan(&state, &armed, &gen, &have, &locked)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrInstallToken
		}
		if err != nil {
			return err
		}
		if state != StateInstalling || !armed || gen != r.Generation || len(have) != 32 || subtle.ConstantTimeCompare(have, hash[:]) != 1 {
			return ErrInstallToken
		}
		if locked {
			// Locked for a conflict (LockForConflict) or by an operator: nothing of this install is taken.
			return ErrLocked
		}
		details, _ := json.Marshal(r)
		if _, err := tx.Exec(ctx, `INSERT INTO machine_events (mac, actor, kind, old_state, new_state, reason, details)
			VALUES ($1::macaddr, $2, 'progress', $3, $3, $4, $5)`, mac, actor, state, reason, details); err != nil {
			return err
		}
		switch {
		case r.Error != "":
			failed = true
			_, err = tx.Exec(ctx, `UPDATE machines SET state = $2 WHERE mac = $1::macaddr`, mac, failedState)
		case r.Done:
			_, err = tx.Exec(ctx, `UPDATE machines SET install_armed = false, install_token_hash = NULL WHERE mac = $1::macaddr`, mac)
		}
		return err
	})
	if err == nil && failed {
		s.transition(StateInstalling, failedState)
		s.failed(failedState, "installer")
	}
	return err
}

// Lease is one full-mode DHCP lease.
type Lease struct {
	MAC     string
	IP      net.IP
	Expires time.Time
}

func scanLease(r pgx.Row) (*Lease, error) {
	var l Lease
	var ip string
	err := r.Scan(&l.MAC, &ip, &l.Expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	l.IP = net.ParseIP(ip)
	return &l, nil
}

// LeaseByMAC returns the MAC's lease, or nil.
func (s *Store) LeaseByMAC(ctx context.Context, mac string) (*Lease, error) {
	return scanLease(s.pool.QueryRow(ctx, `SELECT mac::text, host(ip), expires FROM dhcp_leases WHERE mac = $1::macaddr`, mac))
}

// LeaseByIP returns the lease holding ip, or nil.
func (s *Store) LeaseByIP(ctx context.Context, ip net.IP) (*Lease, error) {
	return scanLease(s.pool.QueryRow(ctx, `SELECT mac::text, host(ip), expires FROM dhcp_leases WHERE ip = $1::inet`, ip.String()))
}

// LeaseClaim asks for a lease of MAC until Expires: Want (a member's plan IP) taken from whoever holds it; or
// else the MAC's own lease inside [Lo, Hi] renewed, or Try when no unexpired lease of another MAC holds it.
type LeaseClaim struct {
	MAC         string
	Expires     time.Time
	Want        net.IP
	Lo, Hi, Try net.IP
}

// claimWanted takes a member's plan IP from whoever holds it and gives it to the MAC: two statements sent as one
// batch, which PostgreSQL runs as one implicit transaction (one round trip; a CTE deleting and an INSERT adding
// the same unique address in one statement would conflict).
const (
	claimWantedFree = `DELETE FROM dhcp_leases WHERE (ip = $2::inet AND mac <> $1::macaddr) OR (mac = $1::macaddr AND ip <> $2::inet)`
	claimWanted     = `INSERT INTO dhcp_leases (mac, ip, expires) VALUES ($1::macaddr, $2::inet, $3)
	ON CONFLICT (mac) DO UPDATE SET expires = excluded.expires, updated_at = now()
	RETURNING host(ip)`
)

// claimInRange renews the MAC's lease inside the range, or else leases it Try unless another MAC's unexpired
// lease has it or it is quarantined after a DHCPDECLINE (dhcp_declined, DeclineLease).
const claimInRange = `WITH renew AS (
		UPDATE dhcp_leases SET expires = $3, updated_at = now()
		WHERE mac = $1::macaddr AND ip >= $4::inet AND ip <= $5::inet RETURNING ip
	), fresh AS (
		INSERT INTO dhcp_leases AS l (mac, ip, expires)
		SELECT $1::macaddr, $2::inet, $3 WHERE NOT EXISTS (SELECT 1 FROM renew)
			AND NOT EXISTS (SELECT 1 FROM dhcp_declined WHERE ip = $2::inet AND until > now())
		ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac, expires = excluded.expires, updated_at = now()
			WHERE l.expires < now() OR l.mac = excluded.mac
		RETURNING ip
	)
	SELECT host(ip) FROM renew UNION ALL SELECT host(ip) FROM fresh`

// ClaimLease leases an address as c says in one statement and returns it; nil when c.Try is another MAC's. The
// table's uniqueness of MAC and address arbitrates between concurrent claims, of this daemon or another.
func (s *Store) ClaimLease(ctx context.Context, c LeaseClaim) (net.IP, error) {
	for attempt := 0; ; attempt++ {
		var ip string
		var err error
		if c.Want != nil {
			b := &pgx.Batch{}
			b.Queue(claimWantedFree, c.MAC, c.Want.String())
			b.Queue(claimWanted, c.MAC, c.Want.String(), c.Expires).QueryRow(func(r pgx.Row) error { return r.Scan(&ip) })
			err = s.pool.SendBatch(ctx, b).Close()
		} else {
			err = s.pool.QueryRow(ctx, claimInRange, c.MAC, c.Try.String(), c.Expires, c.Lo.String(), c.Hi.String()).Scan(&ip)
		}
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, nil
		}
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" && attempt < 2 {
			// Another claim of this MAC got in first (a retransmitted request): the next try renews its lease.
			// The second time, the MAC holds an address outside the range (it changed): that lease goes.
			if attempt == 1 {
				if _, err := s.pool.Exec(ctx, `DELETE FROM dhcp_leases WHERE mac = $1::macaddr`, c.MAC); err != nil {
					return nil, err
				}
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		return net.ParseIP(ip).To4(), nil
	}
}

// ReleaseLease drops the MAC's lease of ip; nothing when the MAC does not hold ip.
func (s *Store) ReleaseLease(ctx context.Context, mac string, ip net.IP) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM dhcp_leases WHERE mac = $1::macaddr AND ip = $2::inet`, mac, ip.String())
	return err
}
