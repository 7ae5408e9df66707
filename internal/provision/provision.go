// Package provision installs cluster members with nixos-anywhere in the order of the plan's provision waves:
// the first server, then (once its API answers /readyz) each other server alone until it is a Ready node
// (concurrent etcd joins fail), then the agents in parallel. Members that already run NixOS as themselves are
// skipped, never wiped, unless Reinstall. The first failure stops the install.
//
// Host keys: the probe and nixos-anywhere's own connections must present a key the known_hosts files hold
// (NixosAnywhere). The installed system gets an ed25519 host key chosen here (or the one in its extra files),
// sent with the install; the token files follow after its first boot, over ssh that accepts that key alone
// (Pinned), which is then recorded in the known_hosts file for later connections.
package provision

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/progress"
	"github.com/nix8s/nix8s/internal/remote"
	"github.com/nix8s/nix8s/internal/wait"
)

// Status is what became of one member.
type Status string

const (
	Done       Status = "done"        // installed (and, for servers, ready)
	Skipped    Status = "skipped"     // already runs NixOS as itself
	Failed     Status = "failed"      // the install or the wait for readiness failed
	NotStarted Status = "not-started" // an earlier failure stopped the install first
	Planned    Status = "planned"     // dry run: would be probed and installed
)

// Phase is one step of a member's install, in this order.
type Phase string

const (
	PhaseProbe   Phase = "probe"      // does it run NixOS as itself already?
	PhaseInstall Phase = "install"    // nixos-anywhere, then the token files over ssh
	PhaseReady   Phase = "wait-ready" // the API (first server) or the node (other servers, agents with a join token)
)

// Defaults of Options.
const (
	DefaultParallel     = 10
	DefaultWaitTimeout  = 10 * time.Minute
	DefaultWaitInterval = 2 * time.Second
)

// Options say what to install and with what.
type Options struct {
	// Flake is the flake holding nixosConfigurations.<c>-<m>; default ".".
	Flake string
	// Members limits the install to these members (in wave order regardless of the order given); empty
	// means every member.
	Members []string
	// Parallel bounds how many agents install at once; default DefaultParallel.
	Parallel int
	// Reinstall installs members that already run NixOS as themselves.
	Reinstall bool
	// DryRun reports the steps without touching any machine.
	DryRun bool
	// Tokens are delivered as the members' token files, after the install, through Deliverer; nil delivers
	// none (the files come some other way, such as sops-nix).
	Tokens *Tokens
	// JoinTokens, when set with Tokens, gives each agent a join token of its own at its token file instead of
	// a token of Tokens (JoinTokens.DeliverJoinToken, as nix8sd's network installs do): made on a ready
	// server over ssh, deleted there once the agent is a Ready node, which Install then waits for. Its TTL
	// defaults to DefaultJoinTokenTTL, its waits to WaitTimeout and WaitInterval, its Log to Progress.
	JoinTokens *JoinTokens
	// ExtraFiles is a directory with one subdirectory per member host name (`<c>-<m>`) whose tree is
	// delivered onto that member's / with the install, such as its age key; empty means none.
	ExtraFiles string
	// WaitTimeout bounds each wait for readiness; default DefaultWaitTimeout.
	WaitTimeout time.Duration
	// WaitInterval is the pause between readiness probes; default DefaultWaitInterval.
	WaitInterval time.Duration

	// Runner probes members over ssh.
	Runner remote.Runner
	// Installer installs one member (NixosAnywhere).
	Installer Installer
	// Readiness probes the API and nodes (SSHReadiness).
	Readiness Readiness
	// Deliverer reaches each installed member with its new host key only, writes its token files and
	// records the key (Pinned); nil means a Pinned over remote.SSH{} that records into the user's
	// known_hosts.
	Deliverer Deliverer
	// Progress gets the install's events; nil discards them. Besides the messages of each phase, two
	// milestones come as events without a message: Done of PhaseInstall once nixos-anywhere finished and the
	// token files are delivered (the member boots its configuration, k3s joins), and Done of PhaseReady once a
	// server's readiness wait succeeded (the API answers /readyz on the first server, the node is Ready for
	// the others), or an agent given a join token (JoinTokens) is a Ready node; Install waits for no other
	// agent. A member ends with Done or Skipped (no phase), or Failed (its Err the error the report holds).
	// A skipped member (or one that fails its probe) has no PhaseInstall events; a skipped server still waits
	// for readiness. Events for different agents may come concurrently.
	Progress progress.Reporter
}

