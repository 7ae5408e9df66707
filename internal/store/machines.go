package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
)

// Machine is a physical box known by its MAC.
type Machine struct {
	MAC            string          `json:"mac"`
	Facts          json.RawMessage `json:"facts"`
	Cluster        *string         `json:"cluster"`
	Member         *string         `json:"member"`
	State          State           `json:"state"`
	Locked         bool            `json:"locked"`
	Version        int64           `json:"version"`
	StateChangedAt time.Time       `json:"stateChangedAt"`
	StateDeadline  *time.Time      `json:"stateDeadline"`
	// InstallGeneration counts the network installs armed for this machine; InstallArmed says one is armed
	// now (the machine is installing and boots its installer from the network).
	InstallGeneration int64 `json:"installGeneration"`
	InstallArmed      bool  `json:"installArmed"`
	// InstallTokenClaimed: the armed install's one-time token was handed to a boot script.
	InstallTokenClaimed bool `json:"installTokenClaimed"`
	// AwaitingApproval is set while the installer reported done and the member's secrets wait for an
	// operator to confirm the reported host key (POST /v1/machines/{mac}/approve); nil otherwise.
	AwaitingApproval *Approval `json:"awaitingApproval"`
	// Segment is the network segment the machine was discovered on: the DHCP relay's address (giaddr), or the
	// DHCP server interface's subnet for a directly attached client; nil when not known.
	Segment   *string   `json:"segment"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// Event is one entry of a machine's append-only audit log.
type Event struct {
	ID       int64           `json:"id"`
	MAC      string          `json:"mac"`
	At       time.Time       `json:"at"`
	Actor    string          `json:"actor"`
	Kind     string          `json:"kind"`
	OldState *State          `json:"oldState"`
	NewState *State          `json:"newState"`
	Reason   string          `json:"reason"`
	Details  json.RawMessage `json:"details"`
}

// NormalizeMAC parses a MAC address (any form net.ParseMAC takes) into lower-case colon form.
func NormalizeMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", &InvalidError{Path: "mac", Msg: fmt.Sprintf("%q is not a MAC address like aa:bb:cc:dd:ee:ff", s)}
	}
	return hw.String(), nil
}

const machineCols = `mac::text, facts, cluster, member, state, locked, version, state_changed_at, state_deadline, created_at, updated_at,
	install_generation, install_armed, install_token_hash IS NOT NULL, approval_host_key, approval_fingerprint, approval_since, segment`

func scanMachine(r pgx.Row) (*Machine, error) {
	var m Machine
	var facts []byte
	var key, fp *string
	var since *time.Time
	if err := r.Scan(&m.MAC, &facts, &m.Cluster, &m.Member, &m.State, &m.Locked, &m.Version, &m.StateChangedAt,
		&m.StateDeadline, &m.CreatedAt, &m.UpdatedAt, &m.InstallGeneration, &m.InstallArmed, &m.InstallTokenClaimed,
		&key, &fp, &since, &m.Segment); err != nil {
		return nil, err
	}
	m.Facts = facts
	if key != nil && fp != nil && since != nil {
		m.AwaitingApproval = &Approval{HostKey: *key, Fingerprint: *fp, Since: *since}
	}
	return &m, nil
}

// MachineFilter selects machines; zero fields select everything.
type MachineFilter struct {
	State      State
	Cluster    string
	Unassigned bool
	After      string // MAC; pagination cursor
	Limit      int
}

// Machines lists machines ordered by MAC.
func (s *Store) Machines(ctx context.Context, f MachineFilter) ([]*Machine, error) {
	q := `SELECT ` + machineCols + ` FROM machines WHERE ($1 = '' OR state = $1) AND ($2 = '' OR cluster = $2)
		AND (NOT $3 OR member IS NULL) AND ($4 = '' OR mac > $4::macaddr) ORDER BY mac LIMIT $5`
	rows, err := s.pool.Query(ctx, q, f.State, f.Cluster, f.Unassigned, f.After, f.Limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []*Machine{}
	for rows.Next() {
		m, err := scanMachine(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// Machine reads one machine.
func (s *Store) Machine(ctx context.Context, mac string) (*Machine, error) {
	m, err := scanMachine(s.pool.QueryRow(ctx, `SELECT `+machineCols+` FROM machines WHERE mac = $1::macaddr`, mac))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("machine %s: %w", mac, ErrNotFound)
	}
	return m, err
}

// CreateMachine records a machine in state discovered.
func (s *Store) CreateMachine(ctx context.Context, actor, mac string, facts json.RawMessage, reason string) (*Machine, error) {
	if len(facts) == 0 {
		facts = json.RawMessage("{}")
	}
	var m *Machine
	err := s.tx(ctx, actor, reason, func(tx pgx.Tx) error {
		var err error
		m, err = scanMachine(tx.QueryRow(ctx, `INSERT INTO machines (mac, facts) VALUES ($1::macaddr, $2) RETURNING `+machineCols, mac, []byte(facts)))
		return err
	})
	if errors.Is(err, ErrConflict) {
		return nil, &ConflictError{Msg: fmt.Sprintf("machine %s already exists", mac)}
	}
	return m, err
}

// MachineChange is a change to one machine; nil fields stay as they are.
type MachineChange struct {
	// Version, when non-zero, must be the machine's current version (optimistic concurrency).
	Version int64
	State   *State
	// Assign sets the assignment; Unassign clears it.
	Assign   *[2]string
	Unassign bool
	Locked   *bool
	Facts    json.RawMessage
	Reason   string
}

// lockMachine locks the machine's row for the transaction and checks version (when non-zero); it returns the
// machine's state and since when it is in it.
func lockMachine(ctx context.Context, tx pgx.Tx, mac string, version int64) (state State, since time.Time, err error) {
	var cur int64
	err = tx.QueryRow(ctx, "SELECT version, state, state_changed_at FROM machines WHERE mac = $1::macaddr FOR UPDATE", mac).Scan(&cur, &state, &since)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", since, fmt.Errorf("machine %s: %w", mac, ErrNotFound)
	}
	if err != nil {
		return "", since, err
	}
	if version != 0 && version != cur {
		return "", since, &ConflictError{Msg: fmt.Sprintf("machine %s is at version %d, not %d; read it again", mac, cur, version)}
	}
	return state, since, nil
}

// UpdateMachine applies c in one statement; the database refuses illegal changes (ErrConflict with its reason).
func (s *Store) UpdateMachine(ctx context.Context, actor, mac string, c MachineChange) (*Machine, error) {
	var m *Machine
	var from State
	var since time.Time
	err := s.tx(ctx, actor, c.Reason, func(tx pgx.Tx) error {
		var err error
		if from, since, err = lockMachine(ctx, tx, mac, c.Version); err != nil {
			return err
		}
		var cluster, member *string
		if c.Assign != nil {
			cluster, member = &c.Assign[0], &c.Assign[1]
		}
		var facts []byte
		if c.Facts != nil {
			facts = c.Facts
		}
		m, err = scanMachine(tx.QueryRow(ctx, `UPDATE machines SET
				state = coalesce($2, state),
				cluster = CASE WHEN $3 THEN NULL WHEN $4::text IS NOT NULL THEN $4 ELSE cluster END,
				member = CASE WHEN $3 THEN NULL WHEN $5::text IS NOT NULL THEN $5 ELSE member END,
				locked = coalesce($6, locked),
				facts = coalesce($7::jsonb, facts)
			WHERE mac = $1::macaddr RETURNING `+machineCols,
			mac, c.State, c.Unassign, cluster, member, c.Locked, facts))
		return err
	})
	if err != nil {
		return nil, err
	}
	if c.State != nil && *c.State != from {
		s.transition(from, *c.State)
		s.failed(*c.State, causeOf(actor))
		if s.Hooks.Left != nil {
			s.Hooks.Left(string(from), string(*c.State), m.StateChangedAt.Sub(since).Seconds())
		}
	}
	return m, nil
}

// ForgetMachine deletes a machine (its events stay). The database refuses locked and busy machines.
func (s *Store) ForgetMachine(ctx context.Context, actor, mac string, version int64, reason string) error {
	return s.tx(ctx, actor, reason, func(tx pgx.Tx) error {
		if _, _, err := lockMachine(ctx, tx, mac, version); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "DELETE FROM machines WHERE mac = $1::macaddr", mac)
		return err
	})
}

// Events lists a machine's events oldest first, after event id after.
func (s *Store) Events(ctx context.Context, mac string, after int64, limit int) ([]*Event, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, mac::text, at, actor, kind, old_state, new_state, reason, details
		FROM machine_events WHERE mac = $1::macaddr AND id > $2 ORDER BY id LIMIT $3`, mac, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []*Event{}
	for rows.Next() {
		var e Event
		var details []byte
		if err := rows.Scan(&e.ID, &e.MAC, &e.At, &e.Actor, &e.Kind, &e.OldState, &e.NewState, &e.Reason, &details); err != nil {
			return nil, err
		}
		e.Details = details
		out = append(out, &e)
	}
	return out, rows.Err()
}

