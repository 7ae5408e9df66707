package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nix8s/nix8s"
	"github.com/nix8s/nix8s/internal/api"
	"github.com/nix8s/nix8s/internal/conns"
	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/inventory"
	"github.com/nix8s/nix8s/internal/jobs"
	"github.com/nix8s/nix8s/internal/nixgen"
	"github.com/nix8s/nix8s/internal/nodewatch"
	"github.com/nix8s/nix8s/internal/provision"
	"github.com/nix8s/nix8s/internal/remote"
	"github.com/nix8s/nix8s/internal/rollout"
	"github.com/nix8s/nix8s/internal/store"
)

type serveOptions struct {
	common
	listen         string
	flake          string
	flakeRef       string
	lib            string
	adminTokenFile string
	readTokenFile  string
	expireEvery    time.Duration
	shutdownWait   time.Duration
	ops            jobs.Config
	jobs           int
	jobTimeout     time.Duration
	config         string
	kubeconfig     string
	pxe            pxeOptions
	http           conns.Timeouts
	maxConns       int
	maxClientConns int
	machine        machineListener
}

// machineListener is the machine-facing listener (--machine-listen): /boot and /machine/v1 on an address and
// connection budget of their own, so that the provisioning LAN cannot take the operator API's connections.
type machineListener struct {
	listen         string
	http           conns.Timeouts
	maxConns       int
	maxClientConns int
}