// Report is the outcome of an install, one entry per selected member in wave order.
type Report struct {
	Cluster string         `json:"cluster"`
	DryRun  bool           `json:"dryRun"`
	Members []MemberReport `json:"members"`
}

// MemberReport is what happened to one member.
type MemberReport struct {
	Name     string  `json:"name"`
	HostName string  `json:"hostName"`
	Role     string  `json:"role"`
	Wave     int     `json:"wave"` // 1-based provision wave
	Status   Status  `json:"status"`
	Error    string  `json:"error,omitempty"`
	Seconds  float64 `json:"seconds"`
	// HostKey is the installed system's public ssh host key (`<type> <base64>`), the one its token files were
	// delivered to; empty for a member that was not installed.
	HostKey string `json:"hostKey,omitempty"`
	// JoinToken is an agent's join token (Options.JoinTokens: its id, description, server and expiry, never
	// its value); JoinTokenRevoked says it was deleted once the agent was a Ready node.
	JoinToken        *JoinToken `json:"joinToken,omitempty"`
	JoinTokenRevoked bool       `json:"joinTokenRevoked,omitempty"`
	// Steps is what a dry run would do, in order.
	Steps []string `json:"steps,omitempty"`
}

// Counts renders "3 done, 1 skipped" for the statuses present.
func (r *Report) Counts() string {
	return progress.Counts(r.Members, func(m MemberReport) Status { return m.Status }, Done, Skipped, Failed, NotStarted, Planned)
}

// Install installs the members of cluster c. The error is the first failure (also in the report); the report
// is complete even then.
func Install(ctx context.Context, c core.Cluster, o Options) (*Report, error) {
	o.defaults()
	o = cozystackInstall(c, o)
	if err := c.CheckMembers(o.Members); err != nil {
		return nil, err
	}
	waves := core.SelectWaves(c.Provision, o.Members)
	in := &install{c: c, o: o, report: &Report{Cluster: c.Name, DryRun: o.DryRun}, index: map[string]int{},
		em: progress.Emitter{Reporter: o.Progress, Cluster: c.Name}}
	for wi, wave := range waves {
		for _, m := range wave {
			in.index[m] = len(in.report.Members)
			in.report.Members = append(in.report.Members, MemberReport{
				Name: m, HostName: c.Members[m].HostName, Role: c.Members[m].Role, Wave: wi + 1, Status: NotStarted,
			})
		}
	}
	if err := in.checkFiles(ctx); err != nil {
		return nil, err
	}
	if o.DryRun {
		for i := range in.report.Members {
			mr := &in.report.Members[i]
			mr.Status = Planned
			mr.Steps = in.steps(ctx, mr.Name)
		}
		return in.report, nil
	}
	for wi, wave := range waves {
		if len(wave) == 0 {
			continue
		}
		in.em.Say("%s: wave %d/%d: %s", c.Name, wi+1, len(waves), strings.Join(wave, ", "))
		// The plan decides what may go together: a server's wave holds the server alone (concurrent etcd joins
		// fail), the agents' wave goes --parallel at a time.
		if err := in.parallel(ctx, wave); err != nil {
			return in.report, err
		}
	}
	return in.report, nil
}

