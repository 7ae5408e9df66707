package main

import (
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
	"time"

	"github.com/nix8s/nix8s"
	"github.com/nix8s/nix8s/internal/api"
	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/nixgen"
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
	for _, tf := range []struct{ file, scope string }{{o.adminTokenFile, "admin"}, {o.readTokenFile, "read"}} {
		if tf.file == "" {
			continue
		}
		b, err := os.ReadFile(tf.file)
		if err != nil {
			return fmt.Errorf("reading the %s token: %w", tf.scope, err)
		}
		if err := st.EnsureToken(ctx, tf.scope+"-token-file", strings.TrimSpace(string(b)), tf.scope); err != nil {
			return fmt.Errorf("%s: %w", tf.file, err)
		}
	}
	ws := &nixgen.Workspace{Dir: filepath.Join(o.stateDir, "flake"), FlakeRef: o.flakeRef}
	if o.flake != "" {
		ws = &nixgen.Workspace{Dir: o.flake, UserFlake: true}
	}
	srv := api.New(api.Options{Store: st, Core: ev, Logger: log, Workspace: ws})
	srv.RenderWorkspace(ctx)

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", o.listen, err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	log.Info("nix8sd serving", "addr", ln.Addr().String(), "flake", ws.Dir)

	// Deadlines: every daemon sharing the database may run this; the database hands each machine to one.
	host, _ := os.Hostname()
	actor := fmt.Sprintf("nix8sd:%s:%d", host, os.Getpid())
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
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", o.shutdownWait)
	sctx, cancel := context.WithTimeout(context.Background(), o.shutdownWait)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}
