package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Job is one operation run by a daemon (install, rebuild, kubeconfig ...: kinds come with the operations).
type Job struct {
	ID         int64           `json:"id"`
	Kind       string          `json:"kind"`
	Status     string          `json:"status"`
	Cluster    *string         `json:"cluster"`
	Member     *string         `json:"member"`
	MAC        *string         `json:"mac"`
	Params     json.RawMessage `json:"params"`
	Log        string          `json:"log,omitempty"`
	Error      *string         `json:"error"`
	Worker     *string         `json:"worker"`
	CreatedAt  time.Time       `json:"createdAt"`
	StartedAt  *time.Time      `json:"startedAt"`
	FinishedAt *time.Time      `json:"finishedAt"`
}

const jobCols = `id, kind, status, cluster, member, mac::text, params, log, error, worker, created_at, started_at, finished_at`

func scanJob(r pgx.Row) (*Job, error) {
	var j Job
	var params []byte
	err := r.Scan(&j.ID, &j.Kind, &j.Status, &j.Cluster, &j.Member, &j.MAC, &params, &j.Log, &j.Error, &j.Worker,
		&j.CreatedAt, &j.StartedAt, &j.FinishedAt)
	j.Params = params
	return &j, err
}

// NewJob queues a job.
func (s *Store) NewJob(ctx context.Context, kind string, cluster, member *string, params json.RawMessage) (*Job, error) {
	if params == nil {
		params = json.RawMessage("{}")
	}
	return scanJob(s.pool.QueryRow(ctx, `INSERT INTO jobs (kind, cluster, member, params) VALUES ($1, $2, $3, $4) RETURNING `+jobCols,
		kind, cluster, member, []byte(params)))
}

// ClaimJob takes the oldest queued job for worker, if any (nil, nil when none). Several daemons may call it at
// once: SKIP LOCKED hands each job to exactly one.
func (s *Store) ClaimJob(ctx context.Context, worker string) (*Job, error) {
	j, err := scanJob(s.pool.QueryRow(ctx, `UPDATE jobs SET status = 'running', worker = $1, started_at = now(), heartbeat_at = now()
		WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
		RETURNING `+jobCols, worker))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	return j, err
}

// AppendJobLog appends text to a running job's log and refreshes its heartbeat.
func (s *Store) AppendJobLog(ctx context.Context, id int64, text string) error {
	_, err := s.pool.Exec(ctx, `UPDATE jobs SET log = log || $2, heartbeat_at = now() WHERE id = $1`, id, text)
	return err
}

// FinishJob ends a running job as succeeded or failed (with errMsg).
func (s *Store) FinishJob(ctx context.Context, id int64, status, errMsg string) (*Job, error) {
	if status != "succeeded" && status != "failed" && status != "cancelled" {
		return nil, &InvalidError{Path: "status", Msg: fmt.Sprintf("%q is not a final job status", status)}
	}
	var e *string
	if errMsg != "" {
		e = &errMsg
	}
	j, err := scanJob(s.pool.QueryRow(ctx, `UPDATE jobs SET status = $2, error = $3, finished_at = now()
		WHERE id = $1 AND status IN ('queued', 'running') RETURNING `+jobCols, id, status, e))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, &ConflictError{Msg: fmt.Sprintf("job %d is not queued or running", id)}
	}
	if err != nil {
		return nil, err
	}
	if s.Hooks.JobFinished != nil && j.StartedAt != nil && j.FinishedAt != nil {
		s.Hooks.JobFinished(j.Kind, j.Status, j.FinishedAt.Sub(*j.StartedAt).Seconds())
	}
	return j, nil
}

// JobFilter selects jobs; zero fields select everything.
type JobFilter struct {
	Status, Kind string
	Before       int64 // id; pagination cursor (newest first)
	Limit        int
}

// Jobs lists jobs newest first, without their logs.
func (s *Store) Jobs(ctx context.Context, f JobFilter) ([]*Job, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+jobCols+` FROM jobs WHERE ($1 = '' OR status = $1) AND ($2 = '' OR kind = $2)
		AND ($3 = 0 OR id < $3) ORDER BY id DESC LIMIT $4`, f.Status, f.Kind, f.Before, f.Limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []*Job{}
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, err
		}
		j.Log = ""
		out = append(out, j)
	}
	return out, rows.Err()
}

// Job reads one job with its log.
func (s *Store) Job(ctx context.Context, id int64) (*Job, error) {
	j, err := scanJob(s.pool.QueryRow(ctx, `SELECT `+jobCols+` FROM jobs WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("job %d: %w", id, ErrNotFound)
	}
	return j, err
}

// JobCount is the number of jobs of one kind in one status (metrics).
type JobCount struct {
	Kind, Status string
	N            int
}

// JobCounts counts jobs by kind and status.
func (s *Store) JobCounts(ctx context.Context) ([]JobCount, error) {
	rows, err := s.pool.Query(ctx, `SELECT kind, status, count(*) FROM jobs GROUP BY 1, 2`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (JobCount, error) {
		var c JobCount
		err := r.Scan(&c.Kind, &c.Status, &c.N)
		return c, err
	})
}

// RequeueStaleJobs puts running jobs whose worker has not been heard of for lease back in the queue (the worker
// died); returns how many. Any daemon may run it.
func (s *Store) RequeueStaleJobs(ctx context.Context, lease time.Duration) (int, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE jobs SET status = 'queued', worker = NULL, started_at = NULL,
			log = log || format(E'--- requeued: worker %s silent since %s\n', worker, heartbeat_at)
		WHERE status = 'running' AND heartbeat_at < now() - $1 * interval '1 second'`, lease.Seconds())
	if err != nil {
		return 0, err
	}
	return int(tag.RowsAffected()), nil
}
