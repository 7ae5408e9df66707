// Package install benchmarks nix8s install's scheduling: 3 servers and 50 agents whose installs each take a
// fixed time T must finish within 1.1x the critical path (first server + each other server + one agent wave),
// against 53 T when installed one by one.
//
// nixos-anywhere is a stand-in script that sleeps T (a real process per install, through the real
// NixosAnywhere installer, extra-files directory and output plumbing). The ssh probe and the readiness checks
// are fakes that answer at once: they are measured against real sshds in internal/provision's tests, here
// only the waves are.
package install

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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

func cluster() core.Cluster {
	c := core.Cluster{Name: "bench", FirstServer: "server1", Members: map[string]core.Member{}}
	atf := "/var/lib/nix8s/secrets/k3s-agent-token"
	for i := 1; i <= servers; i++ {
		m := fmt.Sprintf("server%d", i)
		c.Servers = append(c.Servers, m)
		c.Provision = append(c.Provision, []string{m})
		c.Members[m] = core.Member{Name: m, HostName: "bench-" + m, Role: "server", IP: fmt.Sprintf("10.0.0.%d", i),
			K3s: core.K3s{TokenFile: "/var/lib/nix8s/secrets/k3s-token", AgentTokenFile: &atf}}
	}
	for i := 1; i <= agents; i++ {
		m := fmt.Sprintf("agent%02d", i)
		c.Agents = append(c.Agents, m)
		c.Members[m] = core.Member{Name: m, HostName: "bench-" + m, Role: "agent", IP: fmt.Sprintf("10.0.1.%d", i),
			K3s: core.K3s{TokenFile: atf}}
	}
	c.Provision = append(c.Provision, c.Agents)
	return c
}

func install(tb testing.TB, T time.Duration, parallel int) time.Duration {
	tb.Helper()
	dir := tb.TempDir()
	prog := filepath.Join(dir, "nixos-anywhere")
	script := fmt.Sprintf("#!/bin/sh\n# Stand-in for nixos-anywhere: an install that takes exactly T.\nexec sleep %.3f\n", T.Seconds())
	if err := os.WriteFile(prog, []byte(script), 0o755); err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	r, err := provision.Install(context.Background(), cluster(), provision.Options{
		Parallel:     parallel,
		Tokens:       &provision.Tokens{Token: "t", AgentToken: "a"},
		WaitInterval: time.Millisecond,
		Runner:       notInstalled{},
		Installer:    &provision.NixosAnywhere{Program: prog},
		Readiness:    readyAtOnce{},
	})
	took := time.Since(start)
	if err != nil {
		tb.Fatal(err)
	}
	if got := r.Counts(); got != fmt.Sprintf("%d done", servers+agents) {
		tb.Fatalf("report: %s", got)
	}
	return took
}

// TestCriticalPath is the benchmark's claim as a test: within 1.1x of the critical path.
func TestCriticalPath(t *testing.T) {
	T := envDuration("NIX8S_BENCH_T", time.Second)
	critical := time.Duration(servers+1) * T
	took := install(t, T, agents)
	ratio := float64(took) / float64(critical)
	t.Logf("T=%s: %d servers + %d agents took %s, critical path %s (%.3fx)", T, servers, agents, took.Round(time.Millisecond), critical, ratio)
	if ratio > 1.1 {
		t.Errorf("took %.3fx the critical path, want at most 1.1x", ratio)
	}
	if os.Getenv("NIX8S_BENCH_SEQUENTIAL") != "" {
		seq := install(t, T, 1)
		t.Logf("sequential (--parallel 1): %s (%.1fx the waves)", seq.Round(time.Millisecond), float64(seq)/float64(took))
	}
}

// BenchmarkInstall reports the ratio to the critical path, and the sequential run for comparison.
func BenchmarkInstall(b *testing.B) {
	T := envDuration("NIX8S_BENCH_T", 500*time.Millisecond)
	critical := time.Duration(servers+1) * T
	for _, bc := range []struct {
		name     string
		parallel int
	}{{"waves", agents}, {"sequential", 1}} {
		b.Run(bc.name, func(b *testing.B) {
			var total time.Duration
			for b.Loop() {
				total += install(b, T, bc.parallel)
			}
			b.ReportMetric(float64(total)/float64(b.N)/float64(critical), "x-critical-path")
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