func (o *serveOptions) bind(fs *flag.FlagSet, getenv func(string) string) {
	o.common.bind(fs, getenv)
	fs.StringVar(&o.listen, "listen", envOr(getenv, "NIX8S_LISTEN", ":8080"), "`ADDR`ess of the API ($NIX8S_LISTEN)")
	fs.StringVar(&o.flake, "flake", getenv("NIX8S_FLAKE"), "your own flake `DIR`: the inventory is written there as inventory.json ($NIX8S_FLAKE; default: a generated flake in <state-dir>/flake)")
	fs.StringVar(&o.flakeRef, "nix8s-flake", envOr(getenv, "NIX8S_FLAKE_REF", nixgen.DefaultFlakeRef), "flake `REF` of nix8s that a generated flake imports ($NIX8S_FLAKE_REF)")
	fs.StringVar(&o.lib, "lib", getenv("NIX8S_LIB"), "evaluate the core in `DIR` instead of the embedded one ($NIX8S_LIB)")
	fs.StringVar(&o.adminTokenFile, "admin-token-file", getenv("NIX8S_ADMIN_TOKEN_FILE"), "`FILE` holding an admin token to accept (made with 'nix8sd token create --print-only')")
	fs.StringVar(&o.readTokenFile, "read-token-file", getenv("NIX8S_READ_TOKEN_FILE"), "`FILE` holding a read token to accept")
	fs.DurationVar(&o.expireEvery, "deadline-interval", 30*time.Second, "how often machines past their state deadline are moved to the failed state")
	fs.DurationVar(&o.shutdownWait, "shutdown-timeout", 20*time.Second, "how long in-flight requests may finish on SIGTERM")
	// The operations (install, rollout, kubeconfig jobs); the ssh user, port and key come from the
	// inventory's provisioning.nixos-anywhere.ssh.
	fs.StringVar(&o.ops.KnownHostsFile, "known-hosts", getenv("NIX8S_KNOWN_HOSTS"), "check the members' host keys against `FILE` instead of the daemon user's ~/.ssh/known_hosts ($NIX8S_KNOWN_HOSTS)")
	fs.StringVar(&o.ops.SSHConfigFile, "ssh-config", getenv("NIX8S_SSH_CONFIG"), "pass `FILE` to ssh -F instead of ~/.ssh/config (\"none\": no config) ($NIX8S_SSH_CONFIG)")
	fs.DurationVar(&o.ops.ConnectTimeout, "connect-timeout", remote.DefaultConnectTimeout, "give up connecting over ssh after `DURATION`")
	fs.StringVar(&o.ops.NixosAnywhere, "nixos-anywhere", envOr(getenv, "NIX8S_NIXOS_ANYWHERE", "nixos-anywhere"), "the nixos-anywhere `PROGRAM` ($NIX8S_NIXOS_ANYWHERE)")
	fs.StringVar(&o.ops.NixosRebuild, "nixos-rebuild", envOr(getenv, "NIX8S_NIXOS_REBUILD", "nixos-rebuild"), "the nixos-rebuild `PROGRAM` ($NIX8S_NIXOS_REBUILD)")
	fs.StringVar(&o.ops.SecretsDir, "secrets", getenv("NIX8S_SECRETS_DIR"), "read cluster tokens from `DIR`/<cluster>.yaml, as nix8s gen-secrets writes them ($NIX8S_SECRETS_DIR; default <state-dir>/secrets; \"none\": deliver no token files)")
	fs.StringVar(&o.ops.Sops, "sops", getenv("NIX8S_SOPS"), "the sops `PROGRAM` that decrypts encrypted secrets ($NIX8S_SOPS; default sops on PATH)")
	fs.StringVar(&o.ops.ExtraFiles, "extra-files", getenv("NIX8S_EXTRA_FILES"), "also deliver `DIR`/<cluster>-<member>/ onto each member's / on install ($NIX8S_EXTRA_FILES)")
	fs.DurationVar(&o.ops.InstallTimeout, "install-timeout", time.Hour, "give up on one member's nixos-anywhere after `DURATION`")
	fs.DurationVar(&o.ops.WaitTimeout, "wait-timeout", provision.DefaultWaitTimeout, "give up waiting for a member to be ready after `DURATION`")
	fs.DurationVar(&o.ops.JoinTokenTTL, "join-token-ttl", provision.DefaultJoinTokenTTL, "let an agent's own k3s join token expire after `DURATION` unless it is deleted once the agent is Ready")
	fs.DurationVar(&o.ops.DrainTimeout, "drain-timeout", rollout.DefaultDrainTimeout, "give up draining one node in a rollout after `DURATION`")
	fs.IntVar(&o.jobs, "jobs", jobs.DefaultConcurrency, "run at most `N` jobs at once")
	fs.DurationVar(&o.jobTimeout, "job-timeout", jobs.DefaultTimeout, "fail a job still running after `DURATION`")
	fs.StringVar(&o.config, "config", getenv("NIX8S_CONFIG"), "replace the stored inventory with the config in `FILE` (YAML or JSON) at start, as PUT /v1/config does; with --flake, the flake is only read ($NIX8S_CONFIG)")
	fs.StringVar(&o.kubeconfig, "kubeconfig", getenv("NIX8S_KUBECONFIG"), "reach each cluster's API server through the context named after it in `FILE` (as 'nix8s kubeconfig --merge' writes) instead of fetching the admin kubeconfig over ssh ($NIX8S_KUBECONFIG)")
	// Timeouts and caps of the listener: idle or slow clients cannot hold the daemon's file descriptors, and an
	// idle flood gives way to a newcomer (internal/conns).
	fs.DurationVar(&o.http.ReadHeader, "http-header-timeout", conns.DefaultTimeouts.ReadHeader, "close a connection that has not sent a request's header within `DURATION`")
	fs.DurationVar(&o.http.Read, "http-read-timeout", conns.DefaultTimeouts.Read, "close a connection whose request (header and body) took longer than `DURATION`")
	fs.DurationVar(&o.http.Write, "http-write-timeout", conns.DefaultTimeouts.Write, "give up on a response not written within `DURATION` (image downloads: on one that takes less than 1 MiB per 32 s instead)")
	fs.DurationVar(&o.http.Idle, "http-idle-timeout", conns.DefaultTimeouts.Idle, "close a keep-alive connection idle for `DURATION`")
	fs.IntVar(&o.maxConns, "http-max-conns", 0, "keep at most `N` connections open; over it, the longest-idle one is closed for a new one (default: half the file descriptor limit, at most 4096; with --machine-listen a quarter of that)")
	fs.IntVar(&o.maxClientConns, "http-max-client-conns", 64, "keep at most `N` connections of one client address open, the same way (0: no cap)")
	// The machine-facing listener: the same kinds of limits, its own values.
	fs.StringVar(&o.machine.listen, "machine-listen", getenv("NIX8S_MACHINE_LISTEN"), "serve /boot and /machine/v1 on `ADDR`ess instead of --listen, which then serves only the operator API, health and metrics; the URLs network boot hands out use its port ($NIX8S_MACHINE_LISTEN)")
	fs.DurationVar(&o.machine.http.ReadHeader, "machine-http-header-timeout", 0, "--http-header-timeout of the --machine-listen listener (default: the same)")
	fs.DurationVar(&o.machine.http.Read, "machine-http-read-timeout", 0, "--http-read-timeout of the --machine-listen listener (default: the same)")
	fs.DurationVar(&o.machine.http.Write, "machine-http-write-timeout", 0, "--http-write-timeout of the --machine-listen listener (default: the same)")
	fs.DurationVar(&o.machine.http.Idle, "machine-http-idle-timeout", 0, "--http-idle-timeout of the --machine-listen listener (default: the same)")
	fs.IntVar(&o.machine.maxConns, "machine-http-max-conns", 0, "keep at most `N` connections open on the --machine-listen listener, as --http-max-conns does (default: three quarters of half the file descriptor limit, at most 4096; --http-max-conns keeps the rest)")
	fs.IntVar(&o.machine.maxClientConns, "machine-http-max-client-conns", 16, "keep at most `N` connections of one client address open on the --machine-listen listener (0: no cap)")
	o.pxe.bind(fs, getenv)
}

