package inventory_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/inventory"
	"github.com/nix8s/nix8s/internal/nixgen"
	"github.com/nix8s/nix8s/internal/remote"
	"github.com/nix8s/nix8s/internal/store"
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
// reader of that version (the plan, a cluster's plan with its members' ssh endpoints, the node names), and it lands in
// the workspace.
func TestReplaceEvaluatesOnceAndRenders(t *testing.T) {
	ctx := t.Context()
	st := storetest.Open(t)
	c := newCore(t, "")
	dir := filepath.Join(t.TempDir(), "flake")
	inv := inventory.New(inventory.Options{Store: st, Core: c, Workspace: &nixgen.Workspace{Dir: dir}})
	withSSH := `{"nodes": {"vm": {"install": {"disk": "/dev/vda"}}}, "clusters": {"dev": {"members": {
  "s1": {"node": "vm", "role": "server", "ip": "192.168.1.10"}}}},
  "provisioning": {"nixos-anywhere": {"ssh": {"user": "admin", "port": 2222, "keyFile": "/etc/nix8s/ssh_key"}}}}`
	if _, err := inv.Replace(ctx, "test", config(t, withSSH)); err != nil {
		t.Fatal(err)
	}
	cl, err := inv.ClusterPlan(ctx, "dev")
	if err != nil {
		t.Fatal(err)
	}
	want := remote.Host{Name: "dev-s1", Addr: "192.168.1.10", User: "admin", Port: 2222, KeyFile: "/etc/nix8s/ssh_key"}
	if h := remote.HostOf(cl.Members["s1"]); cl.Name != "dev" || h != want {
		t.Errorf("ClusterPlan = %q, s1 reached as %+v; want dev, %+v", cl.Name, h, want)
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
			_, err := inventory.New(inventory.Options{Store: st, Core: newCore(t, "")}).ClusterPlan(ctx, tc.cluster)
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

// A change stores the members' MACs as the core found them, in the write's transaction: a member takes only
// the machine with its MAC, whether it is the member's own, its named template's or its inline template's, and
// in whatever case the config writes it. A spelling the core refuses (dashes) stores nothing.
func TestModifyStoresTheMembersMACs(t *testing.T) {
	ctx := t.Context()
	st := storetest.Open(t)
	inv := inventory.New(inventory.Options{Store: st, Core: newCore(t, "")})
	withMACs := `{"nodes": {"vm": {"install": {"disk": "/dev/vda"}, "network": {"mac": "aa:bb:cc:dd:ee:02"}}}, "clusters": {"dev": {"members": {
  "s1": {"node": "vm", "role": "server", "ip": "192.168.1.10", "network": {"mac": "AA:BB:CC:DD:EE:01"}},
  "a1": {"node": "vm", "role": "agent", "ip": "192.168.1.20"},
  "a2": {"node": {"install": {"disk": "/dev/vda"}, "network": {"mac": "AA:bb:CC:dd:EE:03"}}, "role": "agent", "ip": "192.168.1.21"}}}}}`
	if _, err := inv.Replace(ctx, "test", config(t, withMACs)); err != nil {
		t.Fatal(err)
	}
	for _, mac := range []string{"aa:bb:cc:dd:ee:01", "aa:bb:cc:dd:ee:02", "aa:bb:cc:dd:ee:03", "aa:bb:cc:dd:ee:77"} {
		if _, err := st.CreateMachine(ctx, "test", mac, nil, ""); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ member, mac string }{{"s1", "aa:bb:cc:dd:ee:01"}, {"a1", "aa:bb:cc:dd:ee:02"}, {"a2", "aa:bb:cc:dd:ee:03"}} {
		_, err := st.UpdateMachine(ctx, "test", "aa:bb:cc:dd:ee:77", store.MachineChange{Assign: &[2]string{"dev", tc.member}})
		if !errors.Is(err, store.ErrConflict) || !strings.Contains(err.Error(), "the config gives that member the MAC "+tc.mac) {
			t.Errorf("assigning another machine to %s: %v, want a conflict naming %s", tc.member, err, tc.mac)
		}
		if _, err := st.UpdateMachine(ctx, "test", tc.mac, store.MachineChange{Assign: &[2]string{"dev", tc.member}}); err != nil {
			t.Errorf("assigning %s to %s: %v", tc.mac, tc.member, err)
		}
	}

	before, err := st.InventoryVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dashed := strings.Replace(withMACs, "AA:BB:CC:DD:EE:01", "aa-bb-cc-dd-ee-09", 1)
	_, err = inv.Replace(ctx, "test", config(t, dashed))
	var invalid *core.InvalidError
	if !errors.As(err, &invalid) || len(invalid.Report.Errors) != 1 || invalid.Report.Errors[0].Path != "clusters.dev.members.s1.network.mac" {
		t.Fatalf("a MAC with dashes: %v, want the core's error at clusters.dev.members.s1.network.mac", err)
	}
	if v, err := st.InventoryVersion(ctx); err != nil || v != before {
		t.Errorf("inventory version %d (%v) after a refused write, want %d", v, err, before)
	}
}

// The daemon's stricter rules are the core's (checkStored): a secret value, only a warning in a flake, refuses
// the write with its path and the fix.
func TestModifyRefusesSecretValues(t *testing.T) {
	ctx := t.Context()
	st := storetest.Open(t)
	inv := inventory.New(inventory.Options{Store: st, Core: newCore(t, "")})
	withToken := strings.Replace(cfg, `"dev": {`, `"dev": {"secrets": {"token": "hunter2"}, `, 1)
	_, err := inv.Replace(ctx, "test", config(t, withToken))
	var invalid *core.InvalidError
	if !errors.As(err, &invalid) || len(invalid.Report.Errors) != 1 || len(invalid.Report.Warnings) != 0 {
		t.Fatalf("err = %v, want the core's report with one error", err)
	}
	if e := invalid.Report.Errors[0]; e.Path != "clusters.dev.secrets.token" ||
		!strings.HasPrefix(e.Message, "nix8sd does not store secret values") || !strings.Contains(e.Message, "set secrets.tokenFile to its path") {
		t.Errorf("error = %+v", e)
	}
	snap, err := st.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Clusters) != 0 {
		t.Errorf("stored despite the secret value: %v", snap.Config)
	}
}
