package inventory_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/inventory"
	"github.com/nix8s/nix8s/internal/nixgen"
	"github.com/nix8s/nix8s/internal/remote"
	"github.com/nix8s/nix8s/internal/store/storetest"
)

func config(t *testing.T, s string) map[string]any {
	t.Helper()
	var c map[string]any
	if err := json.Unmarshal([]byte(s), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// A change through the inventory is validated and planned in one evaluation, which also serves every later
// reader of that version (the plan, a cluster's plan with the ssh settings, the node names), and it lands in
// the workspace.
func TestReplaceEvaluatesOnceAndRenders(t *testing.T) {
	ctx := t.Context()
	st := storetest.Open(t)
	c := newCore(t, "")
	dir := filepath.Join(t.TempDir(), "flake")
	inv := inventory.New(inventory.Options{Store: st, Core: c, Workspace: &nixgen.Workspace{Dir: dir}})
	withSSH := `{"nodes": {"vm": {"install": {"disk": "/dev/vda"}}}, "clusters": {"dev": {"members": {
  "s1": {"node": "vm", "role": "server", "ip": "192.168.1.10"}}}},
  "provisioning": {"nixos-anywhere": {"ssh": {"user": "admin", "port": 2222}}}}`
	if _, err := inv.Replace(ctx, "test", config(t, withSSH)); err != nil {
		t.Fatal(err)
	}
	cl, settings, err := inv.ClusterPlan(ctx, "dev")
	if err != nil {
		t.Fatal(err)
	}
	if cl.Name != "dev" || settings != (remote.Settings{User: "admin", Port: 2222}) {
		t.Errorf("ClusterPlan = %q, %+v; want dev, admin@:2222", cl.Name, settings)
	}
	hosts, err := inv.HostNames(ctx, "dev")
	if err != nil || len(hosts) != 1 || hosts["s1"] != "dev-s1" {
		t.Errorf("HostNames = %v, %v; want s1: dev-s1", hosts, err)
	}
	if n := c.n.Load(); n != 1 {
		t.Errorf("the write and its readers evaluated the core %d times, want 1", n)
	}
	b, err := os.ReadFile(filepath.Join(dir, nixgen.InventoryFile))
	if err != nil {
		t.Fatal(err)
	}
	var rendered map[string]any
	if err := json.Unmarshal(b, &rendered); err != nil || rendered["clusters"] == nil {
		t.Errorf("workspace inventory %s: %v", b, err)
	}
}

// What the inventory cannot give is typed, so that each reader can answer it its own way (the API: 404, 422).
func TestClusterPlanErrors(t *testing.T) {
	ctx := t.Context()
	for _, tc := range []struct {
		name    string
		stored  string // written to the store directly, past the core (as by another daemon's older core)
		cluster string
		check   func(t *testing.T, err error)
	}{
		{
			name:    "unknown cluster",
			stored:  cfg,
			cluster: "nope",
			check: func(t *testing.T, err error) {
				if !errors.Is(err, inventory.ErrNoCluster) || err.Error() != `no cluster "nope"` {
					t.Errorf("err = %v, want ErrNoCluster `no cluster \"nope\"`", err)
				}
			},
		},
		{
			name:    "stored inventory the core refuses",
			stored:  `{"nodes": {}, "clusters": {"dev": {"members": {"s1": {"node": "missing", "role": "server"}}}}}`,
			cluster: "dev",
			check: func(t *testing.T, err error) {
				var invalid *core.InvalidError
				if !errors.As(err, &invalid) || len(invalid.Report.Errors) == 0 ||
					invalid.Report.Errors[0].Path != "clusters.dev.members.s1.node" {
					t.Errorf("err = %v, want the core's report naming clusters.dev.members.s1.node", err)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := storetest.Open(t)
			write(t, st, tc.stored)
			_, _, err := inventory.New(inventory.Options{Store: st, Core: newCore(t, "")}).ClusterPlan(ctx, tc.cluster)
			tc.check(t, err)
		})
	}
}

// A config with errors changes nothing: the core's report comes back as an *core.InvalidError, the stored
// version stays.
func TestReplaceRefusesAnInvalidConfig(t *testing.T) {
	ctx := t.Context()
	st := storetest.Open(t)
	inv := inventory.New(inventory.Options{Store: st, Core: newCore(t, "")})
	before, err := st.InventoryVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bad := `{"nodes": {}, "clusters": {"dev": {"members": {"s1": {"node": "missing", "role": "server"}}}}}`
	_, err = inv.Replace(ctx, "test", config(t, bad))
	var invalid *core.InvalidError
	if !errors.As(err, &invalid) || len(invalid.Report.Errors) == 0 {
		t.Fatalf("err = %v, want the core's report", err)
	}
	if v, err := st.InventoryVersion(ctx); err != nil || v != before {
		t.Errorf("inventory version %d (%v) after a refused write, want %d", v, err, before)
	}
}
