package inventory_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nix8s/nix8s"
	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/inventory"
	"github.com/nix8s/nix8s/internal/pgtest"
	"github.com/nix8s/nix8s/internal/store"
	"github.com/nix8s/nix8s/internal/store/storetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// counting is the real core, counting its evaluations.
type counting struct {
	*core.Evaluator
	n  atomic.Int32
	id string
}

func (c *counting) Plan(ctx context.Context, cfg any) (*core.Planned, error) {
	c.n.Add(1)
	return c.Evaluator.Plan(ctx, cfg)
}

func (c *counting) PlanStored(ctx context.Context, cfg any) (*core.Planned, error) {
	c.n.Add(1)
	return c.Evaluator.PlanStored(ctx, cfg)
}

func (c *counting) ID() string { return c.id }

func newCore(t *testing.T, id string) *counting {
	t.Helper()
	ev, err := core.New(core.Options{Lib: nix8s.Lib, CacheDir: filepath.Join(t.TempDir(), "cache")})
	if err != nil {
		t.Fatal(err)
	}
	if id == "" {
		id = ev.ID()
	}
	return &counting{Evaluator: ev, id: id}
}

const cfg = `{"nodes": {"vm": {"install": {"disk": "/dev/vda"}}}, "clusters": {"dev": {"ha": {"enable": true, "vip": "192.168.1.100"}, "members": {
  "s1": {"node": "vm", "role": "server", "ip": "192.168.1.10"},
  "s2": {"node": "vm", "role": "server", "ip": "192.168.1.11"},
  "s3": {"node": "vm", "role": "server", "ip": "192.168.1.12"},
  "a1": {"node": "vm", "role": "agent", "ip": "192.168.1.20"},
  "a2": {"node": "vm", "role": "agent", "ip": "192.168.1.21"}}}}}`

