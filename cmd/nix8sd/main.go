// Command nix8sd is the nix8s provisioning daemon: it keeps the inventory (nodes, clusters, provisioning,
// machines) in PostgreSQL and serves the REST API (internal/api). Subcommands: serve, migrate, token.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/nix8s/nix8s/internal/pgembed"
	"github.com/nix8s/nix8s/internal/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

const usage = `nix8sd is the nix8s provisioning daemon: inventory in PostgreSQL, REST API, machine states, metrics.

Usage:
  nix8sd serve [--listen ADDR] [--state-dir DIR] [--flake DIR]   run the API server
  nix8sd migrate [up|down|down-all|status]                        manage the database schema
  nix8sd token create --scope admin|read [--name NAME]            print a new API token once
  nix8sd token list | token revoke ID                             list or revoke API tokens

The database is $DATABASE_URL (or --database-url); without one, nix8sd starts a private PostgreSQL from the
machine's PostgreSQL binaries in <state-dir>/postgres. Run 'nix8sd COMMAND -h' for a command's flags.
`

// common are the flags every command shares.
type common struct {
	databaseURL string
	stateDir    string
	logLevel    string
	logFormat   string
}

func (c *common) bind(fs *flag.FlagSet, getenv func(string) string) {
	fs.StringVar(&c.databaseURL, "database-url", getenv("DATABASE_URL"), "PostgreSQL `URL` (default $DATABASE_URL; empty: embedded PostgreSQL in the state directory)")
	fs.StringVar(&c.stateDir, "state-dir", envOr(getenv, "NIX8S_STATE_DIR", defaultStateDir(getenv)), "`DIR` for the embedded database and the flake workspace ($NIX8S_STATE_DIR)")
	fs.StringVar(&c.logLevel, "log-level", envOr(getenv, "NIX8S_LOG_LEVEL", "info"), "debug, info, warn or error ($NIX8S_LOG_LEVEL)")
	fs.StringVar(&c.logFormat, "log-format", envOr(getenv, "NIX8S_LOG_FORMAT", "json"), "json or text ($NIX8S_LOG_FORMAT)")
}

func envOr(getenv func(string) string, k, dflt string) string {
	if v := getenv(k); v != "" {
		return v
	}
	return dflt
}

func defaultStateDir(getenv func(string) string) string {
	if d := getenv("STATE_DIRECTORY"); d != "" { // systemd StateDirectory=
		return strings.Split(d, ":")[0]
	}
	if os.Geteuid() == 0 {
		return "/var/lib/nix8sd"
	}
	if d := getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "nix8sd")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "nix8sd")
	}
	return "nix8sd-state"
}

func (c *common) logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", c.logLevel)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch c.logFormat {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use json or text", c.logFormat)
}

// openStore connects to the database, starting the embedded one when no URL is given. The returned stop
// closes the pool and stops the embedded server.
// openCommand is what the short commands (migrate, token) start with: the logger of --log-level (the default
// one from then on) and the store; migrated also applies the migrations.
func (c *common) openCommand(ctx context.Context, stderr io.Writer, migrated bool) (*store.Store, func(), error) {
	log, err := c.logger(stderr)
	if err != nil {
		return nil, nil, usageError{err.Error()}
	}
	slog.SetDefault(log)
	st, stop, err := c.openStore(ctx, log)
	if err != nil {
		return nil, nil, err
	}
	if migrated {
		if err := st.Migrate(ctx); err != nil {
			stop()
			return nil, nil, err
		}
	}
	return st, stop, nil
}

func (c *common) openStore(ctx context.Context, log *slog.Logger) (*store.Store, func(), error) {
	url := c.databaseURL
	var srv *pgembed.Server
	if url == "" {
		dir := filepath.Join(c.stateDir, "postgres")
		if err := os.MkdirAll(c.stateDir, 0o711); err != nil {
			return nil, nil, fmt.Errorf("creating the state directory: %w", err)
		}
		var err error
		srv, err = pgembed.Start(ctx, pgembed.Options{Dir: dir})
		if err != nil {
			return nil, nil, fmt.Errorf("starting the embedded PostgreSQL (set DATABASE_URL to use your own): %w", err)
		}
		if url, err = srv.CreateDatabase(ctx, "nix8s"); err != nil {
			srv.Stop()
			return nil, nil, err
		}
		log.Info("no DATABASE_URL: using an embedded PostgreSQL for a first run; for production set DATABASE_URL=postgres://USER@HOST/DB",
			"dir", dir, "log", srv.LogPath())
	}
	st, err := store.Open(ctx, url)
	if err != nil {
		if srv != nil {
			srv.Stop()
		}
		return nil, nil, err
	}
	return st, func() {
		st.Close()
		if srv != nil {
			srv.Stop()
		}
	}, nil
}

// usageError is a mistake on the command line: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		w := stderr
		if len(args) > 0 {
			w = stdout
		}
		fmt.Fprint(w, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	var err error
	switch args[0] {
	case "serve":
		err = serveCommand(ctx, args[1:], stdout, stderr, getenv)
	case "migrate":
		err = migrateCommand(ctx, args[1:], stdout, stderr, getenv)
	case "token":
		err = tokenCommand(ctx, args[1:], stdout, stderr, getenv)
	default:
		err = usageError{fmt.Sprintf("unknown command %q", args[0])}
	}
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "nix8sd: error: %s\n", err)
	var u usageError
	if errors.As(err, &u) {
		fmt.Fprintln(stderr, "nix8sd: hint: run 'nix8sd help' for usage")
		return 2
	}
	return 1
}

func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	return nil
}
