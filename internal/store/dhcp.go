package store

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
)

// DeclineLease records mac's DHCPDECLINE of ip (the client found another host answering ARP for it): mac's
// lease of ip goes, and ip is quarantined until until, so that claims in the range skip it (claimInRange). Only
// a lease the client holds can be declined, and at most maxQuarantined (> 0) addresses are quarantined at once,
// so that declines from made-up MACs cannot take the range out of service; it reports whether ip is
// quarantined now.
func (s *Store) DeclineLease(ctx context.Context, mac string, ip net.IP, until time.Time, maxQuarantined int) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `WITH gone AS (
			DELETE FROM dhcp_leases WHERE mac = $1::macaddr AND ip = $2::inet
				AND (SELECT count(*) FROM dhcp_declined WHERE until > now() AND ip <> $2::inet) < $4
			RETURNING ip
		), q AS (
			INSERT INTO dhcp_declined (ip, mac, until) SELECT ip, $1::macaddr, $3 FROM gone
			ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac, until = excluded.until, at = now()
			RETURNING true
		)
		SELECT EXISTS (SELECT 1 FROM q)`, mac, ip.String(), until, maxQuarantined).Scan(&ok)
	return ok, err
}

// Quarantined returns the addresses quarantined after a DHCPDECLINE, until when.
func (s *Store) Quarantined(ctx context.Context) (map[string]time.Time, error) {
	rows, err := s.pool.Query(ctx, `SELECT host(ip), until FROM dhcp_declined WHERE until > now()`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]time.Time{}
	for rows.Next() {
		var ip string
		var until time.Time
		if err := rows.Scan(&ip, &until); err != nil {
			return nil, err
		}
		out[ip] = until
	}
	return out, rows.Err()
}

// RecordConflict adds a conflict event to mac's audit log: something the DHCP server noticed (a declined
// address, a second client with this MAC) that does not lock the machine. ErrNotFound when there is no such
// machine.
func (s *Store) RecordConflict(ctx context.Context, actor, mac, reason string, details map[string]any) error {
	d, err := json.Marshal(details)
	if err != nil {
		return err
	}
	return s.tx(ctx, actor, reason, func(tx pgx.Tx) error {
		var state string
		err := tx.QueryRow(ctx, `SELECT state FROM machines WHERE mac = $1::macaddr`, mac).Scan(&state)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO machine_events (mac, actor, kind, old_state, new_state, reason, details)
			VALUES ($1::macaddr, $2, 'conflict', $3, $3, $4, $5)`, mac, actor, state, reason, d)
		return err
	})
}