// ExpireDeadlines moves machines past their in-progress deadline to the failed state; returns how many moved.
func (s *Store) ExpireDeadlines(ctx context.Context, actor string) (int, error) {
	type moved struct{ from, to State }
	var all []moved
	err := s.tx(ctx, "", "", func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, "SELECT from_state, to_state FROM machines_expire($1)", actor)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var m moved
			if err := rows.Scan(&m.from, &m.to); err != nil {
				return err
			}
			all = append(all, m)
		}
		return rows.Err()
	})
	if err != nil {
		return 0, err
	}
	for _, m := range all {
		s.transition(m.from, m.to)
	}
	for _, m := range all {
		s.failed(m.to, "deadline")
	}
	return len(all), nil
}

// MachineCount is the number of machines in one state and cluster ("" when unassigned).
type MachineCount struct {
	State   State
	Cluster string
	N       int
}

// MachineCounts counts machines by state and cluster (metrics).
func (s *Store) MachineCounts(ctx context.Context) ([]MachineCount, error) {
	rows, err := s.pool.Query(ctx, `SELECT state, coalesce(cluster, ''), count(*) FROM machines GROUP BY 1, 2`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (MachineCount, error) {
		var c MachineCount
		err := r.Scan(&c.State, &c.Cluster, &c.N)
		return c, err
	})
}

