package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"k8s.io/client-go/rest"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/progress"
	"github.com/nix8s/nix8s/internal/provision"
	"github.com/nix8s/nix8s/internal/remote"
	"github.com/nix8s/nix8s/internal/secrets"
	"github.com/nix8s/nix8s/internal/store"
	"github.com/nix8s/nix8s/internal/wait"
)

// Job kinds of the operations.
const (
	KindInstall = "install"
	KindRollout = "rollout"
)

// Config is what the operations need besides the inventory: where the flake is, how ssh checks host keys,
// which programs to run. The ssh user, port and key come from the inventory
// (provisioning.nixos-anywhere.ssh).
type Config struct {
	// Flake holds nixosConfigurations.<c>-<m>: the daemon's flake workspace.
	Flake string
	// KnownHostsFile replaces the daemon user's known_hosts for every ssh connection; empty keeps ssh's own.
	KnownHostsFile string
	// SSHConfigFile is passed as ssh -F; empty keeps ~/.ssh/config, "none" ignores every config file.
	SSHConfigFile string
	// ConnectTimeout bounds connecting over ssh; default remote.DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// NixosAnywhere and NixosRebuild are the programs; default the names on PATH.
	NixosAnywhere, NixosRebuild string
	// SecretsDir holds the clusters' tokens as <dir>/<cluster>.yaml (nix8s gen-secrets); empty delivers no
	// token files (they reach the nodes another way, such as sops-nix).
	SecretsDir string
	// Sops decrypts encrypted secrets; default "sops" on PATH.
	Sops string
	// ExtraFiles is delivered per member as in nix8s install --extra-files; empty means none.
	ExtraFiles string
	// InstallTimeout bounds one member's nixos-anywhere; default 1h.
	InstallTimeout time.Duration
	// WaitTimeout bounds each wait for readiness; default provision.DefaultWaitTimeout.
	WaitTimeout time.Duration
	// WaitInterval is the pause between readiness probes; default provision.DefaultWaitInterval.
	WaitInterval time.Duration
	// DrainTimeout bounds draining one node in a rollout; default rollout.DefaultDrainTimeout.
	DrainTimeout time.Duration
	// LockWait bounds the wait for a member's install lock held by another attempt; default DefaultLockWait.
	LockWait time.Duration
	// JoinTokenTTL is the time to live of an agent's join token (deliver-secrets); default
	// provision.DefaultJoinTokenTTL.
	JoinTokenTTL time.Duration

	// APIServer, when set, is how rollout jobs reach every cluster's API server instead of fetching the
	// admin kubeconfig from a Ready server over ssh. A seam for tests, which hand it a test API server's
	// config (internal/k8stest); nix8sd never sets it.
	APIServer *rest.Config

	// knownHostsCommand prints the host keys of the database trusted for one cluster's members (configFor).
	knownHostsCommand string
}

// SSH is the ssh Runner of the config: host keys from KnownHostsFile (else the user's known_hosts) and, in a
// config of Runner.configFor, the members' keys of the database.
func (c Config) SSH() *remote.SSH {
	return &remote.SSH{KnownHostsFile: c.KnownHostsFile, ConfigFile: c.SSHConfigFile, ConnectTimeout: c.ConnectTimeout,
		KnownHostsCommand: c.knownHostsCommand}
}

// DefaultLockWait is how long an install waits for another attempt on the same member to let go of its lock.
const DefaultLockWait = time.Minute

func (c Config) lockWait() time.Duration {
	if c.LockWait > 0 {
		return c.LockWait
	}
	return DefaultLockWait
}

func (c Config) waitTimeout() time.Duration {
	if c.WaitTimeout > 0 {
		return c.WaitTimeout
	}
	return provision.DefaultWaitTimeout
}

func (c Config) waitInterval() time.Duration {
	if c.WaitInterval > 0 {
		return c.WaitInterval
	}
	return provision.DefaultWaitInterval
}

// InstallParams are an install job's parameters (the body of POST /v1/clusters/{c}/install).
type InstallParams struct {
	// Members to install; empty with All for every member.
	Members []string `json:"members,omitempty"`
	All     bool     `json:"all,omitempty"`
	// Parallel bounds how many agents install at once; 0 means provision.DefaultParallel.
	Parallel int `json:"parallel,omitempty"`
	// Reinstall installs members that already run NixOS as themselves (wipes them).
	Reinstall bool `json:"reinstall,omitempty"`
	// DryRun reports the steps, touching no machine.
	DryRun bool `json:"dryRun,omitempty"`
}

