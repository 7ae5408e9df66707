package jobs

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/nix8s/nix8s/internal/progress"
	"github.com/nix8s/nix8s/internal/rollout"
	"github.com/nix8s/nix8s/internal/store"
)

// RolloutParams are a rollout job's parameters (the body of POST /v1/clusters/{c}/rollout).
type RolloutParams struct {
	// Members to roll out; empty with All for every member.
	Members []string `json:"members,omitempty"`
	All     bool     `json:"all,omitempty"`
	// MaxUnavailable is how many agents may be out of service at once; 0 means 1.
	MaxUnavailable int `json:"maxUnavailable,omitempty"`
	// DryRun reports the steps, touching nothing.
	DryRun bool `json:"dryRun,omitempty"`
}

// Check refuses parameters that say neither or both of members and all.
func (p RolloutParams) Check() error {
	return checkSelection(p.Members, p.All, p.MaxUnavailable, "maxUnavailable")
}

// rollout is the handler of rollout jobs: rollout.Rollout on the job's cluster, reaching its API server with
// the admin kubeconfig fetched from a ready server (as nix8s kubeconfig does), with the assigned machines
// moved ready -> rebuilding -> ready (or rebuild_failed) as it goes.
func (r *Runner) rollout(ctx context.Context, j *store.Job, log io.Writer) (any, error) {
	var p RolloutParams
	// rollout.Rollout checks the members (core.Cluster.CheckMembers), before any machine is touched. The
	// members' delivered host keys (configFor) are for nixos-rebuild's ssh and the cluster client.
	c, cfg, done, err := r.clusterJob(ctx, j, &p, "a rollout job")
	if err != nil {
		return nil, err
	}
	defer done()
	ssh := cfg.SSH()
	o := rollout.Options{
		Members:        p.Members,
		MaxUnavailable: p.MaxUnavailable,
		DryRun:         p.DryRun,
		DrainTimeout:   cfg.DrainTimeout,
		ReadyTimeout:   cfg.waitTimeout(),
		PollInterval:   cfg.waitInterval(),
		Progress:       progress.NewLines(log),
	}
	rebuild := &rollout.NixosRebuild{Program: cfg.NixosRebuild, Flake: cfg.Flake, SSH: ssh,
		Progress: o.Progress, Timeout: cfg.InstallTimeout}
	o.Switcher = rebuild
	if !p.DryRun {
		client, host, from, err := cfg.ClusterClient(ctx, c)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(log, "nix8s: %s: API server %s (credentials from %s)\n", c.Name, host, from)
		o.Client = client
		obs := &rebuildObserver{&machineObserver{st: r.Store, actor: fmt.Sprintf("job:%d", j.ID), job: j.ID, log: log,
			ctx: context.WithoutCancel(ctx), c: c, holder: fmt.Sprintf("%s job %d", r.Worker, j.ID), lockWait: cfg.lockWait(), jobCtx: ctx,
			lines: progress.NewLines(log)}}
		defer obs.releaseAll()
		if obs.machines, err = r.Store.MachinesOfCluster(ctx, c.Name); err != nil {
			return nil, err
		}
		obs.noteUntracked(p.Members)
		o.Progress, rebuild.Progress = obs, obs
		o.Switcher = &lockedSwitcher{obs: obs, inner: rebuild}
	}
	report, err := rollout.Rollout(ctx, c, o)
	if report == nil {
		return nil, err
	}
	fmt.Fprintf(log, "nix8s: %s: %s\n", c.Name, report.Counts())
	if err != nil {
		return report, fmt.Errorf("rollout of cluster %q stopped: %w", c.Name, err)
	}
	return report, nil
}

// lockedSwitcher runs nixos-rebuild for a member under its lock (taken in Prepare, before the member's node is
// cordoned), and stops it when the lock is lost, as lockedInstaller does for nixos-anywhere: from then on
// another attempt may start.
type lockedSwitcher struct {
	obs   *rebuildObserver
	inner *rollout.NixosRebuild
}

// Prepare implements rollout.Preparer: the member's lock and its machine's move to rebuilding (Starting).
func (l *lockedSwitcher) Prepare(_ context.Context, t rollout.Target) error {
	return l.obs.Starting(t.Member)
}

// Describe implements rollout.Describer (dry runs print what would run).
func (l *lockedSwitcher) Describe(t rollout.Target) string { return l.inner.Describe(t) }