// Discovery is what a discovery report did to the machines.
type Discovery string

// The outcomes of DiscoverMachine.
const (
	DiscoveryCreated   Discovery = "created"   // a new machine in state discovered
	DiscoveryUpdated   Discovery = "updated"   // a discovered machine's facts replaced
	DiscoveryUnchanged Discovery = "unchanged" // the same facts again: nothing written, no event
	DiscoveryKept      Discovery = "kept"      // a machine past discovered: its facts are not the image's to change
)

// ErrDiscoveredFull is DiscoverMachine's answer for a new MAC while as many machines as its limits allow are
// in state discovered (a *DiscoveredFullError says which limit).
var ErrDiscoveredFull = errors.New("too many machines in state discovered")

// DiscoverLimits bound the machines in state discovered when DiscoverMachine would create one: Max of them in
// all, PerSegment of them on the new machine's Segment (0: no cap). Segment ("" when not known) is recorded as
// the machine's; machines of unknown segment count as one segment of their own.
type DiscoverLimits struct {
	Max, PerSegment int
	Segment         string
}

// DiscoveredFullError is the ErrDiscoveredFull of one limit: Segment's (PerSegment) or the database's.
type DiscoveredFullError struct {
	Segment    string
	PerSegment bool
	N          int // machines in discovered, on the segment or in all
}

func (e *DiscoveredFullError) Error() string {
	if e.PerSegment {
		seg := e.Segment
		if seg == "" {
			seg = "an unknown segment"
		}
		return fmt.Sprintf("%v on segment %s (%d); assign or forget some, or raise --max-discovered", ErrDiscoveredFull, seg, e.N)
	}
	return fmt.Sprintf("%v (%d); assign or forget some, or raise --max-discovered", ErrDiscoveredFull, e.N)
}

func (e *DiscoveredFullError) Unwrap() error { return ErrDiscoveredFull }

// DiscoverMachine records a discovery report in one transaction: a new MAC becomes a machine in state
// discovered, with lim.Segment as its segment, unless lim's caps are reached (*DiscoveredFullError); a
// discovered machine gets facts when they differ from its own (compared as JSON values); any other machine is
// left as it is. New machines are counted and created under one advisory lock, so daemons sharing the
// database never pass a cap together.
func (s *Store) DiscoverMachine(ctx context.Context, actor, mac string, facts json.RawMessage, lim DiscoverLimits, reason string) (Discovery, error) {
	var out Discovery
	var seg *string
	if lim.Segment != "" {
		seg = &lim.Segment
	}
	err := s.tx(ctx, actor, reason, func(tx pgx.Tx) error {
		known := func() (bool, error) {
			var state State
			var same bool
			err := tx.QueryRow(ctx, "SELECT state, facts = $2::jsonb FROM machines WHERE mac = $1::macaddr FOR UPDATE", mac, []byte(facts)).Scan(&state, &same)
			if errors.Is(err, pgx.ErrNoRows) {
				return false, nil
			}
			if err != nil {
				return false, err
			}
			switch {
			case state != StateDiscovered:
				out = DiscoveryKept
			case same:
				out = DiscoveryUnchanged
			default:
				out = DiscoveryUpdated
				_, err = tx.Exec(ctx, "UPDATE machines SET facts = $2::jsonb WHERE mac = $1::macaddr", mac, []byte(facts))
			}
			return true, err
		}
		if ok, err := known(); ok || err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('nix8s.machines.discovered'))"); err != nil {
			return err
		}
		// Another report of this MAC may have created it while this one waited for the lock.
		if ok, err := known(); ok || err != nil {
			return err
		}
		if lim.Max > 0 || lim.PerSegment > 0 {
			var all, here int
			if err := tx.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE segment IS NOT DISTINCT FROM $1)
				FROM machines WHERE state = $2`, seg, StateDiscovered).Scan(&all, &here); err != nil {
				return err
			}
			if lim.PerSegment > 0 && here >= lim.PerSegment {
				return &DiscoveredFullError{Segment: lim.Segment, PerSegment: true, N: here}
			}
			if lim.Max > 0 && all >= lim.Max {
				return &DiscoveredFullError{Segment: lim.Segment, N: all}
			}
		}
		out = DiscoveryCreated
		_, err := tx.Exec(ctx, "INSERT INTO machines (mac, facts, segment) VALUES ($1::macaddr, $2::jsonb, $3)", mac, []byte(facts), seg)
		return err
	})
	if err != nil {
		return "", err
	}
	return out, nil
}
