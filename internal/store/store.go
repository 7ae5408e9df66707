// Package store keeps the daemon's inventory in PostgreSQL: the config layers (nodes, clusters with members,
// provisioning) in the shape of the nix8s YAML, machines with their database-enforced state machine and audit
// log, jobs and API tokens. Every multi-row change runs in one transaction; concurrent writers are detected with
// versions (ErrConflict) rather than silently overwritten.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/nix8s/nix8s/migrations"
)

// Errors callers map to HTTP status codes.
var (
	// ErrNotFound: the object does not exist (404).
	ErrNotFound = errors.New("not found")
	// ErrConflict: a version precondition failed, or the database refused the change (illegal state
	// transition, locked machine, member still in use) (409).
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the input cannot be stored in the inventory's shape (400/422).
	ErrInvalid = errors.New("invalid")
)

// ConflictError carries the reason of an ErrConflict.
type ConflictError struct{ Msg string }

func (e *ConflictError) Error() string   { return e.Msg }
func (e *ConflictError) Is(t error) bool { return t == ErrConflict }

// InvalidError is an input that does not fit the inventory's shape, at Path (dotted config path).
type InvalidError struct{ Path, Msg string }

func (e *InvalidError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}
func (e *InvalidError) Is(t error) bool { return t == ErrInvalid }

// Store is the inventory in one PostgreSQL database.
type Store struct {
	pool *pgxpool.Pool
	sets atomic.Pointer[StateSets] // read by Migrate (LoadStates)
	// Hooks lets the daemon count what happened (metrics); nil fields are skipped.
	Hooks Hooks
}

// Hooks are called after a change has been committed.
type Hooks struct {
	Transition  func(from, to string)
	JobFinished func(kind, status string, seconds float64)
	// Left reports how long a machine stayed in state before moving to to (UpdateMachine's changes).
	Left func(state, to string, seconds float64)
	// Failed reports a move into a failed state with its cause: installer (the machine reported an error),
	// deadline, job (an operation), operator (the API), or daemon (another part of nix8sd).
	Failed func(state, cause string)
	// Locked reports a machine locked by the daemon for a conflict (LockForConflict), by cause: identity (a
	// report from other hardware), two-clients (two clients in one install), discovery (a discovery report
	// for a machine that is installing).
	Locked func(cause string)
}

// causeOf names who failed a machine, from the actor recorded in its event log.
func causeOf(actor string) string {
	switch {
	case strings.HasPrefix(actor, "machine:"):
		return "installer"
	case strings.HasPrefix(actor, "job:"):
		return "job"
	case strings.HasPrefix(actor, "api:"):
		return "operator"
	default:
		return "daemon"
	}
}

// failed reports a move into state to Hooks.Failed when state is of kind failed.
func (s *Store) failed(state State, cause string) {
	if s.Hooks.Failed != nil && s.StateSets().Failed(state) {
		s.Hooks.Failed(string(state), cause)
	}
}

// transition reports a move to Hooks.Transition.
func (s *Store) transition(from, to State) {
	if s.Hooks.Transition != nil {
		s.Hooks.Transition(string(from), string(to))
	}
}

// Open connects to the database at url. It does not migrate; see Migrate.
func Open(ctx context.Context, url string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parsing database URL: %w", err)
	}
	if !strings.Contains(url, "pool_max_conns") {
		// pgx's default, max(4, cores), is four on a small server: DHCP workers, boot scripts, the API and the
		// jobs all wait for one of them. The URL's pool_max_conns sets another.
		cfg.MaxConns = max(cfg.MaxConns, 16)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to the database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to the database: %w", err)
	}
	return &Store{pool: pool}, nil
}

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Pool is the underlying pool, for tests and health checks.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

func (s *Store) goose() (*goose.Provider, *sql.DB, error) {
	db := stdlib.OpenDBFromPool(s.pool)
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrationsFS())
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("loading migrations: %w", err)
	}
	return p, db, nil
}

func migrationsFS() fs.FS { return migrations.FS }

// Migrate applies every pending migration, then reads the machine states' sets (LoadStates).
func (s *Store) Migrate(ctx context.Context) error {
	p, db, err := s.goose()
	if err != nil {
		return err
	}
	defer db.Close()
	res, err := p.Up(ctx)
	for _, r := range res {
		slog.Info("migration applied", "version", r.Source.Version, "file", r.Source.Path, "duration", r.Duration)
	}
	if err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	return s.LoadStates(ctx)
}

// MigrateDown rolls back the last migration, or all of them with all.
func (s *Store) MigrateDown(ctx context.Context, all bool) error {
	p, db, err := s.goose()
	if err != nil {
		return err
	}
	defer db.Close()
	if all {
		_, err = p.DownTo(ctx, 0)
	} else {
		_, err = p.Down(ctx)
	}
	if err != nil {
		return fmt.Errorf("migrating down: %w", err)
	}
	return nil
}

// Pending reports whether migrations remain to be applied (readiness).
func (s *Store) Pending(ctx context.Context) (bool, error) {
	p, db, err := s.goose()
	if err != nil {
		return false, err
	}
	defer db.Close()
	return p.HasPending(ctx)
}

// tx runs f in a transaction acting as actor (recorded by the machine audit trigger) for reason.
func (s *Store) tx(ctx context.Context, actor, reason string, f func(pgx.Tx) error) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if actor != "" || reason != "" {
			if _, err := tx.Exec(ctx, "SELECT set_config('nix8s.actor', $1, true), set_config('nix8s.reason', $2, true)", actor, reason); err != nil {
				return err
			}
		}
		return f(tx)
	})
	return mapErr(err)
}

// mapErr turns the database's refusals into ErrConflict with the database's message.
func mapErr(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case len(pe.Code) == 5 && pe.Code[:2] == "NX":
			return &ConflictError{Msg: pe.Message}
		case pe.Code == "23505": // unique_violation
			return &ConflictError{Msg: "already exists: " + pe.Detail}
		case pe.Code == "23503": // foreign_key_violation
			return &ConflictError{Msg: pe.Detail}
		case pe.Code == "40001", pe.Code == "40P01": // serialization failure, deadlock
			return &ConflictError{Msg: "concurrent change; retry"}
		}
	}
	return err
}