// serveCommand is nix8sd serve: the flags, then the daemon's parts, each made once with what it works with
// (the inventory first: everything else reads the plan there), then the loops until ctx ends.
func serveCommand(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	var o serveOptions
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	o.bind(fs, getenv)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{"serve takes no arguments"}
	}
	log, err := o.logger(stderr)
	if err != nil {
		return usageError{err.Error()}
	}
	slog.SetDefault(log)

	ev, err := core.New(core.Options{Lib: nix8s.Lib, LibDir: o.lib, CacheDir: filepath.Join(o.stateDir, "cache")})
	if err != nil {
		return err
	}
	st, stop, err := o.openStore(ctx, log)
	if err != nil {
		return err
	}
	defer stop()
	if err := st.Migrate(ctx); err != nil {
		return err
	}
	restore, err := useTempDir(o.stateDir, log)
	if err != nil {
		return err
	}
	defer restore()
	if err := o.ensureTokenFiles(ctx, st); err != nil {
		return err
	}
	// Everything is checked before anything is stored or served: the config file, network boot's view of it,
	// the interface, the ports.
	var fileCfg map[string]any
	if o.config != "" {
		if fileCfg, err = readConfig(o.config); err != nil {
			return err
		}
	}
	ls, err := o.openListeners()
	if err != nil {
		return err
	}
	defer ls.close()

	ws, flakeDir := o.workspace()
	actor := daemonActor()
	reg := prometheus.NewRegistry()
	inv := inventory.New(inventory.Options{Store: st, Core: ev, Workspace: ws, Logger: log})
	runner := &jobs.Runner{Store: st, Planner: inv, Config: o.operations(flakeDir), KubeconfigFile: o.kubeconfig,
		Worker: actor, Concurrency: o.jobs, Timeout: o.jobTimeout, Logger: log}
	// The clusters' API servers say when a node registered (joined) and is Ready (ready).
	watcher := &nodewatch.Watcher{Store: st, Clients: runner.NodeClient, HostNames: inv.HostNames, Interval: o.pxe.nodeWatch, Logger: log.With("component", "nodewatch"),
		// In a Cozystack cluster not bootstrapped yet, registered counts as ready (docs/cozystack.md).
		Cozystack: func(ctx context.Context, cluster string) (bool, error) {
			c, err := inv.ClusterPlan(ctx, cluster)
			return c.Cozystack != nil, err
		}}
	var boot *pxeServices
	var bootHandler http.Handler
	if o.pxe.enabled() {
		cfg := fileCfg
		if cfg == nil {
			snap, err := st.Snapshot(ctx)
			if err != nil {
				return err
			}
			cfg = snap.Config
		}
		deps := pxeDeps{core: ev, store: st, inv: inv, runner: runner, onArm: watcher.ForgetOldNode, reg: reg, log: log}
		if boot, err = setupPXE(ctx, &o.pxe, deps, cfg, fileCfg != nil, ls.machineAddr(), flakeDir); err != nil {
			return err
		}
		defer boot.closeUnlessRunning()
		bootHandler = boot.http
	}
	srv := api.New(api.Options{Store: st, Inventory: inv, Logger: log, Registry: reg, Operations: runner,
		Boot: bootHandler, OnReinstall: watcher.ForgetOldNode})
	if err := loadInventory(ctx, inv, o.config, fileCfg, actor, log); err != nil {
		return err
	}
	if boot != nil {
		if err := boot.assign(ctx, st); err != nil {
			return err
		}
	}
	l := &loops{st: st, runner: runner, watcher: watcher, boot: boot, servers: o.servers(ls, srv, reg, flakeDir, log),
		actor: actor, expireEvery: o.expireEvery, shutdownWait: o.shutdownWait, buildDiscovery: o.pxe.discovery && o.pxe.images == "", log: log}
	return l.run(ctx)
}

