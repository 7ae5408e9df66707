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
// quadratic checks) and check within 5x of the floor at 20,000 members. bench/core.sh runs it and prints the
// ratios; NIX8S_BENCH_MEMBERS overrides the sizes (comma-separated).
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
		for _, c := range []struct{ name, expr string }{
			{"parse", read},
			{"validate", "(import ./lib).validate " + read},
			{"plan", "(import ./lib).plan " + read},
			{"check", "(import ./lib).checkJSON " + read}, // what nix8s and nix8sd evaluate
		} {
			b.Run(fmt.Sprintf("%s/members=%d", c.name, n), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					cmd := exec.Command("nix-instantiate", "--eval", "--strict", "--json", "--expr", c.expr)
					cmd.Dir = root
					// stdout is the value, stderr Nix's messages (a fresh machine's nixbld warning among them).
					var stderr bytes.Buffer
					cmd.Stderr = &stderr
					out, err := cmd.Output()
					if err != nil {
						b.Fatalf("%v: %s", err, stderr.Bytes())
					}
					if !json.Valid(out) {
						b.Fatalf("nix-instantiate printed no JSON value on stdout: %.200q", out)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(n), "µs/member")
			})
		}
	}
}
