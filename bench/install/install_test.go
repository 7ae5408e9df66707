// Package install benchmarks nix8s install's scheduling: 3 servers and 50 agents whose installs each take a
// fixed time T, against the critical path (first server + each other server + one agent wave: 4 T) and
// against 53 T when installed one by one. BenchmarkInstall prints the ratio; run.sh runs it.
//
// In the benchmark nixos-anywhere is a stand-in script that sleeps T (a real process per install, through the
// real NixosAnywhere installer, its ssh wrapper, extra-files directory and output plumbing). The ssh probe,
// the readiness checks and the token delivery are fakes that answer at once: they are measured against real
// sshds in internal/provision's tests, here only the waves are.
//
// TestWaves checks the scheduling itself (order, overlap, which members install together) by the order of
// events, without a clock, so that it holds on a busy machine.
package install

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/provision"
	"github.com/nix8s/nix8s/internal/remote"
)

const (
	servers = 3
	agents  = 50
)

// notInstalled is a Runner whose every member runs the NixOS installer (hostname "nixos"), so nothing is
// skipped.
type notInstalled struct{}

func (notInstalled) Run(context.Context, remote.Host, string) ([]byte, error) {
	return []byte("nixos\nnixos\n"), nil
}
func (notInstalled) Copy(context.Context, remote.Host, string, string) error { return nil }

// readyAtOnce is a Readiness whose servers are ready the moment they are installed.
type readyAtOnce struct{}

func (readyAtOnce) APIReady(context.Context, remote.Host) error          { return nil }
func (readyAtOnce) NodeReady(context.Context, remote.Host, string) error { return nil }

// deliveredAtOnce is a Deliverer that writes nothing and returns at once.
type deliveredAtOnce struct{}

func (deliveredAtOnce) Deliver(context.Context, remote.Host, string, []provision.File) (provision.Delivered, error) {
	return provision.Delivered{}, nil
}

func cluster() core.Cluster {
	c := core.Cluster{Name: "bench", FirstServer: "server1", Members: map[string]core.Member{}}
	atf := "/var/lib/nix8s/secrets/k3s-agent-token"
	for i := 1; i <= servers; i++ {
		m := fmt.Sprintf("server%d", i)
		c.Servers = append(c.Servers, m)
		c.Provision = append(c.Provision, []string{m})
		ip := fmt.Sprintf("10.0.0.%d", i)
		c.Members[m] = core.Member{Name: m, HostName: "bench-" + m, Role: "server", IP: ip, SSH: core.SSH{Host: ip, Port: 22, User: "root"},
			K3s: core.K3s{TokenFile: "/var/lib/nix8s/secrets/k3s-token", AgentTokenFile: &atf}}
	}
	for i := 1; i <= agents; i++ {
		m := fmt.Sprintf("agent%02d", i)
		c.Agents = append(c.Agents, m)
		ip := fmt.Sprintf("10.0.1.%d", i)
		c.Members[m] = core.Member{Name: m, HostName: "bench-" + m, Role: "agent", IP: ip, SSH: core.SSH{Host: ip, Port: 22, User: "root"},
			K3s: core.K3s{TokenFile: atf}}
	}
	c.Provision = append(c.Provision, c.Agents)
	return c
}

func install(tb testing.TB, ctx context.Context, installer provision.Installer, parallel int) {
	tb.Helper()
	r, err := provision.Install(ctx, cluster(), provision.Options{
		Parallel:     parallel,
		Tokens:       &provision.Tokens{Token: "t", AgentToken: "a"},
		WaitInterval: time.Millisecond,
		Runner:       notInstalled{},
		Installer:    installer,
		Readiness:    readyAtOnce{},
		Deliverer:    deliveredAtOnce{},
	})
	if err != nil {
		tb.Fatal(err)
	}
	if got := r.Counts(); got != fmt.Sprintf("%d done", servers+agents) {
		tb.Fatalf("report: %s", got)
	}
}

// recorder is the Installer of TestWaves: it records each install's start and end in the order they happen.
// An agent's install holds until as many agents install at once as the scheduler should run
// (min(parallel, agents not yet finished)), so a wave that does not run together never finishes: the
// overlap is proved by the installs reaching that number, not by how long anything took.
type recorder struct {
	parallel int

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every start and end
	events   []string      // "start <host>", "end <host>"
	running  map[string]bool
	agentsIn int // agents installing now
	maxIn    int // most agents installing at once
	ended    int // agents finished
	overlaps []string
}

func newRecorder(parallel int) *recorder {
	return &recorder{parallel: parallel, changed: make(chan struct{}), running: map[string]bool{}}
}

