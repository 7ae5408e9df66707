package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// SetJobResult records what a running job produced (JSON), before FinishJob ends it.
func (s *Store) SetJobResult(ctx context.Context, id int64, result json.RawMessage) error {
	tag, err := s.pool.Exec(ctx, `UPDATE jobs SET result = $2 WHERE id = $1 AND status = 'running'`, id, []byte(result))
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return &ConflictError{Msg: fmt.Sprintf("job %d is not running", id)}
	}
	return nil
}

// JobResult is what a job produced; nil when it recorded nothing (yet).
func (s *Store) JobResult(ctx context.Context, id int64) (json.RawMessage, error) {
	var result []byte
	err := s.pool.QueryRow(ctx, `SELECT result FROM jobs WHERE id = $1`, id).Scan(&result)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("job %d: %w", id, ErrNotFound)
	}
	if err != nil || result == nil {
		return nil, err
	}
	return result, nil
}

// MachinesOfCluster are the machines assigned to members of cluster, by member name.
func (s *Store) MachinesOfCluster(ctx context.Context, cluster string) (map[string]*Machine, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+machineCols+` FROM machines WHERE cluster = $1 AND member IS NOT NULL`, cluster)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]*Machine{}
	for rows.Next() {
		m, err := scanMachine(rows)
		if err != nil {
			return nil, err
		}
		out[*m.Member] = m
	}
	return out, rows.Err()
}

// ActiveJob is the oldest queued or running job of cluster that is not a dry run (params.dryRun), nil when
// there is none.
func (s *Store) ActiveJob(ctx context.Context, cluster string) (*Job, error) {
	j, err := scanJob(s.pool.QueryRow(ctx, `SELECT `+jobCols+` FROM jobs WHERE cluster = $1 AND status IN ('queued', 'running')
		AND coalesce(params->>'dryRun', 'false') <> 'true' ORDER BY id LIMIT 1`, cluster))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	j.Log = ""
	return j, nil
}