// daemonActor names this daemon in the jobs it claims and the machines' event log.
func daemonActor() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("nix8sd:%s:%d", host, os.Getpid())
}

// useTempDir points TMPDIR at a directory of this daemon's own under stateDir, where the jobs' secret
// temporary files (extra files, token files) go, after removing what a daemon that died left there. restore
// puts TMPDIR back and removes the directory.
func useTempDir(stateDir string, log *slog.Logger) (restore func(), err error) {
	tmp, swept, err := jobs.OpenTempDir(stateDir)
	if err != nil {
		return nil, fmt.Errorf("the temporary directory in %s: %w", stateDir, err)
	}
	for _, dir := range swept {
		log.Warn("removed the temporary files of a daemon that stopped without cleaning up", "dir", dir)
	}
	old, had := os.LookupEnv("TMPDIR")
	os.Setenv("TMPDIR", tmp.Dir)
	return func() {
		if had {
			os.Setenv("TMPDIR", old)
		} else {
			os.Unsetenv("TMPDIR")
		}
		tmp.Close()
	}, nil
}

// ensureTokenFiles makes the tokens of --admin-token-file and --read-token-file valid API tokens.
func (o *serveOptions) ensureTokenFiles(ctx context.Context, st *store.Store) error {
	for _, tf := range []struct{ file, scope string }{{o.adminTokenFile, "admin"}, {o.readTokenFile, "read"}} {
		if tf.file == "" {
			continue
		}
		b, err := os.ReadFile(tf.file)
		if err != nil {
			return fmt.Errorf("reading the %s token: %w", tf.scope, err)
		}
		err = st.EnsureToken(ctx, tf.scope+"-token-file", strings.TrimSpace(string(b)), tf.scope)
		var revoked *store.RevokedError
		if errors.As(err, &revoked) {
			// Starting anyway would leave the clients of this file with 401s and no word why at the daemon.
			return fmt.Errorf("%s (--%s-token-file): %w; put a new token in the file ('nix8sd token create --print-only > %s') and start again",
				tf.file, tf.scope, err, tf.file)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", tf.file, err)
		}
	}
	return nil
}

// workspace is where the inventory is rendered (nil: nowhere) and the flake the operations build from.
func (o *serveOptions) workspace() (*nixgen.Workspace, string) {
	switch {
	case o.flake != "" && o.config != "":
		// The flake is the source of the config (the pxe-server app: a store path): read it, never write it.
		return nil, o.flake
	case o.flake != "":
		return &nixgen.Workspace{Dir: o.flake, UserFlake: true}, o.flake
	}
	ws := &nixgen.Workspace{Dir: filepath.Join(o.stateDir, "flake"), FlakeRef: o.flakeRef}
	return ws, ws.Dir
}

// operations is the jobs' configuration: the flags, the flake, the secrets directory resolved.
func (o *serveOptions) operations(flake string) jobs.Config {
	c := o.ops
	switch c.SecretsDir {
	case "":
		c.SecretsDir = filepath.Join(o.stateDir, "secrets")
	case "none":
		c.SecretsDir = ""
	}
	c.Flake = flake
	return c
}

// listeners are the daemon's sockets for HTTP: the operator API's (--listen) and, with --machine-listen, the
// machines' own.
type listeners struct {
	api, machine net.Listener // machine: nil without --machine-listen
}

// openListeners opens the listeners, sharing one budget of file descriptors (defaultMaxConns) between them:
// with a machine listener, it takes three quarters unless the flags say otherwise.
func (o *serveOptions) openListeners() (*listeners, error) {
	budget := defaultMaxConns()
	if o.machine.listen != "" {
		o.machine.maxConns = cmp.Or(max(o.machine.maxConns, 0), budget-budget/4)
		budget /= 4
	}
	if o.maxConns <= 0 {
		o.maxConns = budget
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", o.listen, err)
	}
	ls := &listeners{api: ln}
	if o.machine.listen != "" {
		if ls.machine, err = net.Listen("tcp", o.machine.listen); err != nil {
			ln.Close()
			return nil, fmt.Errorf("listening on %s (--machine-listen): %w", o.machine.listen, err)
		}
	}
	return ls, nil
}

