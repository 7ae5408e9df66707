package inventory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/nixgen"
	"github.com/nix8s/nix8s/internal/store"
)

// Inventory is the daemon's stored inventory and everything derived from it: the plan of each version (the
// embedded Plans), the flake workspace it is rendered into, and the one way to change it (Modify: validated
// by the core, stored, planned and rendered). A daemon makes one and hands it to the REST API, the job
// runner, network boot and the node watcher, which all read the same plan. Safe for concurrent use.
type Inventory struct {
	*Plans
	st   *store.Store
	core WriteCore
	ws   *nixgen.Workspace
	log  *slog.Logger

	// Changes from this daemon queue here rather than race: every evaluation lost to a concurrent writer
	// would be done again. (Other daemons sharing the database are caught by the store's optimistic version.)
	writeMu sync.Mutex
}

// Options configure an Inventory.
type Options struct {
	// Store holds the inventory.
	Store *store.Store
	// Core validates and plans configs (*core.Evaluator).
	Core WriteCore
	// Workspace, when set, receives the inventory after every change to it and at Render.
	Workspace *nixgen.Workspace
	// Logger gets what fails in the background (the workspace, storing a plan); default slog.Default().
	Logger *slog.Logger
}

// WriteCore is the core an Inventory writes with (*core.Evaluator): Plan for the plans of stored versions,
// PlanStored for a change, the same one evaluation with the daemon's stricter rules (the core's checkStored:
// no secret values in the inventory).
type WriteCore interface {
	Core
	PlanStored(ctx context.Context, cfg any) (*core.Planned, error)
}

// New is the inventory of o.Store.
func New(o Options) *Inventory {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Inventory{Plans: NewPlans(o.Store, o.Core, log), st: o.Store, core: o.Core, ws: o.Workspace, log: log}
}

// Modify changes the stored inventory: change computes the next config from the stored one, one evaluation of
// the core validates and plans it, and the store writes it with the members' MACs from that plan (one
// transaction at the snapshot's version, retried when another daemon wrote meanwhile). Then the plan of the new version is kept (nobody evaluates
// it again) and the workspace rendered. It returns the new inventory version and the core's warnings. A
// config with errors changes nothing and is an *core.InvalidError with the core's report; an error of change
// is returned as it is.
func (inv *Inventory) Modify(ctx context.Context, actor string, change func(snap *store.Snapshot) (map[string]any, error)) (int64, []core.Problem, error) {
	inv.writeMu.Lock()
	defer inv.writeMu.Unlock()
	var warnings []core.Problem
	var planned *core.Planned
	v, err := inv.st.ModifyNext(ctx, actor, func(snap *store.Snapshot) (*store.Next, error) {
		next, err := change(snap)
		if err != nil {
			return nil, err
		}
		warnings, planned, err = inv.validate(ctx, next)
		if err != nil {
			return nil, err
		}
		return &store.Next{Config: next, MACs: memberMACs(planned.Plan)}, nil
	})
	if err != nil {
		return 0, nil, err
	}
	// The plan of the stored version comes from the write's own evaluation: boot decisions right after a
	// change wait for no evaluation.
	inv.Planned(ctx, v, planned)
	inv.Render(ctx)
	return v, warnings, nil
}

// Replace replaces the stored inventory with cfg (nix8sd serve --config), as Modify does.
func (inv *Inventory) Replace(ctx context.Context, actor string, cfg map[string]any) ([]core.Problem, error) {
	_, warnings, err := inv.Modify(ctx, actor, func(*store.Snapshot) (map[string]any, error) { return cfg, nil })
	return warnings, err
}

// validate asks the core about next, with the daemon's rules (PlanStored); errors refuse the change. The core
// decides everything (unknown top-level keys, shared MACs, secret values, ...); the store's shape check in
// Apply is only the guard of what its tables can hold. It is one evaluation that also plans next: the plan of
// the version the write stores.
func (inv *Inventory) validate(ctx context.Context, next map[string]any) ([]core.Problem, *core.Planned, error) {
	planned, err := inv.core.PlanStored(ctx, next)
	var invalid *core.InvalidError
	var ee *core.EvalError
	switch {
	case errors.As(err, &invalid):
		return nil, nil, invalid
	case errors.As(err, &ee):
		// The core threw instead of reporting: still the config's fault as far as the writer can tell.
		return nil, nil, &core.InvalidError{Report: core.Report{Errors: []core.Problem{{Path: "", Message: ee.Message}}}}
	case err != nil:
		return nil, nil, fmt.Errorf("validating through the core: %w", err)
	}
	return planned.Warnings, planned, nil
}

// memberMACs is every member's MAC as the core's plan gives it (its override, its named or inline template),
// what the store keeps with the inventory for the machines' assignment rule.
func memberMACs(p core.Plan) []store.MemberMAC {
	var macs []store.MemberMAC
	for cname, c := range p.Clusters {
		for mname, m := range c.Members {
			if m.MAC != nil {
				macs = append(macs, store.MemberMAC{Cluster: cname, Member: mname, MAC: *m.MAC})
			}
		}
	}
	return macs
}

// Render writes the stored inventory into the flake workspace (after every change, and by nix8sd serve at
// start). A failure is logged, not returned: the inventory itself is safely stored.
func (inv *Inventory) Render(ctx context.Context) {
	if inv.ws == nil {
		return
	}
	snap, err := inv.st.Snapshot(ctx)
	if err == nil {
		err = inv.ws.Render(snap.Config)
	}
	if err != nil {
		inv.log.Error("rendering the flake workspace", "dir", inv.ws.Dir, "err", err)
	}
}

// ClusterPlan is the plan of cluster name in the current inventory, each member with its ssh endpoint: what
// an operation on the cluster runs on (jobs.Planner). No such cluster is ErrNoCluster.
func (inv *Inventory) ClusterPlan(ctx context.Context, name string) (core.Cluster, error) {
	c, err := inv.Cluster(ctx, name)
	if err != nil {
		return core.Cluster{}, err
	}
	return c.Cluster, nil
}

// HostNames maps each member of cluster to its host name in the plan, its Kubernetes node name (the node
// watcher's HostNames).
func (inv *Inventory) HostNames(ctx context.Context, cluster string) (map[string]string, error) {
	c, err := inv.Cluster(ctx, cluster)
	if err != nil {
		return nil, err
	}
	names := make(map[string]string, len(c.Members))
	for name, m := range c.Members {
		names[name] = m.HostName
	}
	return names, nil
}
