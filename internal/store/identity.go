package store

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
)

// Identity is a machine's recorded hardware identity (pxe.Identity as JSON; the store does not read it) and
// where it came from: "discovery", or "install generation N" when the first install report gave it.
type Identity struct {
	Identity   json.RawMessage `json:"identity"`
	Source     string          `json:"source"`
	RecordedAt time.Time       `json:"recordedAt"`
}

// MachineIdentity returns the recorded identity of mac, nil when none is recorded.
func (s *Store) MachineIdentity(ctx context.Context, mac string) (*Identity, error) {
	var id Identity
	var raw []byte
	err := s.pool.QueryRow(ctx, `SELECT identity, source, recorded_at FROM machine_identities WHERE mac = $1::macaddr`, mac).
		Scan(&raw, &id.Source, &id.RecordedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	id.Identity = raw
	return &id, nil
}

// RecordIdentity records identity as mac's, from source. With replace an identity already recorded is
// replaced (a new discovery report); without, the first one recorded stays and is returned (nil: identity
// was recorded now).
func (s *Store) RecordIdentity(ctx context.Context, mac string, identity json.RawMessage, source string, replace bool) (*Identity, error) {
	q := `INSERT INTO machine_identities (mac, identity, source) VALUES ($1::macaddr, $2, $3) ON CONFLICT (mac) DO NOTHING`
	if replace {
		q = `INSERT INTO machine_identities (mac, identity, source) VALUES ($1::macaddr, $2, $3)
			ON CONFLICT (mac) DO UPDATE SET identity = excluded.identity, source = excluded.source, recorded_at = now()`
	}
	tag, err := s.pool.Exec(ctx, q, mac, []byte(identity), source)
	if err != nil {
		return nil, mapErr(err)
	}
	if tag.RowsAffected() == 1 {
		return nil, nil
	}
	return s.MachineIdentity(ctx, mac)
}

// InstallClient records ip as the client of the installer conversation kind ("script" or "progress") of mac's
// install generation, unless one is recorded already; it returns the first client and whether it is ip's
// conversation that was recorded now.
func (s *Store) InstallClient(ctx context.Context, mac string, generation int64, kind string, ip net.IP) (first net.IP, now bool, err error) {
	var got string
	err = s.pool.QueryRow(ctx, `WITH ins AS (
			INSERT INTO install_clients (mac, generation, kind, ip) VALUES ($1::macaddr, $2, $3, $4::inet)
			ON CONFLICT DO NOTHING RETURNING ip
		)
		SELECT host(ip), true FROM ins
		UNION ALL SELECT host(ip), false FROM install_clients WHERE mac = $1::macaddr AND generation = $2 AND kind = $3
		LIMIT 1`, mac, generation, kind, ip.String()).Scan(&got, &now)
	if err != nil {
		return nil, false, mapErr(err)
	}
	return net.ParseIP(got), now, nil
}

// CheckInstallToken reports whether hash is the token of mac's armed install generation and the machine is
// not locked: what ReportInstall checks, without recording anything (ErrInstallToken when not).
func (s *Store) CheckInstallToken(ctx context.Context, mac string, generation int64, hash [32]byte) error {
	var have []byte
	var locked bool
	err := s.pool.QueryRow(ctx, `SELECT install_token_hash, locked FROM machines
		WHERE mac = $1::macaddr AND state = $3 AND install_armed AND install_generation = $2`, mac, generation, StateInstalling).Scan(&have, &locked)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && (len(have) != 32 || subtle.ConstantTimeCompare(have, hash[:]) != 1)) {
		return ErrInstallToken
	}
	if err != nil {
		return err
	}
	if locked {
		return ErrLocked
	}
	return nil
}

// ErrLocked: the machine is locked; reports and token claims of its install are refused.
var ErrLocked = errors.New("machine is locked")

// LockForConflict locks mac because of cause (identity, two-clients, discovery; the metric's label) with
// reason (the event's, naming what differed and both values), and stops an armed install (installing's failed
// state, install_failed: its token is gone with it). It returns false when the machine was locked already: then nothing changes and
// no event is added, so a client repeating itself does not grow the audit log.
func (s *Store) LockForConflict(ctx context.Context, actor, mac, cause, reason string) (bool, error) {
	var locked, stopped bool
	failedState, _ := s.StateSets().FailureOf(StateInstalling)
	err := s.tx(ctx, actor, reason, func(tx pgx.Tx) error {
		var was, armed bool
		err := tx.QueryRow(ctx, `SELECT locked, install_armed FROM machines WHERE mac = $1::macaddr FOR UPDATE`, mac).Scan(&was, &armed)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil || was {
			return err
		}
		locked, stopped = true, armed
		_, err = tx.Exec(ctx, `UPDATE machines SET locked = true,
				state = CASE WHEN install_armed THEN $2 ELSE state END
			WHERE mac = $1::macaddr`, mac, failedState)
		return err
	})
	if err != nil || !locked {
		return false, err
	}
	if stopped {
		s.transition(StateInstalling, failedState)
		s.failed(failedState, causeOf(actor))
	}
	if s.Hooks.Locked != nil {
		s.Hooks.Locked(cause)
	}
	return true, nil
}