// Switch implements rollout.Switcher.
func (l *lockedSwitcher) Switch(ctx context.Context, t rollout.Target) error {
	return l.locked(ctx, t, l.inner.Switch)
}

// Rollback implements rollout.Switcher.
func (l *lockedSwitcher) Rollback(ctx context.Context, t rollout.Target) error {
	return l.locked(ctx, t, l.inner.Rollback)
}

func (l *lockedSwitcher) locked(ctx context.Context, t rollout.Target, run func(context.Context, rollout.Target) error) error {
	lock := l.obs.lock(t.Member)
	if lock == nil {
		// Jobs do not roll back (rollout.Options.Rollback): a failed member has let its lock go by then.
		return fmt.Errorf("member %s: its lock is not held; not starting nixos-rebuild", t.Member)
	}
	if lock.Lost().Err() != nil {
		return fmt.Errorf("not starting nixos-rebuild: %w", context.Cause(lock.Lost()))
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(lock.Lost(), func() { cancel(context.Cause(lock.Lost())) })
	defer stop()
	err := run(ctx, t)
	if err != nil && lock.Lost().Err() != nil {
		return fmt.Errorf("nixos-rebuild stopped: %w", context.Cause(lock.Lost()))
	}
	return err
}

// rebuildObserver is the progress.Reporter of a rollout job: it appends each event's line to the job log and
// moves the machines of the members the rollout takes on through rebuilding, through the store (the database
// checks every transition and logs it with the job as actor).
type rebuildObserver struct{ *machineObserver }

// Report implements progress.Reporter for a rollout: a member's line, then the machine moves of a milestone.
func (o *rebuildObserver) Report(e progress.Event) {
	o.lines.Report(e)
	switch {
	case e.Status == progress.Failed && e.Final():
		o.Failed(e.Member, rollout.Phase(e.Phase), e.Err)
	case e.Phase == string(rollout.PhaseReady) && e.Status == progress.Done && e.Message == "":
		o.Ready(e.Member)
	}
}

// Starting comes when the member's turn begins (lockedSwitcher.Prepare), before its node is cordoned: the database must allow the machine into rebuilding (from ready,
// or rebuild_failed for another try) before its node is cordoned; else that member fails with the
// database's reason and nothing is touched.
// First the member's lock, as an install takes it: no switch starts while an earlier attempt (an install, or a
// rollout of a daemon that died with this job) may still run. A machine such an attempt left rebuilding goes to
// rebuild_failed first, saying so: holding the lock, this attempt knows that one is gone.
func (o *rebuildObserver) Starting(member string) error {
	if err := o.takeLock(member); err != nil {
		return err
	}
	if mach := o.machines[member]; mach != nil {
		ctx, cancel := context.WithTimeout(o.ctx, 30*time.Second)
		cur, err := o.st.Machine(ctx, mach.MAC)
		cancel()
		if err != nil {
			return fmt.Errorf("machine %s (member %s): %w", mach.MAC, member, err)
		}
		if cur.State == store.StateRebuilding {
			host := o.c.Members[member].HostName
			fmt.Fprintf(o.log, "nix8s: %s: machine %s was left rebuilding by an earlier attempt that is gone (the member's lock was free); rolling it out again\n", host, mach.MAC)
			if err := o.move(member, o.failedOf(store.StateRebuilding), fmt.Sprintf("rollout job %d: an earlier attempt, gone, left it rebuilding; rolling out again", o.job)); err != nil {
				return err
			}
		}
	}
	return o.move(member, store.StateRebuilding, fmt.Sprintf("rollout job %d: cordon, drain, switch", o.job))
}

// Ready comes when the switched node is Ready again, before it is uncordoned.
func (o *rebuildObserver) Ready(member string) {
	defer o.release(member)
	if o.current(member) != store.StateRebuilding {
		return
	}
	o.warn(o.move(member, store.StateReady, fmt.Sprintf("rollout job %d: switched; a Ready node", o.job)))
}

// Failed comes with the member's failure, in the phase that failed. A member that fails after Ready (uncordon) keeps its machine ready:
// it runs its configuration; the log and the report say its node is cordoned.
func (o *rebuildObserver) Failed(member string, phase rollout.Phase, err error) {
	defer o.release(member)
	if o.current(member) != store.StateRebuilding {
		return
	}
	o.warn(o.move(member, o.failedOf(store.StateRebuilding), fmt.Sprintf("rollout job %d: %s: %v", o.job, phase, err)))
}
