// Package inventory owns the daemon's stored inventory and what it derives from it (Inventory): every change
// (validated and planned by the core in one evaluation, stored, rendered into the flake workspace) and the
// core's plan of each inventory version (Plans), evaluated once (by whichever daemon needs it first, then
// stored beside the inventory for the others) and decoded once into the structures its readers need. The REST
// API, the jobs, network boot and the node watcher all read the plan here, so a boot storm costs one map
// lookup per decision instead of a plan decoded per packet.
package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/store"
)

// Store is the part of *store.Store the plans read and write.
type Store interface {
	InventoryVersion(ctx context.Context) (int64, error)
	Snapshot(ctx context.Context) (*store.Snapshot, error)
	StoredPlan(ctx context.Context, version int64, core string) ([]byte, error)
	SavePlan(ctx context.Context, version int64, core string, plan []byte) error
}

// Core plans a config (internal/core's Evaluator). A core that also has an `ID() string` naming its content
// gets its plans stored for other daemons and restarts; without one, plans live in this process only.
type Core interface {
	Plan(ctx context.Context, cfg any) (*core.Planned, error)
}

// Plans is the plan of the current inventory, shared by every reader. Safe for concurrent use.
type Plans struct {
	store  Store
	core   Core
	coreID string
	log    *slog.Logger

	mu      sync.Mutex
	cur     *Plan
	checked time.Time // when cur was last confirmed to be the stored inventory's version
	sf      singleflight.Group

	// Fresh is how long a confirmed version is trusted without asking the database again (default 250 ms): a
	// boot storm asks once per window, not once per packet. This daemon's own writes replace the plan at once;
	// another daemon's write is seen within the window, as if the decision had been made that much earlier.
	// Negative: ask every time.
	Fresh time.Duration
}