func write(t *testing.T, st *store.Store, config string) int64 {
	t.Helper()
	var c map[string]any
	if err := json.Unmarshal([]byte(config), &c); err != nil {
		t.Fatal(err)
	}
	v, err := st.Modify(context.Background(), "test", func(*store.Snapshot) (map[string]any, error) { return c, nil })
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// A boot storm right after an inventory change: every request waiting for the new plan shares one evaluation,
// and a second daemon on the same database (same core) reads the stored plan instead of evaluating.
func TestOneEvaluationPerInventoryVersion(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	v := write(t, st, cfg)
	c := newCore(t, "")
	plans := inventory.NewPlans(st, c, nil)
	plans.Fresh = -1 // another writer's change below must be seen at once

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := plans.Cluster(ctx, "dev")
			if err == nil && cl.Version != v {
				err = errors.New("plan of another version")
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := c.n.Load(); n != 1 {
		t.Fatalf("64 concurrent readers of one inventory version: %d evaluations, want 1", n)
	}

	other := newCore(t, "")
	if _, err := inventory.NewPlans(st, other, nil).Cluster(ctx, "dev"); err != nil {
		t.Fatal(err)
	}
	if n := other.n.Load(); n != 0 {
		t.Errorf("a second daemon with the same core evaluated %d times; want the stored plan", n)
	}
	newer := newCore(t, "another-core")
	if _, err := inventory.NewPlans(st, newer, nil).Cluster(ctx, "dev"); err != nil {
		t.Fatal(err)
	}
	if n := newer.n.Load(); n != 1 {
		t.Errorf("a daemon with another core evaluated %d times; want 1 (a plan is only as good as its core)", n)
	}

	// The next version is evaluated once more, and the stored plans of older versions go.
	v2 := write(t, st, `{"nodes": {"vm": {"install": {"disk": "/dev/vda"}}}, "clusters": {"dev": {"members": {
  "s1": {"node": "vm", "role": "server", "ip": "192.168.1.10"}}}}}`)
	cl, err := plans.Cluster(ctx, "dev")
	if err != nil || cl.Version != v2 || len(cl.Members) != 1 {
		t.Fatalf("after the change: %+v, %v; want version %d with one member", cl, err, v2)
	}
	if n := c.n.Load(); n != 2 {
		t.Errorf("%d evaluations after one change, want 2", n)
	}
	if _, err := st.StoredPlan(ctx, v, c.id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the plan of version %d is still stored: %v", v, err)
	}
	// A plan of a version that is no longer current is not stored (nobody would read it).
	if err := st.SavePlan(ctx, v, c.id, []byte(`{"clusters":{}}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.StoredPlan(ctx, v, c.id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a plan of an old version was stored: %v", err)
	}
}

// An inventory the core refuses (written around the API, or valid only for an older core) is evaluated once per
// version too, and every reader gets the core's report.
func TestInvalidInventoryOncePerVersion(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	write(t, st, `{"clusters": {"dev": {"members": {"s1": {"node": "missing", "role": "server", "ip": "192.168.1.10"}}}}}`)
	c := newCore(t, "")
	plans := inventory.NewPlans(st, c, nil)
	for range 3 {
		_, err := plans.Cluster(ctx, "dev")
		var inv *core.InvalidError
		if !errors.As(err, &inv) || len(inv.Report.Errors) == 0 || inv.Report.Errors[0].Path != "clusters.dev.members.s1.node" {
			t.Fatalf("plan of an invalid inventory: %v; want the core's report naming clusters.dev.members.s1.node", err)
		}
	}
	if n := c.n.Load(); n != 1 {
		t.Errorf("%d evaluations of one invalid version, want 1", n)
	}
}

// The join-order index: the first server alone, each other server alone, then every agent together.
func TestWavesAndBefore(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	write(t, st, cfg)
	cl, err := inventory.NewPlans(st, newCore(t, ""), nil).Cluster(ctx, "dev")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		member string
		wave   int
		before []string
	}{
		{"the first server waits for nobody", "s1", 0, nil},
		{"the second server waits for the first", "s2", 1, []string{"s1"}},
		{"the third server waits for both", "s3", 2, []string{"s1", "s2"}},
		{"agents wait for every server", "a2", 3, []string{"s1", "s2", "s3"}},
		{"an unknown member has no wave", "zz", -1, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if w := cl.Wave(tc.member); w != tc.wave {
				t.Errorf("Wave(%s) = %d, want %d", tc.member, w, tc.wave)
			}
			if b := cl.Before(tc.member); !slices.Equal(b, tc.before) {
				t.Errorf("Before(%s) = %v, want %v", tc.member, b, tc.before)
			}
		})
	}
	if _, err := inventory.NewPlans(st, newCore(t, ""), nil).Cluster(ctx, "nope"); !errors.Is(err, inventory.ErrNoCluster) {
		t.Errorf("unknown cluster: %v, want ErrNoCluster", err)
	}
}

// versions counts the inventory version queries of a store.
type versions struct {
	*store.Store
	n atomic.Int32
}

func (v *versions) InventoryVersion(ctx context.Context) (int64, error) {
	v.n.Add(1)
	return v.Store.InventoryVersion(ctx)
}

// Within Fresh a confirmed version is not asked for again (a boot storm asks once per window); a write through
// Planned is seen at once; with Fresh negative every read asks.
func TestFreshWindow(t *testing.T) {
	ctx := context.Background()
	st := &versions{Store: storetest.Open(t)}
	write(t, st.Store, cfg)
	c := newCore(t, "")
	plans := inventory.NewPlans(st, c, nil)
	plans.Fresh = time.Hour
	for range 100 {
		if _, err := plans.Cluster(ctx, "dev"); err != nil {
			t.Fatal(err)
		}
	}
	if n := st.n.Load(); n != 1 {
		t.Errorf("100 reads within the window asked for the version %d times, want 1", n)
	}
	// This daemon's own write hands its plan over: seen at once, window or not.
	var next map[string]any
	json.Unmarshal([]byte(`{"nodes": {"vm": {"install": {"disk": "/dev/vda"}}}, "clusters": {"dev": {"members": {
  "s1": {"node": "vm", "role": "server", "ip": "192.168.1.10"}}}}}`), &next)
	v, err := st.Modify(ctx, "test", func(*store.Snapshot) (map[string]any, error) { return next, nil })
	if err != nil {
		t.Fatal(err)
	}
	planned, err := c.Evaluator.Plan(ctx, next)
	if err != nil {
		t.Fatal(err)
	}
	plans.Planned(ctx, v, planned)
	if cl, err := plans.Cluster(ctx, "dev"); err != nil || cl.Version != v || len(cl.Members) != 1 {
		t.Fatalf("after a write of this daemon: %v, %v; want version %d", cl, err, v)
	}
	plans.Fresh = -1
	before := st.n.Load()
	for range 3 {
		plans.Cluster(ctx, "dev")
	}
	if n := st.n.Load() - before; n != 3 {
		t.Errorf("with Fresh < 0, 3 reads asked %d times, want 3", n)
	}
}