// Check refuses parameters that say neither or both of members and all.
func (p InstallParams) Check() error { return checkSelection(p.Members, p.All, p.Parallel, "parallel") }

func checkSelection(members []string, all bool, n int, nField string) error {
	switch {
	case len(members) == 0 && !all:
		return &ParamError{Path: "members", Msg: "name the members, or set all"}
	case len(members) > 0 && all:
		return &ParamError{Path: "members", Msg: "members and all exclude each other"}
	case n < 0:
		return &ParamError{Path: nField, Msg: fmt.Sprintf("%s must not be negative, got %d", nField, n)}
	}
	return nil
}

// ParamError is a bad job parameter, with the name of the field.
type ParamError struct {
	Path, Msg string
}

func (e *ParamError) Error() string { return e.Msg }

// install is the handler of install jobs: provision.Install on the job's cluster, with the assigned machines
// moved through installing, joined and ready as it goes.
func (r *Runner) install(ctx context.Context, j *store.Job, log io.Writer) (any, error) {
	var p InstallParams
	// provision.Install checks the members (core.Cluster.CheckMembers), before any machine is touched.
	c, cfg, done, err := r.clusterJob(ctx, j, &p, "an install job")
	if err != nil {
		return nil, err
	}
	defer done()
	var tokens *provision.Tokens
	switch {
	case cfg.SecretsDir == "":
	case p.DryRun:
		// A dry run shows which files would go where without reading (or decrypting) the secrets.
		tokens = &provision.Tokens{Token: "(token)", AgentToken: "(agentToken)"}
	default:
		t, err := secrets.Load(ctx, cfg.SecretsDir, c.Name, cfg.Sops)
		if err != nil {
			return nil, err
		}
		tokens = &t
	}
	obs := &machineObserver{st: r.Store, actor: fmt.Sprintf("job:%d", j.ID), job: j.ID, log: log, ctx: context.WithoutCancel(ctx), c: c,
		holder: fmt.Sprintf("%s job %d", r.Worker, j.ID), lockWait: cfg.lockWait(), jobCtx: ctx, lines: progress.NewLines(log)}
	defer obs.releaseAll()
	if !p.DryRun {
		if obs.machines, err = r.Store.MachinesOfCluster(ctx, c.Name); err != nil {
			return nil, err
		}
		obs.noteUntracked(p.Members)
	}
	ssh := cfg.SSH()
	installTimeout := cfg.InstallTimeout
	if installTimeout <= 0 {
		installTimeout = time.Hour
	}
	readiness := provision.ClusterReadiness(c, provision.SSHReadiness{Runner: ssh}, ssh) // Cozystack: registered counts before bootstrap
	// The token files follow the install over ssh that accepts the installed system's new host key alone.
	deliverer := &provision.Pinned{SSH: ssh, WaitTimeout: cfg.waitTimeout(), WaitInterval: cfg.waitInterval(),
		KeyFrom: provision.InstalledKeyFrom, Record: true, Log: log}
	report, err := provision.Install(ctx, c, provision.Options{
		Flake:        cfg.Flake,
		Members:      p.Members,
		Parallel:     p.Parallel,
		Reinstall:    p.Reinstall,
		DryRun:       p.DryRun,
		Tokens:       tokens,
		JoinTokens:   &provision.JoinTokens{Runner: ssh, TTL: cfg.joinTokenTTL(), Log: log}, // agents: as network installs
		ExtraFiles:   cfg.ExtraFiles,
		WaitTimeout:  cfg.waitTimeout(),
		WaitInterval: cfg.waitInterval(),
		Runner:       ssh,
		Installer:    &lockedInstaller{obs: obs, inner: &provision.NixosAnywhere{Program: cfg.NixosAnywhere, SSH: ssh, Progress: obs, Timeout: installTimeout}},
		Readiness:    readiness,
		Deliverer:    deliverer,
		Progress:     obs,
	})
	if report == nil {
		return nil, err
	}
	fmt.Fprintf(log, "nix8s: %s: %s\n", c.Name, report.Counts())
	if err == nil && !p.DryRun {
		err = obs.waitAgents(ctx, readiness, cfg.waitTimeout(), cfg.waitInterval())
	}
	if err != nil {
		return report, fmt.Errorf("install of cluster %q stopped: %w", c.Name, err)
	}
	return report, nil
}