// machineAddr is where machines reach the daemon: the URLs of network boot name its port.
func (l *listeners) machineAddr() string {
	if l.machine != nil {
		return l.machine.Addr().String()
	}
	return l.api.Addr().String()
}

func (l *listeners) close() {
	l.api.Close()
	if l.machine != nil {
		l.machine.Close()
	}
}

// served is one HTTP server on its listener, capped by its limiter.
type served struct {
	server  *http.Server
	ln      net.Listener
	limiter *conns.Limiter
}

// servers are the HTTP servers of h on the listeners: with a machine listener, it serves the machine-facing
// endpoints of h and the API listener everything else.
func (o *serveOptions) servers(ls *listeners, h http.Handler, reg prometheus.Registerer, flake string, log *slog.Logger) []served {
	apiHandler := h
	if ls.machine != nil {
		apiHandler = withoutMachinePaths(h)
	}
	limiter := newLimiter(reg, "nix8s_http_connections", "the API listener", "--http-max-conns", o.maxConns, o.maxClientConns)
	out := []served{{server: o.http.Server(apiHandler, limiter), ln: ls.api, limiter: limiter}}
	log.Info("nix8sd serving", "addr", ls.api.Addr().String(), "flake", flake, "maxConns", o.maxConns)
	if ls.machine != nil {
		mlimiter := newLimiter(reg, "nix8s_machine_http_connections", "the machine listener", "--machine-http-max-conns", o.machine.maxConns, o.machine.maxClientConns)
		mt := o.machine.http
		mt.ReadHeader, mt.Read = cmp.Or(mt.ReadHeader, o.http.ReadHeader), cmp.Or(mt.Read, o.http.Read)
		mt.Write, mt.Idle = cmp.Or(mt.Write, o.http.Write), cmp.Or(mt.Idle, o.http.Idle)
		out = append(out, served{server: mt.Server(machineOnly(h), mlimiter), ln: ls.machine, limiter: mlimiter})
		log.Info("nix8sd serving the machine-facing endpoints", "addr", ls.machine.Addr().String(), "maxConns", o.machine.maxConns)
	}
	return out
}

// loops are what a started nix8sd runs until it stops.
type loops struct {
	st             *store.Store
	runner         *jobs.Runner
	watcher        *nodewatch.Watcher
	boot           *pxeServices // nil without network boot
	servers        []served
	actor          string
	expireEvery    time.Duration
	shutdownWait   time.Duration
	buildDiscovery bool // build the discovery image in the background
	log            *slog.Logger
}

// run runs the daemon's loops until ctx ends or a listener or network boot fails, then shuts down: the
// listeners first (in-flight requests finish within shutdownWait), then the jobs, which saw ctx end and are
// recorded as failed before the database goes away.
func (l *loops) run(ctx context.Context) error {
	go l.watcher.Run(ctx)
	pxeDone := make(chan error, 1)
	if l.boot != nil {
		l.boot.running = true
		go func() { pxeDone <- l.boot.server.Run(ctx) }()
		if l.buildDiscovery {
			go l.boot.buildDiscovery(ctx)
		}
	}
	// Jobs: every daemon sharing the database runs this; the database hands each job to one.
	runnerDone := make(chan struct{})
	go func() { defer close(runnerDone); l.runner.Run(ctx) }()
	go l.expireDeadlines(ctx)

	errc := make(chan error, len(l.servers))
	for _, s := range l.servers {
		go func() { errc <- s.server.Serve(s.limiter.Listen(s.ln)) }()
	}
	select {
	case err := <-errc:
		return err
	case err := <-pxeDone:
		if err != nil {
			return fmt.Errorf("network boot: %w", err)
		}
	case <-ctx.Done():
	}
	l.log.Info("shutting down", "timeout", l.shutdownWait)
	sctx, cancel := context.WithTimeout(context.Background(), l.shutdownWait)
	defer cancel()
	for _, s := range l.servers {
		if err := s.server.Shutdown(sctx); err != nil {
			return fmt.Errorf("shutting down: %w", err)
		}
	}
	select {
	case <-runnerDone:
	case <-sctx.Done():
		l.log.Warn("jobs still running at shutdown; another daemon requeues them after their lease")
	}
	for range l.servers {
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	l.log.Info("stopped")
	return nil
}

// expireDeadlines moves machines past their state deadline to the failed states and requeues the jobs of
// silent workers, every expireEvery until ctx ends. Every daemon sharing the database may run this; the
// database hands each machine to one.
func (l *loops) expireDeadlines(ctx context.Context) {
	t := time.NewTicker(l.expireEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := l.st.ExpireDeadlines(ctx, l.actor)
		if err != nil && ctx.Err() == nil {
			l.log.Error("expiring state deadlines", "err", err)
		} else if n > 0 {
			l.log.Info("machines past their state deadline moved to failed states", "count", n)
		}
		if n, err := l.st.RequeueStaleJobs(ctx, 2*time.Minute); err != nil && ctx.Err() == nil {
			l.log.Error("requeueing jobs of silent workers", "err", err)
		} else if n > 0 {
			l.log.Warn("jobs of silent workers put back in the queue", "count", n)
		}
	}
}

// newLimiter is a listener's connection limiter with its metrics: name (open now) and name_refused_total.
func newLimiter(reg prometheus.Registerer, name, what, flag string, maxConns, perClient int) *conns.Limiter {
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name + "_refused_total",
		Help: "Connections " + what + " closed at its caps: evicted (an idle one made room), full (every one was busy)."}, []string{"reason"})
	refused.WithLabelValues("evicted")
	refused.WithLabelValues("full")
	l := &conns.Limiter{Max: maxConns, PerClient: perClient, Refused: func(r string) { refused.WithLabelValues(r).Inc() }}
	reg.MustRegister(refused, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name,
		Help: "Connections open on " + what + " (at most " + flag + ")."}, func() float64 { return float64(l.Open()) }))
	return l
}

