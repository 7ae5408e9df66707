// Package jobs runs the operations inside nix8sd: a Runner claims queued jobs from the database (SKIP LOCKED,
// so of several daemons sharing one database exactly one runs each job), runs them with a deadline, streams
// their progress into the job's log and records how they ended and what they produced. The operations
// themselves are the ones the nix8s CLI runs (internal/provision, internal/kubeconfig, internal/rollout);
// this package only feeds them the stored inventory and reports back.
package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/progress"
	"github.com/nix8s/nix8s/internal/rollout"
	"github.com/nix8s/nix8s/internal/store"
)

// Defaults of Runner.
const (
	DefaultConcurrency = 2
	DefaultTimeout     = 2 * time.Hour
	DefaultPoll        = 2 * time.Second
	// DefaultHeartbeat is well inside the 2 minute lease after which another daemon requeues a silent job.
	DefaultHeartbeat = 30 * time.Second
)

// Handler runs one job of its kind. Progress goes to log, one line at a time; result (JSON-encodable, may
// be nil) is recorded whether or not err is nil.
type Handler func(ctx context.Context, j *store.Job, log io.Writer) (result any, err error)

// Planner is the core's plan of the stored inventory: one cluster's plan, each member with its ssh endpoint
// (*inventory.Inventory implements it).
type Planner interface {
	ClusterPlan(ctx context.Context, name string) (core.Cluster, error)
}

// Runner claims and runs jobs. Fill in the fields, then call Run.
type Runner struct {
	// Store holds the jobs and machines.
	Store *store.Store
	// Planner plans clusters when a job starts (not when it was queued: the inventory may have moved).
	Planner Planner
	// Config says how the operations reach machines and flakes.
	Config Config
	// KubeconfigFile, when set, is how the daemon's own uses of a cluster's API server (NodeClient) reach
	// it: the context named after the cluster in this file (nix8sd serve --kubeconfig) instead of the admin
	// kubeconfig fetched over ssh.
	KubeconfigFile string
	// Worker names this daemon in the jobs it claims; default <hostname>:<pid>.
	Worker string
	// Concurrency bounds the jobs this daemon runs at once; default DefaultConcurrency.
	Concurrency int
	// Timeout bounds one job; default DefaultTimeout. Running out of time fails the job.
	Timeout time.Duration
	// Poll is how often the queue is looked at when nobody calls Wake; default DefaultPoll.
	Poll time.Duration
	// Heartbeat is how often a running job tells the database it is alive; default DefaultHeartbeat.
	Heartbeat time.Duration
	// Logger gets one line per job start and end; default slog.Default().
	Logger *slog.Logger

	once     sync.Once
	wake     chan struct{}
	mu       sync.Mutex
	handlers map[string]Handler
}

func (r *Runner) init() {
	r.once.Do(func() {
		r.wake = make(chan struct{}, 1)
		if r.Worker == "" {
			host, _ := os.Hostname()
			r.Worker = fmt.Sprintf("%s:%d", host, os.Getpid())
		}
		if r.Concurrency <= 0 {
			r.Concurrency = DefaultConcurrency
		}
		if r.Timeout <= 0 {
			r.Timeout = DefaultTimeout
		}
		if r.Poll <= 0 {
			r.Poll = DefaultPoll
		}
		if r.Heartbeat <= 0 {
			r.Heartbeat = DefaultHeartbeat
		}
		if r.Logger == nil {
			r.Logger = slog.Default()
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.handlers == nil {
			r.handlers = map[string]Handler{}
		}
		for kind, h := range r.builtin() {
			if _, ok := r.handlers[kind]; !ok {
				r.handlers[kind] = h
			}
		}
	})
}

// builtin are the operations' handlers.
func (r *Runner) builtin() map[string]Handler {
	return map[string]Handler{KindInstall: r.install, KindRollout: r.rollout, KindDeliverSecrets: r.deliverSecrets,
		KindCozystackBootstrap: r.cozystackBootstrap}
}

// Handle sets the handler of kind, replacing a built-in one (install, rollout, deliver-secrets).
func (r *Runner) Handle(kind string, h Handler) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.handlers == nil {
		r.handlers = map[string]Handler{}
	}
	r.handlers[kind] = h
}

func (r *Runner) handler(kind string) Handler {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.handlers[kind]
}

// NodeClient reaches cluster's API server for the daemon's own uses (node status, forgetting the old Node of
// a reinstalled member: internal/nodewatch): through KubeconfigFile when set, else as ClusterClient does, on the
// cluster's current plan.
func (r *Runner) NodeClient(ctx context.Context, cluster string) (kubernetes.Interface, error) {
	if r.KubeconfigFile != "" {
		client, _, err := rollout.NewClient(cluster, rollout.ClientOptions{Kubeconfig: r.KubeconfigFile, Context: cluster})
		return client, err
	}
	c, err := r.Planner.ClusterPlan(ctx, cluster)
	if err != nil {
		return nil, err
	}
	client, _, _, err := r.ClusterClient(ctx, c)
	return client, err
}

