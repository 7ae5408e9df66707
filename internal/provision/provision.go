// Package provision installs cluster members with nixos-anywhere in the order of the plan's provision waves:
// the first server, then (once its API answers /readyz) each other server alone until it is a Ready node
// (concurrent etcd joins fail), then the agents in parallel. Members that already run NixOS as themselves are
// skipped, never wiped, unless Reinstall. The first failure stops the install.
package provision

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/remote"
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
	// Tokens are delivered as the members' token files; nil delivers none (the files come some other way,
	// such as sops-nix).
	Tokens *Tokens
	// ExtraFiles is a directory with one subdirectory per member host name (`<c>-<m>`) whose tree is
	// delivered onto that member's / with the install, such as its age key; empty means none.
	ExtraFiles string
	// SSH is provisioning.nixos-anywhere.ssh.
	SSH remote.Settings
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
	// Progress receives progress lines (stderr); nil discards them.
	Progress io.Writer
	// Observer, when set, hears of each member's progress (nix8sd moves the assigned machine through its
	// states); nil observes nothing.
	Observer Observer
}

// Observer hears what happens to each member while Install runs. Calls for different agents may come
// concurrently. A member that is skipped (or fails its probe) sees no Installing or Installed; a skipped
// server still sees Ready or Failed from its readiness wait.
type Observer interface {
	// Installing comes right before nixos-anywhere starts on member; an error stops that member's install
	// (nothing touched its disk yet) and fails it with that error.
	Installing(member string) error
	// Installed comes when nixos-anywhere finished: the member boots its configuration and k3s joins.
	Installed(member string)
	// Ready comes when a server's readiness wait succeeded (the API answers /readyz on the first server, the
	// node is Ready for the others). Install does not wait for agents.
	Ready(member string)
	// Failed comes when the member failed, with the error the report holds.
	Failed(member string, err error)
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
	// Steps is what a dry run would do, in order.
	Steps []string `json:"steps,omitempty"`
}

// Counts renders "3 done, 1 skipped" for the statuses present.
func (r *Report) Counts() string {
	n := map[Status]int{}
	for _, m := range r.Members {
		n[m.Status]++
	}
	var parts []string
	for _, s := range []Status{Done, Skipped, Failed, NotStarted, Planned} {
		if n[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n[s], s))
		}
	}
	return strings.Join(parts, ", ")
}