// clusterJob reads the parameters of j, an operation on a cluster (what names it in messages), into params and
// returns the cluster's plan and the config for it (Runner.configFor: the members' delivered host keys besides
// --known-hosts), with done to call when the job ends.
func (r *Runner) clusterJob(ctx context.Context, j *store.Job, params any, what string) (core.Cluster, Config, func(), error) {
	if err := json.Unmarshal(j.Params, params); err != nil {
		return core.Cluster{}, Config{}, nil, fmt.Errorf("reading the job's parameters: %w", err)
	}
	if j.Cluster == nil {
		return core.Cluster{}, Config{}, nil, fmt.Errorf("%s needs a cluster", what)
	}
	c, err := r.Planner.ClusterPlan(ctx, *j.Cluster)
	if err != nil {
		return core.Cluster{}, Config{}, nil, err
	}
	cfg, done, err := r.configFor(ctx, c)
	if err != nil {
		return core.Cluster{}, Config{}, nil, err
	}
	return c, cfg, done, nil
}

// machineObserver is the progress.Reporter of an install or rollout job: it appends each event's line to the
// job log and moves the machines assigned to the members through their states on the milestones, through the
// store (the database checks every transition and logs it with the job as actor). Only machines whose install
// this job started are moved: a skipped member's machine keeps its state.
type machineObserver struct {
	st    *store.Store
	actor string
	job   int64
	log   io.Writer
	ctx   context.Context // not the job's: a failure must still be recorded when the job was cancelled
	c     core.Cluster

	machines map[string]*store.Machine // by member

	// holder names this attempt in the members' install locks; lockWait bounds the wait for one.
	holder   string
	lockWait time.Duration
	jobCtx   context.Context // the job's: the wait for a lock ends with it

	lines *progress.Lines // the job log

	mu    sync.Mutex
	state map[string]store.State // member -> state this job moved its machine to
	locks map[string]*store.MemberLock
	// agents installed by this job whose machines wait to become Ready nodes
	agents []string
}

// noteUntracked says in the log which selected members have no machine: they are installed all the same
// (a machine record is how PXE-booted boxes are tracked; hosts reached over ssh need none).
func (o *machineObserver) noteUntracked(selected []string) {
	if len(selected) == 0 {
		for m := range o.c.Members {
			selected = append(selected, m)
		}
	}
	var none []string
	for _, m := range selected {
		if _, ok := o.c.Members[m]; ok && o.machines[m] == nil {
			none = append(none, m)
		}
	}
	sort.Strings(none)
	for _, m := range none {
		fmt.Fprintf(o.log, "nix8s: %s: no machine assigned to member %s; its state is not tracked\n", o.c.Members[m].HostName, m)
	}
}