// Installed queues the delivery of the secrets of the member whose machine mac a network install put on its
// disk, pinned to the hostKey the installer reported (storeboot.Adapter.OnInstalled). A failure is logged:
// the installer's report is recorded either way.
func (r *Runner) Installed(ctx context.Context, mac, hostKey string) {
	r.init()
	m, err := r.Store.Machine(ctx, mac)
	if err == nil && (m.Cluster == nil || m.Member == nil) {
		err = errors.New("not assigned")
	}
	if err == nil {
		_, err = r.QueueDeliverSecrets(context.WithoutCancel(ctx), *m.Cluster, *m.Member, mac, hostKey)
	}
	if err != nil {
		r.Logger.Error("could not queue the delivery of the installed machine's secrets", "mac", mac, "err", err)
	}
}

// Wake makes Run look at the queue now (the API calls it after queueing a job).
func (r *Runner) Wake() {
	r.init()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run claims and runs jobs until ctx ends, then waits for the running ones: their context is cancelled
// with ctx, so they end failed ("nix8sd stopped while the job ran").
func (r *Runner) Run(ctx context.Context) {
	r.init()
	sem := make(chan struct{}, r.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		j, err := r.Store.ClaimJob(ctx, r.Worker)
		if err != nil || j == nil {
			<-sem
			if err != nil && ctx.Err() == nil {
				r.Logger.Error("claiming a job", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-r.wake:
			case <-time.After(r.Poll):
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r.run(ctx, j)
		}()
		// Another job may be waiting: look again at once.
		r.Wake()
	}
}

// run runs one claimed job to its end and records it.
func (r *Runner) run(ctx context.Context, j *store.Job) {
	start := time.Now()
	log := r.Logger.With("job", j.ID, "kind", j.Kind)
	log.Info("job started")
	// The job's own records must land even when ctx is what ended it.
	keep := context.WithoutCancel(ctx)
	lw := &logWriter{st: r.Store, id: j.ID, ctx: keep}
	jctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()

	hbDone := make(chan struct{})
	go func() {
		t := time.NewTicker(r.Heartbeat)
		defer t.Stop()
		for {
			select {
			case <-hbDone:
				return
			case <-t.C:
				lw.heartbeat()
			}
		}
	}()

	result, err := r.call(jctx, j, lw)
	close(hbDone)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		err = fmt.Errorf("nix8sd stopped while the job ran: %w", err)
	case errors.Is(jctx.Err(), context.DeadlineExceeded):
		err = fmt.Errorf("job timed out after %s: %w", r.Timeout, err)
	}
	if err != nil {
		fmt.Fprintf(lw, "nix8s: error: %v\n", err)
		var hint *core.HintError
		if errors.As(err, &hint) && hint.Hint != "" {
			fmt.Fprintf(lw, "nix8s: hint: %s\n", hint.Hint)
		}
	}
	lw.Close()

	fctx, fcancel := context.WithTimeout(keep, 30*time.Second)
	defer fcancel()
	if result != nil {
		data, jerr := json.Marshal(result)
		if jerr == nil {
			jerr = r.Store.SetJobResult(fctx, j.ID, data)
		}
		if jerr != nil {
			log.Error("recording the job's result", "err", jerr)
		}
	}
	status, msg := "succeeded", ""
	if err != nil {
		status, msg = "failed", err.Error()
	}
	if _, ferr := r.Store.FinishJob(fctx, j.ID, status, msg); ferr != nil {
		log.Error("recording the job's end", "err", ferr)
		return
	}
	log.Info("job finished", "status", status, "duration", time.Since(start).Round(time.Millisecond), "err", msg)
}

// call runs j's handler; a panic fails the job instead of the daemon.
func (r *Runner) call(ctx context.Context, j *store.Job, lw io.Writer) (result any, err error) {
	h := r.handler(j.Kind)
	if h == nil {
		return nil, fmt.Errorf("this nix8sd has no handler for jobs of kind %q", j.Kind)
	}
	defer func() {
		if p := recover(); p != nil {
			r.Logger.Error("job panicked", "job", j.ID, "panic", p, "stack", string(debug.Stack()))
			result, err = nil, fmt.Errorf("internal error: %v (see the daemon's log)", p)
		}
	}()
	return h(ctx, j, lw)
}

// logWriter appends whole lines to a job's log as they come (progress.LineWriter: all the lines of one Write
// in one append); Close appends what is left.
type logWriter struct {
	st  *store.Store
	id  int64
	ctx context.Context

	once  sync.Once
	lines *progress.LineWriter
	mu    sync.Mutex // serialises appends
}

func (w *logWriter) writer() *progress.LineWriter {
	w.once.Do(func() {
		w.lines = progress.NewLineWriter(func(lines []string) {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.append(strings.Join(lines, "\n") + "\n")
		})
	})
	return w.lines
}

func (w *logWriter) Write(p []byte) (int, error) { return w.writer().Write(p) }

func (w *logWriter) heartbeat() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.append("")
}

// Close appends an unfinished last line.
func (w *logWriter) Close() error {
	w.writer().Flush()
	return nil
}

// append writes text (and the heartbeat) to the database; the log is the job's record, so a failed write is
// only reported on the daemon's log, never fails the operation.
func (w *logWriter) append(text string) {
	ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
	defer cancel()
	if err := w.st.AppendJobLog(ctx, w.id, text); err != nil {
		slog.Error("appending to the job log", "job", w.id, "err", err)
	}
}