// Install installs the members of cluster c. The error is the first failure (also in the report); the report
// is complete even then.
func Install(ctx context.Context, c core.Cluster, o Options) (*Report, error) {
	o.defaults()
	waves, err := selectWaves(c, o.Members)
	if err != nil {
		return nil, err
	}
	in := &install{c: c, o: o, report: &Report{Cluster: c.Name, DryRun: o.DryRun}, index: map[string]int{}}
	for wi, wave := range waves {
		for _, m := range wave {
			in.index[m] = len(in.report.Members)
			in.report.Members = append(in.report.Members, MemberReport{
				Name: m, HostName: c.Members[m].HostName, Role: c.Members[m].Role, Wave: wi + 1, Status: NotStarted,
			})
		}
	}
	if err := in.checkFiles(); err != nil {
		return nil, err
	}
	if o.DryRun {
		for i := range in.report.Members {
			mr := &in.report.Members[i]
			mr.Status = Planned
			mr.Steps = in.steps(mr.Name)
		}
		return in.report, nil
	}
	for wi, wave := range waves {
		if len(wave) == 0 {
			continue
		}
		in.progress("%s: wave %d/%d: %s", c.Name, wi+1, len(waves), strings.Join(wave, ", "))
		var err error
		if c.Members[wave[0]].Role == "server" {
			// Server waves hold one member each; should the plan ever put several in one, they still go one at
			// a time.
			for _, m := range wave {
				if err = in.member(ctx, m); err != nil {
					break
				}
			}
		} else {
			err = in.parallel(ctx, wave)
		}
		if err != nil {
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
		o.Progress = io.Discard
	}
}

// CheckMembers is nil when every name is a member of c, else an error that lists c's members.
func CheckMembers(c core.Cluster, members []string) error {
	_, err := selectWaves(c, members)
	return err
}

// selectWaves is the plan's provision waves cut down to the selected members; unknown names are an error
// that lists the cluster's members.
func selectWaves(c core.Cluster, members []string) ([][]string, error) {
	if len(members) > 0 {
		var unknown []string
		for _, m := range members {
			if _, ok := c.Members[m]; !ok {
				unknown = append(unknown, fmt.Sprintf("%q", m))
			}
		}
		if len(unknown) > 0 {
			return nil, fmt.Errorf("cluster %q has no member %s; members: %s", c.Name, strings.Join(unknown, ", "), MemberNames(c))
		}
	}
	var waves [][]string
	for _, wave := range c.Provision {
		var w []string
		for _, m := range wave {
			if len(members) == 0 || slices.Contains(members, m) {
				w = append(w, m)
			}
		}
		if len(w) > 0 {
			waves = append(waves, w)
		}
	}
	return waves, nil
}

// MemberNames lists a cluster's members for messages: "server1", "agent1".
func MemberNames(c core.Cluster) string {
	names := make([]string, 0, len(c.Members))
	for n := range c.Members {
		names = append(names, fmt.Sprintf("%q", n))
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

type install struct {
	c      core.Cluster
	o      Options
	mu     sync.Mutex
	report *Report
	index  map[string]int
}

func (in *install) progress(format string, args ...any) {
	in.mu.Lock()
	defer in.mu.Unlock()
	fmt.Fprintf(in.o.Progress, "nix8s: "+format+"\n", args...)
}

func (in *install) set(m string, f func(*MemberReport)) {
	in.mu.Lock()
	defer in.mu.Unlock()
	f(&in.report.Members[in.index[m]])
}

func (in *install) host(m string) remote.Host {
	mem := in.c.Members[m]
	return in.o.SSH.Host(mem.HostName, mem.IP)
}

// checkFiles refuses token files that could not be delivered before anything starts.
func (in *install) checkFiles() error {
	var errs []error
	for _, mr := range in.report.Members {
		if _, err := in.files(mr.Name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// files are what member m gets with its install: its token files and its extra files.
func (in *install) files(m string) ([]File, error) {
	var files []File
	if in.o.Tokens != nil {
		t, err := TokenFiles(in.c, m, *in.o.Tokens)
		if err != nil {
			return nil, err
		}
		files = t
	}
	extra, err := MemberExtraFiles(in.o.ExtraFiles, in.c.Members[m].HostName)
	if err != nil {
		return nil, err
	}
	for _, e := range extra {
		for _, f := range files {
			if f.Path == e.Path {
				return nil, fmt.Errorf("%s: extra file %s would replace the %s file", in.c.Members[m].HostName, e.Path, f.Name)
			}
		}
	}
	return append(files, extra...), nil
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
	host := in.c.Members[m].HostName
	if err != nil {
		if in.o.Observer != nil {
			in.o.Observer.Failed(m, err)
		}
		in.progress("%s: failed: %v", host, err)
		return err
	}
	in.progress("%s: %s in %s", host, in.report.Members[in.index[m]].Status, time.Since(start).Round(100*time.Millisecond))
	return nil
}

func (in *install) installMember(ctx context.Context, m string) error {
	mem := in.c.Members[m]
	host := in.host(m)
	installed, err := Installed(ctx, in.o.Runner, host, mem.HostName)
	if err != nil {
		return fmt.Errorf("probing %s: %w", mem.HostName, err)
	}
	if installed && !in.o.Reinstall {
		in.set(m, func(r *MemberReport) { r.Status = Skipped })
		in.progress("%s: already runs NixOS as %s, skipped (--reinstall installs it anyway)", mem.HostName, mem.HostName)
	} else {
		files, _ := in.files(m) // checked by checkFiles
		in.progress("%s: installing %s#%s on %s", mem.HostName, in.o.Flake, mem.HostName, host.Target())
		step := Step{Member: m, HostName: mem.HostName, Role: mem.Role, Host: host, Flake: in.o.Flake, Files: files}
		if in.o.Observer != nil {
			if err := in.o.Observer.Installing(m); err != nil {
				return fmt.Errorf("installing %s: %w", mem.HostName, err)
			}
		}
		if err := in.o.Installer.Install(ctx, step); err != nil {
			return fmt.Errorf("installing %s: %w", mem.HostName, err)
		}
		if in.o.Observer != nil {
			in.o.Observer.Installed(m)
		}
	}
	if mem.Role != "server" {
		return nil
	}
	if m == in.c.FirstServer {
		in.progress("%s: waiting for the API to answer /readyz", mem.HostName)
		err = in.wait(ctx, mem.HostName, "the API to answer /readyz", func(ctx context.Context) error {
			return in.o.Readiness.APIReady(ctx, host)
		})
	} else {
		in.progress("%s: waiting until it is a Ready node", mem.HostName)
		err = in.wait(ctx, mem.HostName, "it to be a Ready node", func(ctx context.Context) error {
			return in.o.Readiness.NodeReady(ctx, host, mem.HostName)
		})
	}
	if err == nil && in.o.Observer != nil {
		in.o.Observer.Ready(m)
	}
	return err
}

// wait probes until probe succeeds; running out of time is an error that carries the last probe's answer.
func (in *install) wait(ctx context.Context, host, what string, probe func(context.Context) error) error {
	last, err := Poll(ctx, in.o.WaitTimeout, in.o.WaitInterval, probe)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: timed out after %s waiting for %s; last answer: %v", host, in.o.WaitTimeout, what, last)
	default:
		return fmt.Errorf("%s: waiting for %s: %w", host, what, err)
	}
}

// Poll runs probe every interval until it succeeds or timeout passes. It returns nil on success; otherwise the
// error of the last probe that finished in time, and why it stopped (context.DeadlineExceeded for the timeout,
// or ctx's own error).
func Poll(ctx context.Context, timeout, interval time.Duration, probe func(context.Context) error) (last, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := probe(ctx)
		if err == nil {
			return nil, nil
		}
		if ctx.Err() == nil || last == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(interval):
		}
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
func (in *install) steps(m string) []string {
	mem := in.c.Members[m]
	host := in.host(m)
	steps := []string{fmt.Sprintf("probe %s over ssh: skip when it already runs NixOS as %s", host.Target(), mem.HostName)}
	if in.o.Reinstall {
		steps[0] = fmt.Sprintf("install even when %s already runs NixOS as %s (--reinstall)", host.Target(), mem.HostName)
	}
	files, _ := in.files(m)
	args := NixosAnywhereArgs(Step{HostName: mem.HostName, Host: host, Flake: in.o.Flake, Files: files}, "<extra-files>")
	steps = append(steps, "nixos-anywhere "+remote.QuoteArgs(args...))
	for _, f := range files {
		steps = append(steps, fmt.Sprintf("  deliver %s (%s) with mode 0600", f.Path, f.Name))
	}
	switch {
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