func (r *recorder) note(ev string) {
	r.events = append(r.events, ev)
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *recorder) Install(ctx context.Context, s provision.Step) error {
	r.mu.Lock()
	if s.Role == "server" && len(r.running) > 0 {
		r.overlaps = append(r.overlaps, fmt.Sprintf("%s started while %s installed", s.HostName, strings.Join(keys(r.running), ", ")))
	}
	r.running[s.HostName] = true
	if s.Role == "agent" {
		r.agentsIn++
		r.maxIn = max(r.maxIn, r.agentsIn)
	}
	r.note("start " + s.HostName)
	for s.Role == "agent" && r.agentsIn < min(r.parallel, agents-r.ended) {
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			r.mu.Lock()
			defer r.mu.Unlock()
			return fmt.Errorf("%s: only %d agents installed together, want %d: %w", s.HostName, r.agentsIn, min(r.parallel, agents-r.ended), ctx.Err())
		}
		r.mu.Lock()
	}
	delete(r.running, s.HostName)
	if s.Role == "agent" {
		r.agentsIn--
		r.ended++
	}
	r.note("end " + s.HostName)
	r.mu.Unlock()
	return nil
}

func keys(m map[string]bool) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	slices.Sort(k)
	return k
}

// TestWaves: the servers install one at a time in the plan's order, each alone; the agents after the last
// server, as many at once as --parallel allows (all 50 together with --parallel 50), never more.
func TestWaves(t *testing.T) {
	for _, tc := range []struct {
		name     string
		parallel int
	}{
		{"all agents in one wave with --parallel 50", agents},
		{"7 agents at a time with --parallel 7", 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The bound only turns a scheduler that never runs the wave together into a failure instead of a
			// hang; a correct one gets there as soon as the installs have started.
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			r := newRecorder(tc.parallel)
			install(t, ctx, r, tc.parallel)

			for _, o := range r.overlaps {
				t.Error(o)
			}
			pos := map[string]int{}
			for i, ev := range r.events {
				pos[ev] = i
			}
			for i := 1; i < servers; i++ {
				prev, next := fmt.Sprintf("bench-server%d", i), fmt.Sprintf("bench-server%d", i+1)
				if pos["start "+next] < pos["end "+prev] {
					t.Errorf("%s started before %s ended", next, prev)
				}
			}
			last := fmt.Sprintf("end bench-server%d", servers)
			firstAgentEnd := len(r.events)
			for _, a := range cluster().Agents {
				if pos["start bench-"+a] < pos[last] {
					t.Errorf("%s started before the last server ended", a)
				}
				firstAgentEnd = min(firstAgentEnd, pos["end bench-"+a])
			}
			if r.maxIn != tc.parallel {
				t.Errorf("at most %d agents installed at once, want %d (--parallel %d)", r.maxIn, tc.parallel, tc.parallel)
			}
			if tc.parallel == agents {
				started := 0
				for _, ev := range r.events[:firstAgentEnd] {
					if strings.HasPrefix(ev, "start bench-agent") {
						started++
					}
				}
				if started != agents {
					t.Errorf("%d agents started before the first agent finished, want all %d", started, agents)
				}
			}
			if len(r.events) != 2*(servers+agents) {
				t.Errorf("%d events, want a start and an end for each of the %d members", len(r.events), servers+agents)
			}
		})
	}
}

// standIn writes a nixos-anywhere that runs ssh once (through NixosAnywhere's host-key wrapper, which an
// install must use) and takes exactly T.
func standIn(b *testing.B, T time.Duration) string {
	prog := filepath.Join(b.TempDir(), "nixos-anywhere")
	script := fmt.Sprintf("#!/bin/sh\n# Stand-in for nixos-anywhere: an install that takes exactly T.\nssh -V 2>/dev/null\nexec sleep %.3f\n", T.Seconds())
	if err := os.WriteFile(prog, []byte(script), 0o755); err != nil {
		b.Fatal(err)
	}
	return prog
}

// BenchmarkInstall reports the install of the 53 members against the critical path (x-critical-path: 1.0 is
// the waves with no overhead at all), in waves and one by one (--parallel 1, about 13x). NIX8S_BENCH_T is T
// (default 500ms).
func BenchmarkInstall(b *testing.B) {
	T := envDuration("NIX8S_BENCH_T", 500*time.Millisecond)
	critical := time.Duration(servers+1) * T
	for _, bc := range []struct {
		name     string
		parallel int
	}{{"waves", agents}, {"sequential", 1}} {
		b.Run(bc.name, func(b *testing.B) {
			installer := &provision.NixosAnywhere{Program: standIn(b, T)}
			for b.Loop() {
				install(b, context.Background(), installer, bc.parallel)
			}
			b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(critical), "x-critical-path")
		})
	}
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}
