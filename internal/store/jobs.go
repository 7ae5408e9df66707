package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
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

// memberLockClass is the first key of the advisory locks on members (pg_advisory_lock(int, int)); the
// second is a hash of "<cluster>/<member>". Two members whose names hash alike only wait for each other.
const memberLockClass = 0x6e387331 // "n8s1"

// MemberLockPing is how often a held member lock checks its connection; a lock whose connection fails is
// lost (MemberLock.Lost), and its holder must stop what the lock guards.
const MemberLockPing = 5 * time.Second

// MemberLock is a member's destructive-step lock: a session-level PostgreSQL advisory lock held on a
// connection of its own. PostgreSQL releases it when that connection ends, so a daemon that dies (SIGKILL,
// a crash: the kernel closes its sockets) loses its locks at once, together with its programs (toolrun),
// and one whose host vanishes loses them after the TCP keepalives set here (about a minute), while its
// job's heartbeat lease (2 minutes) has not yet run out. The holder notices a broken connection within
// MemberLockPing and must stop: once the connection is gone, another attempt may take the lock.
//
// Session locks need a session: behind a pooler in transaction mode (PgBouncer) they do not hold.
type MemberLock struct {
	conn   *pgx.Conn
	lost   context.Context
	cancel context.CancelCauseFunc
	done   chan struct{}
	once   sync.Once
	mu     sync.Mutex // guards conn: the watch's pings and Release
}

// LockHeldError says who holds a member's lock that could not be taken.
type LockHeldError struct {
	Cluster, Member string
	// Holder is the holder's name (`<worker> job <id>`), Since when its connection started; empty when
	// PostgreSQL does not say (another database user's session).
	Holder string
	Since  time.Time
	Waited time.Duration
}

func (e *LockHeldError) Error() string {
	who := "another attempt"
	if e.Holder != "" {
		who = fmt.Sprintf("%s (connected since %s)", e.Holder, e.Since.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("member %s of cluster %q: %s still holds its member lock (held by installs and rollouts) after %s; no second attempt starts while an earlier one may still run (if that daemon is gone, PostgreSQL frees the lock once its connection ends)",
		e.Member, e.Cluster, who, e.Waited.Round(time.Second))
}

func memberLockKey(cluster, member string) int32 {
	h := fnv.New32a()
	h.Write([]byte(cluster + "/" + member))
	return int32(h.Sum32())
}

// LockMember takes member's lock for holder, waiting at most wait for an earlier holder to let go (polling
// every second); a lock still held then is a *LockHeldError. waiting, when not nil, hears once of a holder
// being waited for.
func (s *Store) LockMember(ctx context.Context, cluster, member, holder string, wait time.Duration, waiting func(*LockHeldError)) (*MemberLock, error) {
	cfg := s.pool.Config().ConnConfig.Copy()
	if len(holder) > 63 { // application_name is cut to NAMEDATALEN-1 bytes
		holder = holder[:63]
	}
	cfg.RuntimeParams["application_name"] = holder
	// A client host that vanishes without closing its connection loses the lock after about a minute.
	cfg.RuntimeParams["tcp_keepalives_idle"] = "30"
	cfg.RuntimeParams["tcp_keepalives_interval"] = "10"
	cfg.RuntimeParams["tcp_keepalives_count"] = "3"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting for the member lock of member %s: %w", member, err)
	}
	key := memberLockKey(cluster, member)
	start := time.Now()
	told := false
	for {
		var got bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, $2)`, memberLockClass, key).Scan(&got); err != nil {
			conn.Close(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("taking the member lock of member %s: %w", member, err)
		}
		if got {
			break
		}
		held := &LockHeldError{Cluster: cluster, Member: member, Waited: time.Since(start)}
		conn.QueryRow(ctx, `SELECT a.application_name, a.backend_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
			WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
			  AND l.classid = $1::bigint::oid AND l.objid = ($2::bigint & 4294967295)::oid AND l.objsubid = 2`,
			memberLockClass, key).Scan(&held.Holder, &held.Since)
		if held.Waited >= wait {
			conn.Close(context.WithoutCancel(ctx))
			return nil, held
		}
		if !told && waiting != nil {
			waiting(held)
			told = true
		}
		select {
		case <-ctx.Done():
			conn.Close(context.WithoutCancel(ctx))
			return nil, ctx.Err()
		case <-time.After(min(time.Second, wait-held.Waited)):
		}
	}
	l := &MemberLock{conn: conn, done: make(chan struct{})}
	l.lost, l.cancel = context.WithCancelCause(context.Background())
	go l.watch(cluster, member)
	return l, nil
}

// watch pings the lock's connection until Release; a failed ping loses the lock.
func (l *MemberLock) watch(cluster, member string) {
	t := time.NewTicker(MemberLockPing)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
			l.mu.Lock()
			ctx, cancel := context.WithTimeout(context.Background(), MemberLockPing)
			err := l.conn.Ping(ctx)
			cancel()
			l.mu.Unlock()
			if err != nil {
				l.cancel(fmt.Errorf("member %s of cluster %q: the connection holding its member lock failed (%v), so another attempt may take it", member, cluster, err))
				return
			}
		}
	}
}

// Lost is done once the lock is lost; context.Cause says why.
func (l *MemberLock) Lost() context.Context { return l.lost }

// Release lets the lock go (closing its connection).
func (l *MemberLock) Release() {
	l.once.Do(func() {
		close(l.done)
		l.mu.Lock()
		defer l.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		l.conn.Close(ctx)
		l.cancel(errors.New("released"))
	})
}
