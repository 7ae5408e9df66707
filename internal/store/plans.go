package store

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
)

// StoredPlan is the plan core made of inventory version, ErrNotFound when none is stored.
func (s *Store) StoredPlan(ctx context.Context, version int64, core string) ([]byte, error) {
	var plan []byte
	err := s.pool.QueryRow(ctx, `SELECT plan FROM inventory_plans WHERE version = $1 AND core = $2`, version, core).Scan(&plan)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return plan, err
}

// SavePlan stores the plan core made of inventory version, while that version is still the current one (a plan
// of an older version is of no use to anyone), and forgets the plans of older versions. Saving the same plan
// twice is harmless: plans are a pure function of the inventory and the core.
func (s *Store) SavePlan(ctx context.Context, version int64, core string, plan []byte) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO inventory_plans (version, core, plan)
			SELECT $1, $2, $3 FROM inventory_meta WHERE version = $1
			ON CONFLICT (version, core) DO NOTHING`, version, core, string(plan))
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM inventory_plans WHERE version < $1`, version)
		return err
	})
}

// MemberStates are the states of the machines assigned to the named members of cluster, by member; a member
// without a machine is absent. A boot decision reads only the members it waits for, whatever the cluster's size.
func (s *Store) MemberStates(ctx context.Context, cluster string, members []string) (map[string]State, error) {
	out := map[string]State{}
	if len(members) == 0 {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT member, state FROM machines WHERE cluster = $1 AND member = ANY($2)`, cluster, members)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var m string
		var st State
		if err := rows.Scan(&m, &st); err != nil {
			return nil, err
		}
		out[m] = st
	}
	return out, rows.Err()
}