func (o *Options) defaults() {
	if o.Flake == "" {
		o.Flake = "."
	}
	if o.Parallel <= 0 {
		o.Parallel = DefaultParallel
	}
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = DefaultWaitTimeout
	}
	if o.WaitInterval <= 0 {
		o.WaitInterval = DefaultWaitInterval
	}
	if o.Progress == nil {
		o.Progress = progress.Discard
	}
	if o.Deliverer == nil {
		o.Deliverer = &Pinned{WaitTimeout: o.WaitTimeout, WaitInterval: o.WaitInterval, KeyFrom: InstalledKeyFrom, Record: true, Log: Log(o.Progress)}
	}
	if o.JoinTokens != nil {
		jt := *o.JoinTokens
		if jt.TTL == 0 {
			jt.TTL = DefaultJoinTokenTTL
		}
		if jt.WaitTimeout <= 0 {
			jt.WaitTimeout = o.WaitTimeout
		}
		if jt.WaitInterval <= 0 {
			jt.WaitInterval = o.WaitInterval
		}
		if jt.Log == nil {
			jt.Log = Log(o.Progress)
		}
		o.JoinTokens = &jt
	}
}

// joins says whether member m gets a join token instead of a token of Tokens (Options.JoinTokens).
func (in *install) joins(m string) bool {
	return in.o.JoinTokens != nil && in.o.Tokens != nil && in.c.Members[m].Role != "server"
}

// InstalledKeyFrom names the host key of an install over ssh in messages (Pinned.KeyFrom).
const InstalledKeyFrom = "its install was given"

// HostKeyPath is where the installed system's ed25519 host key goes: NixOS's default
// services.openssh.hostKeys path (nixos/modules/services/networking/ssh/sshd.nix), where sshd finds it and
// makes no other.
const HostKeyPath = "/etc/ssh/ssh_host_ed25519_key"

// Log is an io.Writer for the parts that print their own `nix8s: ...` lines (Pinned, JoinTokens): each line
// becomes a message event of r.
func Log(r progress.Reporter) io.Writer {
	return progress.Writer(r, func(line string) progress.Event {
		return progress.Event{Time: time.Now(), Status: progress.Running, Message: strings.TrimPrefix(line, "nix8s: ")}
	})
}

type install struct {
	c      core.Cluster
	o      Options
	mu     sync.Mutex
	report *Report
	index  map[string]int
	phase  map[string]Phase // the phase each member is in, for its Failed event
	em     progress.Emitter
}

// event reports what happens to member m in phase; an empty format is a milestone without a message.
func (in *install) event(m string, phase Phase, status progress.Status, format string, args ...any) {
	in.mu.Lock()
	if in.phase == nil {
		in.phase = map[string]Phase{}
	}
	if phase != "" {
		in.phase[m] = phase
	}
	in.mu.Unlock()
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	in.em.Emit(progress.Event{Member: m, Node: in.c.Members[m].HostName, Phase: string(phase), Status: status, Message: msg})
}

func (in *install) set(m string, f func(*MemberReport)) {
	in.mu.Lock()
	defer in.mu.Unlock()
	f(&in.report.Members[in.index[m]])
}

func (in *install) host(m string) remote.Host {
	return remote.HostOf(in.c.Members[m])
}