func (o *machineObserver) move(member string, state store.State, reason string) error {
	mach := o.machines[member]
	if mach == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(o.ctx, 30*time.Second)
	defer cancel()
	if _, err := o.st.UpdateMachine(ctx, o.actor, mach.MAC, store.MachineChange{State: &state, Reason: reason}); err != nil {
		return fmt.Errorf("machine %s (member %s) cannot go to %s: %w", mach.MAC, member, state, err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.state == nil {
		o.state = map[string]store.State{}
	}
	o.state[member] = state
	fmt.Fprintf(o.log, "nix8s: %s: machine %s is %s\n", o.c.Members[member].HostName, mach.MAC, state)
	return nil
}

// failedOf is the failed state of the in-progress state (machine_states.failed_state: installing ->
// install_failed, joined -> join_failed, rebuilding -> rebuild_failed).
func (o *machineObserver) failedOf(state store.State) store.State {
	to, _ := o.st.StateSets().FailureOf(state)
	return to
}

func (o *machineObserver) current(member string) store.State {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.state[member]
}

// warn reports a transition that failed after the fact; the operation goes on, the log says why the
// machine's state lags.
func (o *machineObserver) warn(err error) {
	if err != nil {
		fmt.Fprintf(o.log, "nix8s: warning: %v\n", err)
	}
}

// Report implements progress.Reporter for an install: the machine moves of a milestone, then its line.
func (o *machineObserver) Report(e progress.Event) {
	switch {
	case e.Status == progress.Failed && e.Final():
		o.Failed(e.Member, e.Err)
	case e.Message != "" || e.Status != progress.Done:
	case e.Phase == string(provision.PhaseInstall):
		o.Installed(e.Member)
	case e.Phase == string(provision.PhaseReady):
		o.Ready(e.Member)
	}
	o.lines.Report(e)
}

// Installing comes right before nixos-anywhere starts on member (lockedInstaller); an error stops that
// member's install (nothing touched its disk yet) and fails it with that error. First the member's install lock (store.LockMember): no
// nixos-anywhere starts for a member while an earlier attempt's may still run, such as the one of a daemon
// that died with this job (the requeued job has the same id). Then the database must allow the machine into
// installing (assigned, not locked, in a state that may be reinstalled) before nixos-anywhere touches its
// disk. A machine an earlier attempt left installing goes to install_failed first, saying so: holding the
// lock, this attempt knows that one is gone.
func (o *machineObserver) Installing(member string) error {
	host := o.c.Members[member].HostName
	if err := o.takeLock(member); err != nil {
		return err
	}
	if mach := o.machines[member]; mach != nil {
		ctx, cancel := context.WithTimeout(o.ctx, 30*time.Second)
		cur, err := o.st.Machine(ctx, mach.MAC)
		cancel()
		switch {
		case err != nil:
			return fmt.Errorf("machine %s (member %s): %w", mach.MAC, member, err)
		case cur.State == store.StateInstalling && cur.InstallArmed:
			return fmt.Errorf("machine %s (member %s) is being installed over the network (its install is armed); not starting nixos-anywhere beside it: wait for it, or move the machine to install_failed first", mach.MAC, member)
		case cur.State == store.StateInstalling:
			// Only an install over ssh leaves a machine installing unarmed, and every one holds the lock.
			fmt.Fprintf(o.log, "nix8s: %s: machine %s was left installing by an earlier attempt that is gone (its daemon stopped or died: the install lock was free); installing it again\n", host, mach.MAC)
			if err := o.move(member, o.failedOf(store.StateInstalling), fmt.Sprintf("install job %d: an earlier attempt, gone, left it installing; installing again", o.job)); err != nil {
				return err
			}
		}
	}
	return o.move(member, store.StateInstalling, fmt.Sprintf("install job %d: nixos-anywhere starts", o.job))
}

// takeLock takes member's lock (store.LockMember) for this attempt, waiting at most lockWait for another
// attempt (an install or a rollout, of this daemon or a dead one) to let go. Installs and rollouts of one
// member exclude each other.
func (o *machineObserver) takeLock(member string) error {
	host := o.c.Members[member].HostName
	lock, err := o.st.LockMember(o.jobCtx, o.c.Name, member, o.holder, o.lockWait, func(h *store.LockHeldError) {
		who := "another attempt"
		if h.Holder != "" {
			who = h.Holder
		}
		fmt.Fprintf(o.log, "nix8s: %s: waiting up to %s for %s to let go of the member's lock\n", host, o.lockWait, who)
	})
	if err != nil {
		return err
	}
	o.mu.Lock()
	if o.locks == nil {
		o.locks = map[string]*store.MemberLock{}
	}
	o.locks[member] = lock
	o.mu.Unlock()
	return nil
}

// lock is the install lock held for member; nil when none is.
func (o *machineObserver) lock(member string) *store.MemberLock {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.locks[member]
}

// release lets member's install lock go.
func (o *machineObserver) release(member string) {
	o.mu.Lock()
	l := o.locks[member]
	delete(o.locks, member)
	o.mu.Unlock()
	if l != nil {
		l.Release()
	}
}

// releaseAll lets every lock still held go, when the job ends.
func (o *machineObserver) releaseAll() {
	o.mu.Lock()
	members := make([]string, 0, len(o.locks))
	for m := range o.locks {
		members = append(members, m)
	}
	o.mu.Unlock()
	for _, m := range members {
		o.release(m)
	}
}

// lockedInstaller runs nixos-anywhere for a member under its install lock, taken with the machine's move to
// installing (Installing) right before, and stops it when the lock is lost: from then on another attempt may
// start.
type lockedInstaller struct {
	obs   *machineObserver
	inner provision.Installer
}

func (l *lockedInstaller) Install(ctx context.Context, s provision.Step) error {
	if err := l.obs.Installing(s.Member); err != nil {
		return err
	}
	lock := l.obs.lock(s.Member)
	if lock == nil {
		return fmt.Errorf("member %s: its install lock is not held; not starting nixos-anywhere", s.Member)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(lock.Lost(), func() { cancel(context.Cause(lock.Lost())) })
	defer stop()
	err := l.inner.Install(ctx, s)
	if err != nil && lock.Lost().Err() != nil {
		return fmt.Errorf("nixos-anywhere stopped: %w", context.Cause(lock.Lost()))
	}
	return err
}

// Installed comes when nixos-anywhere finished and the token files are delivered (provision.PhaseInstall
// done): the member boots its configuration and k3s joins.
func (o *machineObserver) Installed(member string) {
	o.release(member)
	if o.current(member) != store.StateInstalling {
		return
	}
	o.warn(o.move(member, store.StateJoined, fmt.Sprintf("install job %d: installed; k3s joins", o.job)))
	if o.c.Members[member].Role != "server" && o.machines[member] != nil {
		o.mu.Lock()
		o.agents = append(o.agents, member)
		o.mu.Unlock()
	}
}

// Ready comes when a server's readiness wait succeeded, or an agent given a join token is a Ready node
// (provision.PhaseReady done).
func (o *machineObserver) Ready(member string) {
	if o.current(member) != store.StateJoined {
		return
	}
	o.warn(o.move(member, store.StateReady, fmt.Sprintf("install job %d: a Ready node", o.job)))
}

// Failed comes with the member's failure: the machine goes to the failed state of the state this job moved it to
// (installing: install_failed, joined: join_failed; machine_states.failed_state).
func (o *machineObserver) Failed(member string, err error) {
	o.release(member)
	if cur := o.current(member); cur == store.StateInstalling || cur == store.StateJoined {
		o.warn(o.move(member, o.failedOf(cur), fmt.Sprintf("install job %d: %v", o.job, err)))
	}
}

// waitAgents waits until the agents this job installed are Ready nodes (asked on the first server), moving
// their machines to ready, or to join_failed when the wait runs out. Install itself waits only for the
// agents it gave a join token (their machines are ready already); the others' machines' states wait here.
func (o *machineObserver) waitAgents(ctx context.Context, ready provision.Readiness, timeout, interval time.Duration) error {
	var pending []string
	o.mu.Lock()
	for _, m := range o.agents {
		// An agent given a join token is ready already: Install waited for it to delete the token.
		if o.state[m] == store.StateJoined {
			pending = append(pending, m)
		}
	}
	o.mu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	sort.Strings(pending)
	host := remote.HostOf(o.c.Members[o.c.FirstServer])
	fmt.Fprintf(o.log, "nix8s: %s: waiting until %d agent(s) are Ready nodes\n", o.c.Name, len(pending))
	last := map[string]error{}
	_, err := wait.Poll(ctx, timeout, interval, func(ctx context.Context) error {
		var still []string
		for _, m := range pending {
			if err := ready.NodeReady(ctx, host, o.c.Members[m].HostName); err != nil {
				if ctx.Err() == nil || last[m] == nil {
					last[m] = err
				}
				still = append(still, m)
				continue
			}
			o.warn(o.move(m, store.StateReady, fmt.Sprintf("install job %d: a Ready node", o.job)))
		}
		pending = still
		if len(pending) > 0 {
			return fmt.Errorf("%d agent(s) not Ready yet", len(pending))
		}
		return nil
	})
	if err == nil {
		return nil
	}
	var errs []error
	for _, m := range pending {
		host := o.c.Members[m].HostName
		var merr error
		if errors.Is(err, context.DeadlineExceeded) {
			merr = fmt.Errorf("%s: timed out after %s waiting for it to be a Ready node; last answer: %v", host, timeout, last[m])
		} else {
			merr = fmt.Errorf("%s: waiting for it to be a Ready node: %w", host, err)
		}
		o.Failed(m, merr)
		errs = append(errs, merr)
	}
	return errors.Join(errs...)
}
