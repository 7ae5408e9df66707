package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"

	"github.com/nix8s/nix8s"
	"github.com/nix8s/nix8s/internal/api"
	"github.com/nix8s/nix8s/internal/conns"
	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/inventory"
	"github.com/nix8s/nix8s/internal/jobs"
	"github.com/nix8s/nix8s/internal/nixgen"
	"github.com/nix8s/nix8s/internal/nodewatch"
	"github.com/nix8s/nix8s/internal/provision"
	"github.com/nix8s/nix8s/internal/pxe/storeboot"
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
	maxDiscovered  int
}

func serveCommand(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	var o serveOptions
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	o.bind(fs, getenv)
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
	fs.IntVar(&o.maxConns, "http-max-conns", 0, "keep at most `N` connections open; over it, the longest-idle one is closed for a new one (default: half the file descriptor limit, at most 4096)")
	fs.IntVar(&o.maxClientConns, "http-max-client-conns", 64, "keep at most `N` connections of one client address open, the same way (0: no cap)")
	fs.IntVar(&o.maxDiscovered, "max-discovered", storeboot.DefaultMaxDiscovered, "refuse discover reports of new machines while `N` machines are in state discovered (0: no cap)")
	o.pxe.bind(fs, getenv)
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

	coreOpts := core.Options{Lib: nix8s.Lib, LibDir: o.lib, CacheDir: filepath.Join(o.stateDir, "cache")}
	ev, err := core.New(coreOpts)
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
	// The jobs' secret temporary files (extra files, token files) go to a directory of this daemon's own
	// under the state directory, through TMPDIR; what a daemon that died left there goes first.
	tmp, swept, err := jobs.OpenTempDir(o.stateDir)
	if err != nil {
		return fmt.Errorf("the temporary directory in %s: %w", o.stateDir, err)
	}
	defer tmp.Close()
	for _, dir := range swept {
		log.Warn("removed the temporary files of a daemon that stopped without cleaning up", "dir", dir)
	}
	if old, ok := os.LookupEnv("TMPDIR"); ok {
		defer os.Setenv("TMPDIR", old)
	} else {
		defer os.Unsetenv("TMPDIR")
	}
	os.Setenv("TMPDIR", tmp.Dir)
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
	ws := &nixgen.Workspace{Dir: filepath.Join(o.stateDir, "flake"), FlakeRef: o.flakeRef}
	flakeDir := ws.Dir
	switch {
	case o.flake != "" && o.config != "":
		// The flake is the source of the config (the pxe-server app: a store path): read it, never write it.
		ws, flakeDir = nil, o.flake
	case o.flake != "":
		ws = &nixgen.Workspace{Dir: o.flake, UserFlake: true}
		flakeDir = o.flake
	}
	switch o.ops.SecretsDir {
	case "":
		o.ops.SecretsDir = filepath.Join(o.stateDir, "secrets")
	case "none":
		o.ops.SecretsDir = ""
	}
	o.ops.Flake = flakeDir
	host, _ := os.Hostname()
	actor := fmt.Sprintf("nix8sd:%s:%d", host, os.Getpid())
	runner := &jobs.Runner{Store: st, Config: o.ops, Worker: actor, Concurrency: o.jobs, Timeout: o.jobTimeout, Logger: log}
	reg := prometheus.NewRegistry()
	// One plan cache for every reader: the API, the jobs and network boot.
	plans := inventory.NewPlans(st, ev, log)
	srv := api.New(api.Options{Store: st, Core: ev, Logger: log, Workspace: ws, Operations: runner, Registry: reg, Plans: plans})
	runner.Planner = srv
	// Everything is checked before anything is stored or served: the config file, network boot's view of it,
	// the interface, the ports.
	var fileCfg map[string]any
	if o.config != "" {
		if fileCfg, err = readConfig(o.config); err != nil {
			return err
		}
	}
	if o.maxConns <= 0 {
		o.maxConns = defaultMaxConns()
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", o.listen, err)
	}
	defer ln.Close()
	var boot *pxeServices
	if o.pxe.enabled() {
		cfg := fileCfg
		if cfg == nil {
			snap, err := st.Snapshot(ctx)
			if err != nil {
				return err
			}
			cfg = snap.Config
		}
		if boot, err = setupPXE(ctx, &o.pxe, ev, st, cfg, fileCfg != nil, ln.Addr().String(), flakeDir, reg, log); err != nil {
			return err
		}
	}
	// Until Run owns the PXE sockets, a failed start closes them.
	pxeRunning := false
	defer func() {
		if boot != nil && !pxeRunning {
			boot.server.Close()
		}
	}()
	if fileCfg != nil {
		if err := storeConfig(ctx, srv, o.config, fileCfg, actor, log); err != nil {
			return err
		}
	} else {
		srv.RenderWorkspace(ctx)
	}

	// The cluster's API servers say when a node registered (joined) and is Ready (ready).
	clusterClient := func(ctx context.Context, cluster string) (kubernetes.Interface, error) {
		if o.kubeconfig != "" {
			client, _, err := rollout.NewClient(cluster, rollout.ClientOptions{Kubeconfig: o.kubeconfig, Context: cluster})
			return client, err
		}
		c, settings, err := srv.ClusterPlan(ctx, cluster)
		if err != nil {
			return nil, err
		}
		client, _, _, err := o.ops.ClusterClient(ctx, c, settings)
		return client, err
	}
	watcher := &nodewatch.Watcher{Store: st, Clients: clusterClient, Logger: log, Interval: o.pxe.nodeWatch,
		HostNames: func(ctx context.Context, cluster string) (map[string]string, error) {
			c, err := srv.Cluster(ctx, cluster)
			if err != nil {
				return nil, err
			}
			names := map[string]string{}
			for name, m := range c.Members {
				names[name] = m.HostName
			}
			return names, nil
		}}
	// Before an install is armed, the member's old Node and k3s node password go (k3s refuses a reinstalled
	// node with a new password otherwise).
	forgetNode := func(ctx context.Context, m *store.Machine) {
		if m.Cluster == nil || m.Member == nil {
			return
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
			defer cancel()
			c, err := srv.Cluster(ctx, *m.Cluster)
			if err != nil {
				return
			}
			mp, ok := c.Members[*m.Member]
			if !ok {
				return
			}
			client, err := clusterClient(ctx, *m.Cluster)
			if err == nil {
				err = nodewatch.Forget(ctx, client, mp.HostName)
			}
			if err != nil {
				log.Warn("could not remove the old node of a reinstalled member; if k3s refuses it, delete the node and its secret <node>.node-password.k3s in kube-system",
					"member", *m.Cluster+"-"+*m.Member, "err", err)
			}
		}()
	}
	if boot != nil {
		if err := boot.assign(ctx, st); err != nil {
			return err
		}
		boot.adapter.MaxDiscovered = cmp.Or(o.maxDiscovered, -1)
		boot.wire(plans, st, runner, forgetNode)
		srv.SetBoot(boot.http, forgetNode)
	} else {
		srv.SetBoot(nil, forgetNode)
	}
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nix8s_http_connections_refused_total",
		Help: "Connections the API listener closed at its caps: evicted (an idle one made room), full (every one was busy)."}, []string{"reason"})
	refused.WithLabelValues("evicted")
	refused.WithLabelValues("full")
	limiter := &conns.Limiter{Max: o.maxConns, PerClient: o.maxClientConns, Refused: func(r string) { refused.WithLabelValues(r).Inc() }}
	reg.MustRegister(refused, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "nix8s_http_connections",
		Help: "Connections open on the API listener (at most --http-max-conns)."}, func() float64 { return float64(limiter.Open()) }))
	hs := o.http.Server(srv, limiter)
	log.Info("nix8sd serving", "addr", ln.Addr().String(), "flake", flakeDir, "maxConns", o.maxConns)
	go watcher.Run(ctx)
	pxeDone := make(chan error, 1)
	if boot != nil {
		pxeRunning = true
		go func() { pxeDone <- boot.server.Run(ctx) }()
		if o.pxe.discovery && o.pxe.images == "" {
			go boot.buildDiscovery(ctx)
		}
	}

	// Jobs: every daemon sharing the database runs this; the database hands each job to one.
	runnerDone := make(chan struct{})
	go func() { defer close(runnerDone); runner.Run(ctx) }()

	// Deadlines: every daemon sharing the database may run this; the database hands each machine to one.
	go func() {
		t := time.NewTicker(o.expireEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				n, err := st.ExpireDeadlines(ctx, actor)
				if err != nil && ctx.Err() == nil {
					log.Error("expiring state deadlines", "err", err)
				} else if n > 0 {
					log.Info("machines past their state deadline moved to failed states", "count", n)
				}
				if n, err := st.RequeueStaleJobs(ctx, 2*time.Minute); err != nil && ctx.Err() == nil {
					log.Error("requeueing jobs of silent workers", "err", err)
				} else if n > 0 {
					log.Warn("jobs of silent workers put back in the queue", "count", n)
				}
			}
		}
	}()

	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(limiter.Listen(ln)) }()
	select {
	case err := <-errc:
		return err
	case err := <-pxeDone:
		if err != nil {
			return fmt.Errorf("network boot: %w", err)
		}
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", o.shutdownWait)
	sctx, cancel := context.WithTimeout(context.Background(), o.shutdownWait)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	// Running jobs saw ctx end: they stop, and are recorded as failed, before the database goes away.
	select {
	case <-runnerDone:
	case <-sctx.Done():
		log.Warn("jobs still running at shutdown; another daemon requeues them after their lease")
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
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

// storeConfig replaces the stored inventory with cfg from path (serve --config). A config the core refuses
// stops the daemon before anything is served, with every error and its path; the stored inventory is kept.
func storeConfig(ctx context.Context, srv *api.Server, path string, cfg map[string]any, actor string, log *slog.Logger) error {
	warnings, err := srv.ReplaceConfig(ctx, actor, cfg)
	var inv *core.InvalidError
	if errors.As(err, &inv) {
		return &reportError{what: path, report: inv.Report}
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