// checkFiles refuses files that could not be delivered before anything starts.
func (in *install) checkFiles(ctx context.Context) error {
	var errs []error
	for _, mr := range in.report.Members {
		if _, _, err := in.files(mr.Name); err != nil {
			errs = append(errs, err)
		} else if _, _, err := in.hostKey(ctx, mr.Name, true); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// files are what member m gets: its token files (after the install) and its extra files (with it).
func (in *install) files(m string) (tokens, extra []File, err error) {
	if in.o.Tokens != nil {
		if tokens, err = TokenFiles(in.c, m, *in.o.Tokens); err != nil {
			return nil, nil, err
		}
	}
	host := in.c.Members[m].HostName
	if extra, err = MemberExtraFiles(in.o.ExtraFiles, host); err != nil {
		return nil, nil, err
	}
	for _, e := range extra {
		for _, f := range tokens {
			if f.Path == e.Path {
				return nil, nil, fmt.Errorf("%s: extra file %s would replace the %s file", host, e.Path, f.Name)
			}
		}
	}
	return tokens, extra, nil
}

// hostKey is the installed system's host key for member m and the files its install carries: the key at
// HostKeyPath among its extra files (the operator's own), else a new ed25519 key (none is generated when
// check is set: only the extra files' key is checked).
func (in *install) hostKey(ctx context.Context, m string, check bool) (string, []File, error) {
	host := in.c.Members[m].HostName
	_, extra, err := in.files(m)
	if err != nil {
		return "", nil, err
	}
	var priv, pub *File
	for i, f := range extra {
		switch f.Path {
		case HostKeyPath:
			priv = &extra[i]
		case HostKeyPath + ".pub":
			pub = &extra[i]
		}
	}
	switch {
	case priv != nil:
		key, err := remote.PublicHostKey(ctx, priv.Value)
		if err != nil {
			return "", nil, fmt.Errorf("%s: extra file %s: %w", host, HostKeyPath, err)
		}
		if pub == nil {
			extra = append(extra, File{Path: HostKeyPath + ".pub", Name: "hostKey.pub", Value: key + "\n", Mode: 0o644})
		} else if f := strings.Fields(pub.Value); len(f) < 2 || f[0]+" "+f[1] != key {
			return "", nil, fmt.Errorf("%s: extra file %s.pub is not the public half of %s", host, HostKeyPath, HostKeyPath)
		}
		return key, extra, nil
	case pub != nil:
		return "", nil, fmt.Errorf("%s: extra file %s.pub comes without its private key %s", host, HostKeyPath, HostKeyPath)
	case check:
		return "", extra, nil
	}
	k, err := remote.NewHostKey(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("%s: generating its host key: %w", host, err)
	}
	files := []File{
		{Path: HostKeyPath, Name: "hostKey", Value: k.Private},
		{Path: HostKeyPath + ".pub", Name: "hostKey.pub", Value: k.Public + "\n", Mode: 0o644},
	}
	return k.Public, append(files, extra...), nil
}

// member installs one member and, for a server, waits until it is ready.
func (in *install) member(ctx context.Context, m string) error {
	start := time.Now()
	in.set(m, func(r *MemberReport) { r.Status = Failed })
	err := in.installMember(ctx, m)
	in.set(m, func(r *MemberReport) {
		r.Seconds = time.Since(start).Seconds()
		if err != nil {
			r.Error = err.Error()
		} else if r.Status == Failed {
			r.Status = Done
		}
	})
	if err != nil {
		in.mu.Lock()
		phase := in.phase[m]
		in.mu.Unlock()
		in.em.Emit(progress.Event{Member: m, Node: in.c.Members[m].HostName, Phase: string(phase), Status: progress.Failed,
			Message: fmt.Sprintf("failed: %v", err), Err: err})
		return err
	}
	var status Status
	in.set(m, func(r *MemberReport) { status = r.Status })
	final := progress.Done
	if status == Skipped {
		final = progress.Skipped
	}
	in.event(m, "", final, "%s in %s", status, time.Since(start).Round(100*time.Millisecond))
	return nil
}

func (in *install) installMember(ctx context.Context, m string) error {
	mem := in.c.Members[m]
	host := in.host(m)
	in.event(m, PhaseProbe, progress.Running, "")
	installed, err := Installed(ctx, in.o.Runner, host, mem.HostName)
	if err != nil {
		return fmt.Errorf("probing %s: %w", mem.HostName, err)
	}
	if installed && !in.o.Reinstall {
		in.set(m, func(r *MemberReport) { r.Status = Skipped })
		in.event(m, PhaseProbe, progress.Running, "already runs NixOS as %s, skipped (--reinstall installs it anyway)", mem.HostName)
	} else {
		tokens, _, _ := in.files(m) // checked by checkFiles
		key, files, err := in.hostKey(ctx, m, false)
		if err != nil {
			return err
		}
		in.event(m, PhaseInstall, progress.Running, "installing %s#%s on %s", in.o.Flake, mem.HostName, host.Target())
		step := Step{Cluster: in.c.Name, Member: m, HostName: mem.HostName, Role: mem.Role, Host: host, Flake: in.o.Flake, Files: files}
		if err := in.o.Installer.Install(ctx, step); err != nil {
			return fmt.Errorf("installing %s: %w", mem.HostName, err)
		}
		in.event(m, PhaseInstall, progress.Running, "installed with the host key %s", Fingerprint(key))
		if in.joins(m) {
			// The agent's one token file (TokenFiles checked its path) holds its own join token instead.
			_, tok, err := in.o.JoinTokens.DeliverJoinToken(ctx, in.c, m, in.o.Deliverer, host, key, nil)
			if err != nil {
				return err
			}
			in.set(m, func(r *MemberReport) { r.JoinToken = &tok })
		} else if _, err := in.o.Deliverer.Deliver(ctx, host, key, tokens); err != nil {
			return err
		}
		in.set(m, func(r *MemberReport) { r.HostKey = key })
		in.event(m, PhaseInstall, progress.Done, "")
	}
	if mem.Role != "server" {
		var tok *JoinToken
		in.set(m, func(r *MemberReport) { tok = r.JoinToken })
		if tok == nil {
			return nil
		}
		in.event(m, PhaseReady, progress.Running, "waiting until it is a Ready node, to delete its join token %s", tok.ID)
		if err := in.o.JoinTokens.RevokeWhenReady(ctx, *tok, mem.HostName, in.o.WaitTimeout, in.o.WaitInterval); err != nil {
			return fmt.Errorf("%s: installed, but %w", mem.HostName, err)
		}
		in.set(m, func(r *MemberReport) { r.JoinTokenRevoked = true })
		in.event(m, PhaseReady, progress.Running, "a Ready node; deleted its join token %s on %s", tok.ID, tok.Server)
		in.event(m, PhaseReady, progress.Done, "")
		return nil
	}
	if m == in.c.FirstServer {
		in.event(m, PhaseReady, progress.Running, "waiting for the API to answer /readyz")
		err = in.wait(ctx, mem.HostName, "the API to answer /readyz", func(ctx context.Context) error {
			return in.o.Readiness.APIReady(ctx, host)
		})
	} else {
		in.event(m, PhaseReady, progress.Running, "waiting until it is a Ready node")
		err = in.wait(ctx, mem.HostName, "it to be a Ready node", func(ctx context.Context) error {
			return in.o.Readiness.NodeReady(ctx, host, mem.HostName)
		})
	}
	if err == nil {
		in.event(m, PhaseReady, progress.Done, "")
	}
	return err
}

// wait probes until probe succeeds; running out of time is an error that carries the last probe's answer.
func (in *install) wait(ctx context.Context, host, what string, probe func(context.Context) error) error {
	last, err := wait.Poll(ctx, in.o.WaitTimeout, in.o.WaitInterval, probe)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: timed out after %s waiting for %s; last answer: %v", host, in.o.WaitTimeout, what, last)
	default:
		return fmt.Errorf("%s: waiting for %s: %w", host, what, err)
	}
}

// parallel installs a wave of agents, at most Parallel at a time. After a failure no further agent starts;
// those already installing finish (killing nixos-anywhere mid-partitioning helps nobody).
func (in *install) parallel(ctx context.Context, wave []string) error {
	sem := make(chan struct{}, in.o.Parallel)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	stopped := make(chan struct{})
	for _, m := range wave {
		select {
		case sem <- struct{}{}:
		case <-stopped:
		}
		select {
		case <-stopped:
			wg.Wait()
			return first
		default:
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := in.member(ctx, m); err != nil {
				once.Do(func() { first = err; close(stopped) })
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return first
}

// steps is what a dry run reports for member m.
func (in *install) steps(ctx context.Context, m string) []string {
	mem := in.c.Members[m]
	host := in.host(m)
	steps := []string{fmt.Sprintf("probe %s over ssh: skip when it already runs NixOS as %s", host.Target(), mem.HostName)}
	if in.o.Reinstall {
		steps[0] = fmt.Sprintf("install even when %s already runs NixOS as %s (--reinstall)", host.Target(), mem.HostName)
	}
	tokens, _, _ := in.files(m)
	key, files, _ := in.hostKey(ctx, m, true)
	if key == "" {
		steps = append(steps, "generate an ed25519 host key for the installed system, "+HostKeyPath)
		files = append([]File{{Path: HostKeyPath, Name: "hostKey"}, {Path: HostKeyPath + ".pub", Name: "hostKey.pub", Mode: 0o644}}, files...)
	} else {
		steps = append(steps, "the installed system's host key is "+HostKeyPath+" of the extra files ("+Fingerprint(key)+")")
	}
	ssh := &remote.SSH{}
	if na, ok := in.o.Installer.(*NixosAnywhere); ok && na.SSH != nil {
		ssh = na.SSH
	}
	known := ssh.KnownHostsFile
	if known == "" {
		known = "the user's known_hosts"
	}
	args := NixosAnywhereArgs(Step{HostName: mem.HostName, Host: host, Flake: in.o.Flake, Files: files}, "<extra-files>", ssh.HostKeyOptions(host, nil))
	steps = append(steps, "nixos-anywhere "+remote.QuoteArgs(args...),
		"  its ssh accepts only host keys in "+known+" (StrictHostKeyChecking=yes), before kexec and after")
	for _, f := range files {
		steps = append(steps, fmt.Sprintf("  copy %s (%s) with mode %04o", f.Path, f.Name, f.mode()))
	}
	if in.joins(m) {
		steps = append(steps, fmt.Sprintf("make a join token on a ready server: k3s token create --ttl %s --description %s",
			in.o.JoinTokens.TTL, JoinTokenDescription(in.c.Name, m)))
		tokens = []File{{Path: mem.K3s.TokenFile, Name: "joinToken"}}
	}
	steps = append(steps, "wait for ssh with the installed system's host key alone")
	for _, f := range tokens {
		steps = append(steps, fmt.Sprintf("  deliver %s (%s) with mode 0600", f.Path, f.Name))
	}
	steps = append(steps, "record the installed system's host key in "+known)
	switch {
	case mem.Role != "server" && in.joins(m):
		steps = append(steps, fmt.Sprintf("wait until %s is a Ready node (at most %s), then delete its join token", mem.HostName, in.o.WaitTimeout))
	case mem.Role != "server":
	case m == in.c.FirstServer:
		steps = append(steps, fmt.Sprintf("wait until the API answers /readyz (at most %s)", in.o.WaitTimeout))
	default:
		steps = append(steps, fmt.Sprintf("wait until %s is a Ready node (at most %s)", mem.HostName, in.o.WaitTimeout))
	}
	return steps
}

// Installed reports whether host already runs NixOS as hostName: its hostname is hostName and /etc/NIXOS
// exists. A NixOS installer (hostname "nixos") is not installed.
func Installed(ctx context.Context, r remote.Runner, host remote.Host, hostName string) (bool, error) {
	out, err := r.Run(ctx, host, "uname -n; if test -e /etc/NIXOS; then echo nixos; else echo other; fi")
	if err != nil {
		return false, err
	}
	lines := strings.Fields(string(out))
	if len(lines) != 2 {
		return false, fmt.Errorf("%s: unexpected answer to the NixOS probe: %q", host, out)
	}
	return lines[0] == hostName && lines[1] == "nixos", nil
}
