// Package rollout switches the members of a running cluster to their configurations one node at a time,
// the way a Kubernetes operator would: cordon, drain (PodDisruptionBudgets honoured), switch, wait until the
// node is Ready again, uncordon. It follows the plan's `rollout` order (agents, other servers, the first
// server last) or, when the k3s version changes, its `upgradeRollout` order (servers first, one at a time,
// then agents: a kubelet must never be newer than its API server). The first failure stops it and leaves
// that node cordoned, so nothing else is disrupted while someone looks.
package rollout

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/progress"
	"github.com/nix8s/nix8s/internal/remote"
)

// Status is what became of one member.
type Status string

const (
	Done       Status = "done"        // switched, Ready and uncordoned
	Failed     Status = "failed"      // a phase failed; the node is left cordoned
	NotStarted Status = "not-started" // an earlier failure stopped the rollout first
	Planned    Status = "planned"     // dry run
)

// Phase is one step of a member's rollout, in this order.
type Phase string

const (
	PhaseCordon   Phase = "cordon"
	PhaseDrain    Phase = "drain"
	PhaseSwitch   Phase = "switch"
	PhaseReady    Phase = "wait-ready"
	PhaseUncordon Phase = "uncordon"
	// PhaseRollback is the return to the previous generation after a failure (Options.Rollback).
	PhaseRollback Phase = "rollback"
)

// Kind says which of the plan's orders a rollout follows.
type Kind string

const (
	// Configuration is a change that keeps the k3s version: the plan's `rollout` order.
	Configuration Kind = "configuration"
	// Upgrade changes the k3s version: the plan's `upgradeRollout` order.
	Upgrade Kind = "upgrade"
)

// Defaults of Options.
const (
	DefaultDrainTimeout    = 5 * time.Minute
	DefaultReadyTimeout    = 10 * time.Minute
	DefaultPollInterval    = 2 * time.Second
	DefaultEvictRetryDelay = 5 * time.Second
)

// Target is one member as the Switcher sees it.
type Target struct {
	// Cluster and Member are the names in the config.
	Cluster string
	Member  string
	// HostName is `<cluster>-<member>`: the node's name in Kubernetes and its nixosConfigurations attribute.
	HostName string
	// Role is "server" or "agent".
	Role string
	// Host is how ssh reaches the member: the plan's endpoint (remote.HostOf).
	Host remote.Host
}

// Switcher puts a member on its configuration, and back on the previous one.
type Switcher interface {
	// Switch activates the member's configuration (nixos-rebuild switch); it returns once activation ends,
	// not once the node is Ready again.
	Switch(ctx context.Context, t Target) error
	// Rollback activates the member's previous generation.
	Rollback(ctx context.Context, t Target) error
}

// Preparer is implemented by Switchers that must agree before a member's turn begins (nix8sd's jobs: the
// member's lock, the machine's move to rebuilding). An error fails that member in the cordon phase with
// nothing touched.
type Preparer interface {
	Prepare(ctx context.Context, t Target) error
}

// Describer is implemented by Switchers that can say what they would run, for dry runs.
type Describer interface {
	Describe(t Target) string
}

// Options say what to roll out and how.
type Options struct {
	// Members limits the rollout to these members (in plan order regardless of the order given); empty means
	// every member.
	Members []string
	// MaxUnavailable is how many agents may be out of service at once; default 1. Servers always go one at a
	// time.
	MaxUnavailable int
	// FromVersion is the k3s version the cluster runs now (`v1.30.4+k3s1`); empty asks the API server (the
	// nodes' kubelet versions). When it differs from the plan's k3sVersion the rollout is an Upgrade.
	FromVersion string
	// Force allows a downgrade of k3s.
	Force bool
	// Rollback returns a member that failed after its switch began to its previous generation.
	Rollback bool
	// DryRun reports the steps without touching anything (not even the API server).
	DryRun bool
	// DrainTimeout bounds draining one node (evictions blocked by a PodDisruptionBudget are retried until
	// then); default DefaultDrainTimeout.
	DrainTimeout time.Duration
	// ReadyTimeout bounds waiting for a switched node to be Ready; default DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// PollInterval is the pause between readiness checks; default DefaultPollInterval.
	PollInterval time.Duration
	// EvictRetryDelay is the pause before retrying an eviction a PodDisruptionBudget refused; default
	// DefaultEvictRetryDelay, or a tenth of DrainTimeout when that is shorter.
	EvictRetryDelay time.Duration

	// Client reaches the cluster's API server; not needed for a dry run.
	Client kubernetes.Interface
	// Switcher switches members (NixosRebuild).
	Switcher Switcher
	// Progress gets the rollout's events; nil discards them. Each member's phases come as Running events
	// (PhaseCordon ... PhaseUncordon), the switched node being Ready again as Done of PhaseReady (before it is
	// uncordoned), a failure as Failed of the phase that failed (its message the error the report holds),
	// then the member's end (no phase: Done or Failed). Events for different agents may come concurrently
	// (MaxUnavailable > 1). A dry run, and members an earlier failure kept from starting, send none.
	Progress progress.Reporter
}

