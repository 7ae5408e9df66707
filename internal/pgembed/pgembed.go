// Package pgembed runs a private PostgreSQL server from the machine's own PostgreSQL binaries (initdb, postgres),
// so that tests and a first `nix8sd serve` need no database set up by hand.
//
// The server listens on a unix socket inside its data directory only (no TCP port unless asked), so several
// servers can run side by side without port clashes. PostgreSQL refuses to run as root: when the caller is root,
// the server runs as an unprivileged user (Options.User, else the Debian "postgres" user, else "nobody") and the
// data directory is handed to that user.
package pgembed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Options say where and how to run the server.
type Options struct {
	// Dir holds the data directory (Dir/data), the socket and the log (Dir/postgres.log). Created if missing.
	Dir string
	// BinDir holds initdb and postgres. Empty: $NIX8S_PG_BINDIR, else the newest /usr/lib/postgresql/*/bin,
	// else the directory of `postgres` on $PATH.
	BinDir string
	// User runs the server when the caller is root. Empty: "postgres" if it exists, else "nobody".
	User string
	// Port names the socket (.s.PGSQL.<port>) and, with ListenTCP, the loopback port. 0: 5432.
	Port int
	// ListenTCP also listens on 127.0.0.1:Port.
	ListenTCP bool
	// StartTimeout bounds the wait for the server to accept connections. 0: 60s.
	StartTimeout time.Duration
}

// Superuser is the role initdb creates; connections over the socket are trusted (the socket directory is private).
const Superuser = "nix8s"

// Server is a running PostgreSQL.
type Server struct {
	opts    Options
	dataDir string
	cmd     *exec.Cmd
	done    chan error
	logPath string
}

// Start initialises the data directory when it is empty and starts the server.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("Options.Dir is empty")
	}
	if opts.Port == 0 {
		opts.Port = 5432
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 60 * time.Second
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	opts.Dir = dir
	if sock := filepath.Join(dir, fmt.Sprintf(".s.PGSQL.%d", opts.Port)); len(sock) > 107 {
		return nil, fmt.Errorf("the socket path %s is longer than unix sockets allow (107 bytes); choose a shorter directory", sock)
	}
	bin, err := findBinDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	opts.BinDir = bin
	cred, err := credential(opts.User)
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, dataDir: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "postgres.log")}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	if cred != nil {
		// The server user must own its directory and reach it through every parent.
		if err := chownTree(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
		if err := checkTraversable(dir); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(filepath.Join(s.dataDir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		if err := s.initdb(ctx, cred); err != nil {
			return nil, err
		}
	}
	// Another process (a running `nix8sd serve`) may already run a server on this directory: use it.
	if _, err := os.Stat(filepath.Join(s.dataDir, "postmaster.pid")); err == nil {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, s.URL("postgres"))
		cancel()
		if err == nil {
			conn.Close(ctx)
			return s, nil
		}
	}
	if err := s.start(ctx, cred); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) initdb(ctx context.Context, cred *syscall.Credential) error {
	cmd := exec.CommandContext(ctx, filepath.Join(s.opts.BinDir, "initdb"),
		"-D", s.dataDir, "-U", Superuser, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Dir = s.opts.Dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("initdb %s: %w\n%s", s.dataDir, err, out.String())
	}
	return nil
}

func (s *Server) start(ctx context.Context, cred *syscall.Credential) error {
	listen := ""
	if s.opts.ListenTCP {
		listen = "127.0.0.1"
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if cred != nil {
		_ = os.Chown(s.logPath, int(cred.Uid), int(cred.Gid))
	}
	cmd := exec.Command(filepath.Join(s.opts.BinDir, "postgres"),
		"-D", s.dataDir, "-k", s.opts.Dir, "-p", strconv.Itoa(s.opts.Port),
		"-c", "listen_addresses="+listen,
		"-c", "fsync=off", // a private server for tests and first runs; a real deployment brings its own PostgreSQL
		"-c", "max_connections=200",
		"-c", "unix_socket_permissions=0700",
	)
	cmd.Dir = s.opts.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Pdeathsig: a test binary killed hard must not leave servers behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting postgres: %w", err)
	}
	logf.Close()
	s.cmd = cmd
	s.done = make(chan error, 1)
	go func() { s.done <- cmd.Wait() }()

	deadline := time.Now().Add(s.opts.StartTimeout)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, s.URL("postgres"))
		cancel()
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case werr := <-s.done:
			s.done <- werr
			return fmt.Errorf("postgres exited: %v\n%s", werr, s.logTail())
		case <-ctx.Done():
			s.Stop()
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("postgres did not accept connections within %s: %v\n%s", s.opts.StartTimeout, err, s.logTail())
		}
	}
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(s.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// URL is a connection string for database db over the server's socket.
func (s *Server) URL(db string) string {
	q := url.Values{}
	q.Set("host", s.opts.Dir)
	q.Set("port", strconv.Itoa(s.opts.Port))
	q.Set("sslmode", "disable")
	return "postgres://" + Superuser + "@/" + url.PathEscape(db) + "?" + q.Encode()
}

// LogPath is the server's log file.
func (s *Server) LogPath() string { return s.logPath }

// CreateDatabase creates database name (if missing) and returns its URL.
func (s *Server) CreateDatabase(ctx context.Context, name string) (string, error) {
	return CreateDatabase(ctx, s.URL("postgres"), name)
}

// Stop shuts the server down (fast shutdown: open transactions are rolled back) and waits for it. A server
// that Start found already running (started by another process) is left running.
func (s *Server) Stop() error {
	if s.cmd == nil || s.cmd.Process == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-s.done:
		s.done <- err
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		err := <-s.done
		s.done <- err
	}
	return nil
}

// CreateDatabase creates database name through the server at adminURL (if missing) and returns the URL of the new
// database: adminURL with its database replaced.
func CreateDatabase(ctx context.Context, adminURL, name string) (string, error) {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", fmt.Errorf("connecting: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", err
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
			return "", fmt.Errorf("creating database %q: %w", name, err)
		}
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	u.RawPath = ""
	return u.String(), nil
}

// DropDatabase drops database name through the server at adminURL, ending its open connections.
func DropDatabase(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	return err
}

func findBinDir(explicit string) (string, error) {
	if explicit == "" {
		explicit = os.Getenv("NIX8S_PG_BINDIR")
	}
	if explicit != "" {
		if _, err := os.Stat(filepath.Join(explicit, "postgres")); err != nil {
			return "", fmt.Errorf("no postgres in %s: %w", explicit, err)
		}
		return explicit, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("postgres"); err == nil {
		d := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("no PostgreSQL binaries found (install the Debian package postgresql, " +
		"or set NIX8S_PG_BINDIR to the directory holding initdb and postgres)")
}

func versionOf(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

// credential returns whom to run PostgreSQL as: nil when the caller is not root.
func credential(name string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	names := []string{name}
	if name == "" {
		names = []string{"postgres", "nobody"}
	}
	for _, n := range names {
		u, err := user.Lookup(n)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if uid == 0 {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, fmt.Errorf("running as root and no unprivileged user %s to run PostgreSQL as", strings.Join(names, " or "))
}

func chownTree(dir string, uid, gid int) error {
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(p, uid, gid); err != nil {
			return fmt.Errorf("handing %s to uid %d: %w", p, uid, err)
		}
		return nil
	})
}

// checkTraversable fails early, with the fix, when a parent of dir cannot be entered by other users.
func checkTraversable(dir string) error {
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s is not searchable by the PostgreSQL user; hint: chmod o+x %s, or choose another directory", p, p)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}
