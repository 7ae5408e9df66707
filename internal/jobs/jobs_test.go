package jobs

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nix8s/nix8s/internal/pgtest"
	"github.com/nix8s/nix8s/internal/store"
	"github.com/nix8s/nix8s/internal/store/storetest"
)

// The operations' handlers are tested through the API (internal/api/ops_test.go) on real sshd nodes; here
// the runner itself, with handlers written for the test, against a real PostgreSQL.

func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	pgtest.Main(m)
}

func newStore(t *testing.T) *store.Store { return storetest.Open(t) }

// start runs r until the test ends; stop ends it early and waits.
func start(t *testing.T, r *Runner) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

func waitJob(t *testing.T, st *store.Store, id int64) *store.Job {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		j, err := st.Job(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if j.Status != "queued" && j.Status != "running" {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d still %s", id, j.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunnerRecordsTheEnd(t *testing.T) {
	st := newStore(t)
	r := &Runner{Store: st, Worker: "w1", Poll: 50 * time.Millisecond, Timeout: 300 * time.Millisecond}
	r.Handle("ok", func(ctx context.Context, j *store.Job, log io.Writer) (any, error) {
		fmt.Fprint(log, "line 1\nline 2, unfinished")
		return map[string]int{"n": 1}, nil
	})
	r.Handle("fails", func(ctx context.Context, j *store.Job, log io.Writer) (any, error) {
		return map[string]string{"half": "done"}, fmt.Errorf("boom")
	})
	r.Handle("slow", func(ctx context.Context, j *store.Job, log io.Writer) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	r.Handle("panics", func(ctx context.Context, j *store.Job, log io.Writer) (any, error) {
		panic("oops")
	})
	start(t, r)
	tests := []struct {
		kind, status, err, log, result string
	}{
		{kind: "ok", status: "succeeded", log: "line 1\nline 2, unfinished\n", result: `{"n": 1}`},
		{kind: "fails", status: "failed", err: "boom", log: "nix8s: error: boom\n", result: `{"half": "done"}`},
		{kind: "slow", status: "failed", err: "job timed out after 300ms: context deadline exceeded",
			log: "nix8s: error: job timed out after 300ms: context deadline exceeded\n"},
		{kind: "panics", status: "failed", err: "internal error: oops (see the daemon's log)",
			log: "nix8s: error: internal error: oops (see the daemon's log)\n"},
		{kind: "unknown", status: "failed", err: `this nix8sd has no handler for jobs of kind "unknown"`,
			log: "nix8s: error: this nix8sd has no handler for jobs of kind \"unknown\"\n"},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			ctx := context.Background()
			j, err := st.NewJob(ctx, tt.kind, nil, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			r.Wake()
			j = waitJob(t, st, j.ID)
			gotErr := ""
			if j.Error != nil {
				gotErr = *j.Error
			}
			if j.Status != tt.status || gotErr != tt.err || j.Log != tt.log || *j.Worker != "w1" {
				t.Errorf("job: %s %q %q by %s, want %s %q %q", j.Status, gotErr, j.Log, *j.Worker, tt.status, tt.err, tt.log)
			}
			res, err := st.JobResult(ctx, j.ID)
			if err != nil || string(res) != tt.result {
				t.Errorf("result %s (%v), want %s", res, err, tt.result)
			}
		})
	}
}

// Two daemons on one database: each job runs exactly once (SKIP LOCKED), and both take part.
func TestTwoRunnersShareTheQueue(t *testing.T) {
	st := newStore(t)
	var mu sync.Mutex
	runs := map[int64]int{}
	by := map[string]int{}
	var running, most atomic.Int32
	for _, w := range []string{"w1", "w2"} {
		r := &Runner{Store: st, Worker: w, Poll: 20 * time.Millisecond, Concurrency: 2}
		r.Handle("count", func(ctx context.Context, j *store.Job, log io.Writer) (any, error) {
			n := running.Add(1)
			defer running.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			mu.Lock()
			runs[j.ID]++
			by[*j.Worker]++
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
			return nil, nil
		})
		start(t, r)
	}
	var ids []int64
	for range 30 {
		j, err := st.NewJob(context.Background(), "count", nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	for _, id := range ids {
		if j := waitJob(t, st, id); j.Status != "succeeded" {
			t.Errorf("job %d %s", id, j.Status)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		if runs[id] != 1 {
			t.Errorf("job %d ran %d times", id, runs[id])
		}
	}
	if by["w1"] == 0 || by["w2"] == 0 {
		t.Errorf("jobs by worker %v: both daemons should take part", by)
	}
	if most.Load() > 4 {
		t.Errorf("%d jobs ran at once; the two runners allow 2 each", most.Load())
	}
}

// Stopping the daemon cancels running jobs; they are recorded failed, saying why.
func TestShutdownFailsRunningJobs(t *testing.T) {
	st := newStore(t)
	r := &Runner{Store: st, Worker: "w", Poll: 20 * time.Millisecond}
	started := make(chan struct{})
	r.Handle("long", func(ctx context.Context, j *store.Job, log io.Writer) (any, error) {
		fmt.Fprintln(log, "working")
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	stop := start(t, r)
	j, _ := st.NewJob(context.Background(), "long", nil, nil, nil)
	r.Wake()
	<-started
	stop()
	j, _ = st.Job(context.Background(), j.ID)
	if j.Status != "failed" || j.Error == nil || *j.Error != "nix8sd stopped while the job ran: context canceled" ||
		!strings.HasPrefix(j.Log, "working\n") {
		t.Errorf("job after shutdown: %s %v %q", j.Status, j.Error, j.Log)
	}
}