// NewPlans plans the inventory of st with c.
func NewPlans(st Store, c Core, log *slog.Logger) *Plans {
	p := &Plans{store: st, core: c, log: log}
	if id, ok := c.(interface{ ID() string }); ok {
		p.coreID = id.ID()
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	return p
}

// Plan is the core's plan of one inventory version.
type Plan struct {
	// Version is the inventory version it plans.
	Version int64
	// Raw is each cluster's plan exactly as the core produced it (GET /v1/clusters/{c}/plan).
	Raw map[string]json.RawMessage

	// err is the core's verdict on an inventory it could not plan (an *core.InvalidError), kept like a plan
	// so that an invalid inventory is evaluated once per version too.
	err error

	mu       sync.Mutex
	clusters map[string]*Cluster
}

// Cluster is one cluster's plan with the indexes its readers need.
type Cluster struct {
	core.Cluster
	// Version is the inventory version the plan was made from.
	Version int64
	wave    map[string]int
}

// Wave is the index of member's join wave in Provision, -1 for no such member.
func (c *Cluster) Wave(member string) int {
	if w, ok := c.wave[member]; ok {
		return w
	}
	return -1
}

// Before are the members of every join wave before member's: what must be ready before it may install.
func (c *Cluster) Before(member string) []string {
	var out []string
	for _, wave := range c.Provision[:max(c.Wave(member), 0)] {
		out = append(out, wave...)
	}
	return out
}

// ErrNoCluster: the plan has no cluster of that name.
var ErrNoCluster = errors.New("no cluster")

// Cluster is cluster name's part of the plan, decoded on first use and then shared.
func (p *Plan) Cluster(name string) (*Cluster, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clusters[name]; ok {
		return c, nil
	}
	raw, ok := p.Raw[name]
	if !ok {
		return nil, fmt.Errorf("%w %s", ErrNoCluster, strconv.Quote(name))
	}
	c := &Cluster{Version: p.Version, wave: map[string]int{}}
	if err := json.Unmarshal(raw, &c.Cluster); err != nil {
		return nil, fmt.Errorf("decoding the plan of cluster %q: %w", name, err)
	}
	for i, wave := range c.Provision {
		for _, m := range wave {
			c.wave[m] = i
		}
	}
	if p.clusters == nil {
		p.clusters = map[string]*Cluster{}
	}
	p.clusters[name] = c
	return c, nil
}

// Current is the plan of the inventory as it is now: one query when this process has it already; otherwise
// the stored plan of that version, or one evaluation of the core shared by every caller asking meanwhile. An
// inventory with errors gives the core's *core.InvalidError.
func (p *Plans) Current(ctx context.Context) (*Plan, error) {
	fresh := p.Fresh
	if fresh == 0 {
		fresh = 250 * time.Millisecond
	}
	p.mu.Lock()
	cur, checked := p.cur, p.checked
	p.mu.Unlock()
	if cur != nil && time.Since(checked) < fresh {
		return cur, cur.err
	}
	v, err := p.store.InventoryVersion(ctx)
	if err != nil {
		return nil, err
	}
	if cur != nil && cur.Version == v {
		p.mu.Lock()
		if p.cur == cur {
			p.checked = time.Now()
		}
		p.mu.Unlock()
		return cur, cur.err
	}
	// Callers share the load of a version; the load itself is not cancelled by the first caller leaving.
	ch := p.sf.DoChan(strconv.FormatInt(v, 10), func() (any, error) {
		return p.load(context.WithoutCancel(ctx), v)
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		plan := r.Val.(*Plan)
		return plan, plan.err
	}
}

// Cluster is cluster name's part of the current plan.
func (p *Plans) Cluster(ctx context.Context, name string) (*Cluster, error) {
	plan, err := p.Current(ctx)
	if err != nil {
		return nil, err
	}
	return plan.Cluster(name)
}

// Planned records the plan a write made of the version it stored, so that nobody evaluates it again.
func (p *Plans) Planned(ctx context.Context, version int64, planned *core.Planned) {
	plan, err := decode(version, planned.JSON)
	if err != nil {
		p.log.Error("decoding the plan of a write", "inventory", version, "err", err)
		return
	}
	p.keep(plan)
	p.save(ctx, version, planned.JSON)
}

func (p *Plans) load(ctx context.Context, version int64) (*Plan, error) {
	if p.coreID != "" {
		raw, err := p.store.StoredPlan(ctx, version, p.coreID)
		if err == nil {
			plan, err := decode(version, raw)
			if err != nil {
				return nil, err
			}
			p.keep(plan)
			return plan, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
	}
	snap, err := p.store.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	planned, err := p.core.Plan(ctx, snap.Config)
	var invalid *core.InvalidError
	if errors.As(err, &invalid) {
		plan := &Plan{Version: snap.Version, err: err}
		p.keep(plan)
		return plan, nil
	}
	if err != nil {
		return nil, err
	}
	plan, err := decode(snap.Version, planned.JSON)
	if err != nil {
		return nil, err
	}
	p.keep(plan)
	p.save(ctx, snap.Version, planned.JSON)
	return plan, nil
}

func (p *Plans) save(ctx context.Context, version int64, raw json.RawMessage) {
	if p.coreID == "" {
		return
	}
	if err := p.store.SavePlan(ctx, version, p.coreID, raw); err != nil {
		// Only a cost: the next daemon that needs this version evaluates it.
		p.log.Warn("storing the plan", "inventory", version, "err", err)
	}
}

// keep makes plan the current one unless a newer one is there already.
func (p *Plans) keep(plan *Plan) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil || plan.Version >= p.cur.Version {
		p.cur, p.checked = plan, time.Now()
	}
}

func decode(version int64, raw []byte) (*Plan, error) {
	var all struct {
		Clusters map[string]json.RawMessage `json:"clusters"`
	}
	if err := json.Unmarshal(raw, &all); err != nil {
		return nil, fmt.Errorf("decoding the plan: %w", err)
	}
	if all.Clusters == nil {
		all.Clusters = map[string]json.RawMessage{}
	}
	return &Plan{Version: version, Raw: all.Clusters}, nil
}
