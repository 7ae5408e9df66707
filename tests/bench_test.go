package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// bigConfig writes a cluster of n members (3 servers, HA, every member with its own MAC) as JSON.
func bigConfig(b *testing.B, n int) string {
	b.Helper()
	members := map[string]any{}
	for i := 0; i < n; i++ {
		role := "agent"
		if i < 3 {
			role = "server"
		}
		members[fmt.Sprintf("m%05d", i)] = map[string]any{
			"node": "std", "role": role,
			"ip":      fmt.Sprintf("10.%d.%d.%d", 100+i/65536, (i/256)%256, i%256),
			"network": map[string]any{"mac": fmt.Sprintf("aa:bb:cc:%02x:%02x:%02x", (i>>16)&255, (i>>8)&255, i&255)},
		}
	}
	cfg := map[string]any{
		"nodes": map[string]any{"std": map[string]any{"install": map[string]any{"disk": "/dev/sda"}, "extensions": map[string]any{"monitoring": map[string]any{"enable": true}}}},
		"clusters": map[string]any{"big": map[string]any{
			"k3s": map[string]any{"version": "v1.34.2+k3s1"}, "ha": map[string]any{"enable": true, "vip": "10.99.0.1"}, "members": members,
		}},
	}
	data, _ := json.Marshal(cfg)
	path := filepath.Join(b.TempDir(), "config.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
	return path
}

// BenchmarkCore compares, per member, the core's validate, plan and check (validate and plan in one
// evaluation: what nix8sd runs per write) with merely parsing and printing the same config (`parse`, the floor),
// at 200, 2,000 and 20,000 members. The design target: cost per member about the same at every size (no
// quadratic checks) and check within 5x of the floor at 20,000 members (aim: 4x). An iteration runs the four
// one after the other, so the machine's other load falls on all of them alike, and each is reported by its
// fastest run (<name>-ms) and as a multiple of parse's fastest (<name>-x); on a shared machine the mean mostly
// measures the neighbours. Nix's own counters of one more run of each (NIX_SHOW_STATS: function calls and thunks
// per member, MB allocated) do not vary from run to run. bench/core.sh runs it and prints the ratios;
// NIX8S_BENCH_MEMBERS overrides the sizes (comma-separated).
func BenchmarkCore(b *testing.B) {
	root, _ := filepath.Abs("..")
	sizes := []int{200, 2000, 20000}
	if v := os.Getenv("NIX8S_BENCH_MEMBERS"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				b.Fatalf("NIX8S_BENCH_MEMBERS: %v", err)
			}
			sizes = append(sizes, n)
		}
	}
	for _, n := range sizes {
		cfg := bigConfig(b, n)
		read := fmt.Sprintf("(builtins.fromJSON (builtins.readFile %s))", cfg)
		exprs := []struct{ name, expr string }{
			{"parse", read},
			{"validate", "(import ./lib).validate " + read},
			{"plan", "(import ./lib).plan " + read},
			{"check", "(import ./lib).checkJSON " + read},    // what nix8s evaluates
			{"stored", "(import ./lib).checkStored " + read}, // what nix8sd evaluates per write
		}
		// run returns how long nix-instantiate took, its output read (as the daemon reads it) but not yet checked.
		run := func(b *testing.B, expr string, env ...string) time.Duration {
			cmd := exec.Command("nix-instantiate", "--eval", "--strict", "--json", "--expr", expr)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), env...)
			// stdout is the value, stderr Nix's messages (a fresh machine's nixbld warning among them).
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			start := time.Now()
			out, err := cmd.Output()
			took := time.Since(start)
			if err != nil {
				b.Fatalf("%v: %s", err, stderr.Bytes())
			}
			if !json.Valid(out) {
				b.Fatalf("nix-instantiate printed no JSON value on stdout: %.200q", out)
			}
			return took
		}
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			fastest := map[string]time.Duration{}
			for i := 0; i < b.N; i++ {
				for _, c := range exprs {
					d := run(b, c.expr)
					if f, ok := fastest[c.name]; !ok || d < f {
						fastest[c.name] = d
					}
				}
			}
			b.StopTimer()
			for _, c := range exprs {
				b.ReportMetric(float64(fastest[c.name].Microseconds())/1000, c.name+"-ms")
				if c.name != "parse" {
					b.ReportMetric(float64(fastest[c.name])/float64(fastest["parse"]), c.name+"-x")
				}
				stats := filepath.Join(b.TempDir(), c.name+".json")
				run(b, c.expr, "NIX_SHOW_STATS=1", "NIX_SHOW_STATS_PATH="+stats)
				data, err := os.ReadFile(stats)
				if err != nil {
					b.Fatalf("reading Nix's statistics: %v", err)
				}
				var st struct {
					Calls  float64 `json:"nrFunctionCalls"`
					Thunks float64 `json:"nrThunks"`
					GC     struct {
						TotalBytes float64 `json:"totalBytes"`
					} `json:"gc"`
				}
				if err := json.Unmarshal(data, &st); err != nil {
					b.Fatalf("decoding Nix's statistics: %v", err)
				}
				b.ReportMetric(st.Calls/float64(n), c.name+"-calls/member")
				b.ReportMetric(st.Thunks/float64(n), c.name+"-thunks/member")
				b.ReportMetric(st.GC.TotalBytes/1e6, c.name+"-MB")
			}
		})
	}
}