func (o *Options) defaults() {
	if o.MaxUnavailable == 0 {
		o.MaxUnavailable = 1
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = DefaultDrainTimeout
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = DefaultReadyTimeout
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.EvictRetryDelay <= 0 {
		// drain sleeps between retries without watching its timeout: keep the sleep short next to it.
		o.EvictRetryDelay = min(DefaultEvictRetryDelay, max(o.DrainTimeout/10, 100*time.Millisecond))
	}
	if o.Progress == nil {
		o.Progress = progress.Discard
	}
}

// Report is the outcome of a rollout, one entry per selected member in rollout order.
type Report struct {
	// Cluster is the cluster's name.
	Cluster string `json:"cluster"`
	// Kind says which plan order the rollout followed.
	Kind Kind `json:"kind"`
	// FromVersion and ToVersion are the k3s versions of an Upgrade.
	FromVersion string `json:"fromVersion,omitempty"`
	ToVersion   string `json:"toVersion,omitempty"`
	// MaxUnavailable is how many agents could be out at once.
	MaxUnavailable int  `json:"maxUnavailable"`
	DryRun         bool `json:"dryRun"`
	// Members are the selected members in rollout order.
	Members []MemberReport `json:"members"`
}

// MemberReport is what happened to one member.
type MemberReport struct {
	// Name, HostName, Role and IP are the member's, as in the plan.
	Name     string `json:"name"`
	HostName string `json:"hostName"`
	Role     string `json:"role"`
	IP       string `json:"ip"`
	// Status is what became of the member.
	Status Status `json:"status"`
	// Phase is the phase that failed.
	Phase Phase  `json:"phase,omitempty"`
	Error string `json:"error,omitempty"`
	// Cordoned says the rollout left the node cordoned (after a failure).
	Cordoned bool `json:"cordoned,omitempty"`
	// Rollback is "done" or "failed: <why>" when a rollback was attempted.
	Rollback string `json:"rollback,omitempty"`
	// Seconds is how long the member took, from cordon to its end.
	Seconds float64 `json:"seconds"`
	// Steps is what a dry run would do, in order.
	Steps []string `json:"steps,omitempty"`
}

// Counts renders "3 done, 1 failed" for the statuses present.
func (r *Report) Counts() string {
	return progress.Counts(r.Members, func(m MemberReport) Status { return m.Status }, Done, Failed, NotStarted, Planned)
}

// Rollout rolls the members of cluster c out. The error is the first failure (also in the report); the
// report is complete even then. Errors found before anything was touched (bad input, an unreachable API
// server, a refused version change) come with a nil report.
func Rollout(ctx context.Context, c core.Cluster, o Options) (*Report, error) {
	o.defaults()
	if o.MaxUnavailable < 1 {
		return nil, fmt.Errorf("max-unavailable must be at least 1, got %d", o.MaxUnavailable)
	}
	if err := c.CheckMembers(o.Members); err != nil {
		return nil, err
	}
	if !o.DryRun && o.Client == nil {
		return nil, errors.New("rollout: no Kubernetes client")
	}
	if !o.DryRun && o.Switcher == nil {
		return nil, errors.New("rollout: no Switcher")
	}
	ro := &rollout{c: c, o: o, index: map[string]int{}, em: progress.Emitter{Reporter: o.Progress, Cluster: c.Name}}
	if !o.DryRun {
		if err := ro.preflight(ctx); err != nil {
			return nil, err
		}
		if err := ro.requireCozystack(ctx); err != nil {
			return nil, err
		}
	}
	kind, from, err := ro.kind(ctx)
	if err != nil {
		return nil, err
	}
	planned := c.RolloutWaves
	if kind == Upgrade {
		planned = c.UpgradeRolloutWaves
	}
	waves := core.SelectWaves(planned, o.Members)
	var selected []string
	for _, w := range waves {
		selected = append(selected, w...)
	}
	ro.report = &Report{Cluster: c.Name, Kind: kind, MaxUnavailable: o.MaxUnavailable, DryRun: o.DryRun}
	if kind == Upgrade {
		ro.report.FromVersion, ro.report.ToVersion = from, *c.K3sVersion
		ro.wantVersion = *c.K3sVersion
		if err := ro.checkSkew(ctx, selected); err != nil {
			return nil, err
		}
	}
	for _, m := range selected {
		mem := c.Members[m]
		ro.index[m] = len(ro.report.Members)
		ro.report.Members = append(ro.report.Members, MemberReport{
			Name: m, HostName: mem.HostName, Role: mem.Role, IP: mem.IP, Status: NotStarted,
		})
	}
	if o.DryRun {
		for i := range ro.report.Members {
			ro.report.Members[i].Status = Planned
			ro.report.Members[i].Steps = ro.steps(ro.report.Members[i].Name)
		}
		return ro.report, nil
	}
	if kind == Upgrade {
		ro.progress("upgrading k3s of cluster %q from %s to %s: %s", c.Name, from, *c.K3sVersion, describeOrder(c, waves, o.MaxUnavailable))
	} else {
		ro.progress("rolling out the configuration of cluster %q: %s", c.Name, describeOrder(c, waves, o.MaxUnavailable))
	}
	for _, batch := range waves {
		if err := ro.runBatch(ctx, batch); err != nil {
			return ro.report, err
		}
	}
	return ro.report, nil
}

// describeOrder says what runs when: a wave of one member by its name, a larger one with how many go at once.
func describeOrder(c core.Cluster, waves [][]string, maxUnavailable int) string {
	var parts []string
	for _, b := range waves {
		names := make([]string, len(b))
		for i, m := range b {
			names[i] = c.Members[m].HostName
		}
		if len(b) == 1 {
			parts = append(parts, names[0])
		} else {
			parts = append(parts, fmt.Sprintf("[%s] %d at a time", strings.Join(names, " "), min(maxUnavailable, len(b))))
		}
	}
	return strings.Join(parts, ", then ")
}

type rollout struct {
	c           core.Cluster
	o           Options
	wantVersion string // the kubelet version a switched node must report (Upgrade only)

	em progress.Emitter

	mu     sync.Mutex // guards report
	report *Report
	index  map[string]int
}

// progress is a message of the rollout as a whole.
func (ro *rollout) progress(format string, args ...any) { ro.em.Say(format, args...) }

// event reports what happens to the member whose node is node.
func (ro *rollout) event(node string, phase Phase, status progress.Status, format string, args ...any) {
	ro.em.Emit(progress.Event{Member: ro.memberOf(node), Node: node, Phase: string(phase), Status: status,
		Message: fmt.Sprintf(format, args...)})
}

// memberOf is the member whose host name is node.
func (ro *rollout) memberOf(node string) string {
	for m, mem := range ro.c.Members {
		if mem.HostName == node {
			return m
		}
	}
	return ""
}

func (ro *rollout) set(m string, f func(*MemberReport)) {
	ro.mu.Lock()
	defer ro.mu.Unlock()
	f(&ro.report.Members[ro.index[m]])
}

func (ro *rollout) target(m string) Target {
	mem := ro.c.Members[m]
	return Target{Cluster: ro.c.Name, Member: m, HostName: mem.HostName, Role: mem.Role, Host: remote.HostOf(mem)}
}

func (ro *rollout) steps(m string) []string {
	t := ro.target(m)
	sw := "switch to its configuration"
	if d, ok := ro.o.Switcher.(Describer); ok {
		sw = "switch: " + d.Describe(t)
	}
	ready := fmt.Sprintf("wait until node %q is Ready (timeout %s)", t.HostName, ro.o.ReadyTimeout)
	if ro.wantVersion != "" {
		ready = fmt.Sprintf("wait until node %q is Ready with kubelet %s (timeout %s)", t.HostName, ro.wantVersion, ro.o.ReadyTimeout)
	}
	return []string{
		fmt.Sprintf("cordon node %q", t.HostName),
		fmt.Sprintf("drain node %q (DaemonSets ignored, emptyDir data deleted, PodDisruptionBudgets honoured, timeout %s)", t.HostName, ro.o.DrainTimeout),
		sw,
		ready,
		fmt.Sprintf("uncordon node %q", t.HostName),
	}
}

// runBatch rolls out one wave of the plan (a server alone, or the agents) with at most MaxUnavailable members in
// flight. After a failure no new member starts; those in flight finish.
func (ro *rollout) runBatch(ctx context.Context, batch []string) error {
	sem := make(chan struct{}, max(ro.o.MaxUnavailable, 1))
	var (
		wg       sync.WaitGroup
		errMu    sync.Mutex
		firstErr error
	)
	failed := func() bool {
		errMu.Lock()
		defer errMu.Unlock()
		return firstErr != nil
	}
	for _, m := range batch {
		sem <- struct{}{}
		if failed() || ctx.Err() != nil {
			<-sem
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := ro.member(ctx, m); err != nil {
				errMu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				errMu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return firstErr
}

// member runs the phases for one member and records the outcome.
func (ro *rollout) member(ctx context.Context, m string) error {
	t := ro.target(m)
	start := time.Now()
	ro.event(t.HostName, "", progress.Running, "rolling out (%s)", t.Role)
	phase, err := ro.phases(ctx, t)
	secs := time.Since(start).Round(time.Millisecond).Seconds()
	if err == nil {
		ro.set(m, func(r *MemberReport) { r.Status, r.Seconds = Done, secs })
		ro.event(t.HostName, "", progress.Done, "done in %s", time.Since(start).Round(100*time.Millisecond))
		return nil
	}
	err = fmt.Errorf("%s: %s: %w", t.HostName, phase, err)
	ro.set(m, func(r *MemberReport) {
		r.Status, r.Phase, r.Error, r.Seconds = Failed, phase, err.Error(), secs
		r.Cordoned = phase != PhaseCordon
	})
	if ro.o.Rollback {
		ro.rollback(ctx, t, phase)
	}
	// The member's end: the phase that failed, with the error the report holds.
	ro.em.Emit(progress.Event{Member: m, Node: t.HostName, Phase: string(phase), Status: progress.Failed,
		Message: fmt.Sprintf("failed in %s", phase), Err: err})
	if phase != PhaseCordon {
		ro.progress("hint: node %q is left cordoned; 'kubectl uncordon %s' once it is healthy", t.HostName, t.HostName)
	}
	return err
}

func (ro *rollout) phases(ctx context.Context, t Target) (Phase, error) {
	if p, ok := ro.o.Switcher.(Preparer); ok {
		if err := p.Prepare(ctx, t); err != nil {
			return PhaseCordon, err
		}
	}
	if err := ro.cordon(ctx, t.HostName, true); err != nil {
		return PhaseCordon, err
	}
	if err := ro.drain(ctx, t.HostName); err != nil {
		return PhaseDrain, err
	}
	ro.event(t.HostName, PhaseSwitch, progress.Running, "switching")
	if err := ro.o.Switcher.Switch(ctx, t); err != nil {
		return PhaseSwitch, err
	}
	switched := ro.leaseRenewal(ctx, t.HostName)
	if err := ro.waitReady(ctx, t.HostName, switched); err != nil {
		return PhaseReady, err
	}
	ro.em.Emit(progress.Event{Member: t.Member, Node: t.HostName, Phase: string(PhaseReady), Status: progress.Done})
	if err := ro.cordon(ctx, t.HostName, false); err != nil {
		return PhaseUncordon, err
	}
	return "", nil
}

// rollback returns a member whose switch began to its previous generation. The node stays cordoned either
// way: whether it is healthy again is for a person to judge.
func (ro *rollout) rollback(ctx context.Context, t Target, phase Phase) {
	if phase != PhaseSwitch && phase != PhaseReady {
		ro.event(t.HostName, PhaseRollback, progress.Running, "no rollback: its configuration was never switched")
		return
	}
	// The rollout's context may be what failed (interrupt): the rollback gets its own bounded one.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ro.o.ReadyTimeout)
	defer cancel()
	ro.event(t.HostName, PhaseRollback, progress.Running, "rolling back to the previous generation")
	result := "done"
	if err := ro.o.Switcher.Rollback(rctx, t); err != nil {
		result = "failed: " + err.Error()
		ro.event(t.HostName, PhaseRollback, progress.Running, "rollback failed: %s", err)
	}
	ro.set(t.Member, func(r *MemberReport) { r.Rollback = result })
}
