package lima

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The operations reach a Lima cluster's members on the port their VM has and with Lima's key, and its API on
// the forwarded port; a cluster that does not run in Lima is left alone.
func TestResolveEndpoints(t *testing.T) {
	ctx := context.Background()
	ev := evaluator(t)
	cfg := devConfig(nil)
	p, err := ev.Plan(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := newStandIn(t, cfg)
	c := p.Plan.Clusters["dev"]
	var notes strings.Builder
	err = ResolveEndpoints(ctx, s.Limactl, s.home, &c, &notes)
	if err != nil || !strings.Contains(notes.String(), "nix8s: note: dev-agent1 has no Lima VM nix8s-dev-agent1 yet, so no SSH port; start the cluster first: nix8s lima up dev") ||
		c.Members["agent1"].SSH.Port != 0 {
		t.Errorf("before up: %v, port %d\n%s", err, c.Members["agent1"].SSH.Port, notes.String())
	}
	if _, err := s.Up(ctx, upOptions(&fakeSSH{installed: map[string]bool{}}, someImages)); err != nil {
		t.Fatal(err)
	}
	instances, _ := s.Limactl.List(ctx)
	c = p.Plan.Clusters["dev"]
	if err := ResolveEndpoints(ctx, s.Limactl, s.home, &c, io.Discard); err != nil {
		t.Fatal(err)
	}
	for name, m := range c.Members {
		in := instances["nix8s-dev-"+name]
		if m.SSH.Host != "127.0.0.1" || m.SSH.Port != in.Port() || m.SSH.Port == 0 || m.SSH.KeyFile == nil || *m.SSH.KeyFile != filepath.Join(s.Home, "_config", "user") {
			t.Errorf("%s: %+v, want 127.0.0.1:%d with Lima's key", name, m.SSH, in.Port())
		}
	}
	if c.APIEndpoint != "https://127.0.0.1:16443" {
		t.Errorf("API endpoint %s, want the server's forward", c.APIEndpoint)
	}

	// Not in Lima: untouched, and limactl is not asked.
	other := map[string]any{"nodes": cfg["nodes"], "clusters": cfg["clusters"]}
	p2, err := ev.Plan(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	c2 := p2.Plan.Clusters["dev"]
	os.Remove(filepath.Join(s.state, "calls"))
	if err := ResolveEndpoints(ctx, s.Limactl, s.home, &c2, io.Discard); err != nil || c2.Members["server"].SSH.Host != "192.168.107.10" || c2.Members["server"].SSH.Port != 22 {
		t.Errorf("a cluster not in Lima: %v %+v", err, c2.Members["server"].SSH)
	}
	if _, err := os.Stat(filepath.Join(s.state, "calls")); err == nil {
		t.Errorf("limactl was asked about a cluster not in Lima")
	}
}