// machinePath: the machine-facing endpoints, /boot/ and /machine/v1/ (the API's routes for internal/pxe).
func machinePath(p string) bool {
	return strings.HasPrefix(p, "/boot/") || strings.HasPrefix(p, "/machine/v1/")
}

// machineOnly serves the machine-facing endpoints of h and answers everything else, the operator API above
// all, 404 in the API's error shape: the provisioning LAN never reaches /v1, /metrics or /readyz there.
func machineOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The router matches the escaped path when it differs: both must be machine paths. A path with
		// dot segments would get a redirect to its clean form, which may be anything: not here.
		if machinePath(r.URL.Path) && machinePath(r.URL.EscapedPath()) && path.Clean(r.URL.Path) == r.URL.Path {
			h.ServeHTTP(w, r)
			return
		}
		notFound(w, "no such endpoint on the machine listener (--machine-listen): "+r.URL.EscapedPath()+"; the operator API is on --listen")
	})
}

// withoutMachinePaths is h without the machine-facing endpoints, which the machine listener serves: a slow
// download from the provisioning LAN cannot hold the operator listener's connections either.
func withoutMachinePaths(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if machinePath(r.URL.Path) || machinePath(r.URL.EscapedPath()) {
			notFound(w, "network boot is served on the machine listener (--machine-listen), not here: "+r.URL.EscapedPath())
			return
		}
		h.ServeHTTP(w, r)
	})
}

// notFound answers 404 in the shape of the API's errors (internal/api Error).
func notFound(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotFound)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(map[string]any{"code": "not_found", "message": msg, "details": []any{}})
}

// defaultMaxConns is half the file descriptor limit (Go raises the soft limit to the hard one at start), at
// most 4096: the other half is for the database, the state files, the PXE sockets and the jobs' programs.
func defaultMaxConns() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur < 64 {
		return 512
	}
	return int(min(rl.Cur/2, 4096))
}

// readConfig reads the config file of serve --config.
func readConfig(path string) (map[string]any, error) {
	v, err := core.LoadFile(path)
	if err != nil {
		return nil, err
	}
	cfg, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: the config must be a mapping with nodes, clusters and provisioning", path)
	}
	return cfg, nil
}

// loadInventory replaces the stored inventory with cfg from path (serve --config) or, without one, renders
// the stored inventory into the workspace. A config the core refuses stops the daemon before anything is
// served, with every error and its path; the stored inventory is kept.
func loadInventory(ctx context.Context, inv *inventory.Inventory, path string, cfg map[string]any, actor string, log *slog.Logger) error {
	if cfg == nil {
		inv.Render(ctx)
		return nil
	}
	warnings, err := inv.Replace(ctx, actor, cfg)
	var invalid *core.InvalidError
	if errors.As(err, &invalid) {
		return &reportError{what: path, report: invalid.Report}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, w := range warnings {
		log.Warn("config", "path", w.Path, "warning", w.Message)
	}
	log.Info("inventory loaded", "file", path)
	return nil
}
