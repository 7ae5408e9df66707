package store

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// macsConfig has a member with its own MAC (server), one taking it from its named template (agent) and one
// with an inline template (inline); the MACs a write stores come from the core's plan, as given here.
const macsConfig = `{
  "nodes": {"std": {"network": {"mac": "aa:bb:cc:dd:ee:02"}, "install": {"disk": "/dev/sda"}}},
  "clusters": {"dev": {"members": {
    "server": {"node": "std", "role": "server", "ip": "192.168.1.10", "network": {"mac": "AA:BB:CC:DD:EE:01"}},
    "agent": {"node": "std", "role": "agent", "ip": "192.168.1.20"},
    "inline": {"node": {"network": {"mac": "AA:BB:CC:DD:EE:03"}, "install": {"disk": "/dev/sda"}}, "role": "agent", "ip": "192.168.1.30"}}}}
}`

// The core's MACs of macsConfig, spelled as the config spells them (the plan keeps the user's case).
var macsOfConfig = []MemberMAC{{"dev", "server", "AA:BB:CC:DD:EE:01"}, {"dev", "agent", "aa:bb:cc:dd:ee:02"}, {"dev", "inline", "AA:BB:CC:DD:EE:03"}}

func storedMACs(t *testing.T, s *Store) map[string]string {
	t.Helper()
	rows, err := s.pool.Query(context.Background(), "SELECT cluster, member, mac::text FROM member_macs")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var c, m, mac string
		if err := rows.Scan(&c, &m, &mac); err != nil {
			t.Fatal(err)
		}
		out[MemberKey(c, m)] = mac
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func writeMACs(t *testing.T, s *Store, cfg map[string]any, macs []MemberMAC) error {
	t.Helper()
	_, err := s.ModifyNext(context.Background(), "test", func(*Snapshot) (*Next, error) { return &Next{Config: cfg, MACs: macs}, nil })
	return err
}

func sameMACs(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: stored MACs %v, want %v", what, got, want)
		return
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: stored MACs %v, want %v", what, got, want)
			return
		}
	}
}

// A member with a MAC takes only the machine with that MAC, whatever the case the config spells it in and
// wherever the core found it (an inline template too, which the trigger once missed); a MAC gone from the
// inventory frees the member for any machine and leaves its assignment as it was; a member gone takes its
// MAC and its assignment with it.
func TestMemberMACsAssign(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	if err := writeMACs(t, s, cfgOf(t, macsConfig), macsOfConfig); err != nil {
		t.Fatal(err)
	}
	sameMACs(t, "after the write", storedMACs(t, s), map[string]string{
		"dev/server": "aa:bb:cc:dd:ee:01", "dev/agent": "aa:bb:cc:dd:ee:02", "dev/inline": "aa:bb:cc:dd:ee:03"})
	for _, mac := range []string{"aa:bb:cc:dd:ee:01", "aa:bb:cc:dd:ee:02", "aa:bb:cc:dd:ee:03", "aa:bb:cc:dd:ee:77"} {
		if _, err := s.CreateMachine(ctx, "pxe", mac, nil, ""); err != nil {
			t.Fatal(err)
		}
	}
	assign := func(mac, member string) error {
		_, err := s.UpdateMachine(ctx, "op", mac, MachineChange{Assign: &[2]string{"dev", member}})
		return err
	}
	for _, member := range []string{"server", "agent", "inline"} {
		err := assign("aa:bb:cc:dd:ee:77", member)
		if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "cannot be assigned to dev."+member+": the config gives that member the MAC aa:bb:cc:dd:ee:0") {
			t.Errorf("assigning another machine to %s: %v, want the member's MAC named", member, err)
		}
	}
	for mac, member := range map[string]string{"aa:bb:cc:dd:ee:01": "server", "aa:bb:cc:dd:ee:02": "agent", "aa:bb:cc:dd:ee:03": "inline"} {
		if err := assign(mac, member); err != nil {
			t.Errorf("assigning %s to %s, the member's MAC: %v", mac, member, err)
		}
	}

	// inline's MAC goes from the inventory, server's changes: their machines stay assigned; inline now takes
	// any machine.
	next := deepCopy(cfgOf(t, macsConfig))
	members := next["clusters"].(map[string]any)["dev"].(map[string]any)["members"].(map[string]any)
	delete(members["inline"].(map[string]any)["node"].(map[string]any), "network")
	members["server"].(map[string]any)["network"] = map[string]any{"mac": "aa:bb:cc:dd:ee:09"}
	if err := writeMACs(t, s, next, []MemberMAC{{"dev", "server", "aa:bb:cc:dd:ee:09"}, {"dev", "agent", "aa:bb:cc:dd:ee:02"}}); err != nil {
		t.Fatal(err)
	}
	sameMACs(t, "after removing one MAC and changing one", storedMACs(t, s), map[string]string{"dev/server": "aa:bb:cc:dd:ee:09", "dev/agent": "aa:bb:cc:dd:ee:02"})
	for mac, member := range map[string]string{"aa:bb:cc:dd:ee:01": "server", "aa:bb:cc:dd:ee:03": "inline"} {
		if m, err := s.Machine(ctx, mac); err != nil || m.Member == nil || *m.Member != member {
			t.Errorf("machine %s after its member's MAC changed: %+v, %v; want it still assigned to %s", mac, m, err, member)
		}
	}
	if _, err := s.UpdateMachine(ctx, "op", "aa:bb:cc:dd:ee:03", MachineChange{Unassign: true}); err != nil {
		t.Fatal(err)
	}
	if err := assign("aa:bb:cc:dd:ee:77", "inline"); err != nil {
		t.Errorf("assigning any machine to a member without a MAC: %v", err)
	}

	// agent goes: its MAC row and its machine's assignment with it.
	delete(members, "agent")
	if err := writeMACs(t, s, next, []MemberMAC{{"dev", "server", "aa:bb:cc:dd:ee:09"}}); err != nil {
		t.Fatal(err)
	}
	sameMACs(t, "after removing a member", storedMACs(t, s), map[string]string{"dev/server": "aa:bb:cc:dd:ee:09"})
	if m, err := s.Machine(ctx, "aa:bb:cc:dd:ee:02"); err != nil || m.Member != nil {
		t.Errorf("machine of a removed member: %+v, %v; want it unassigned", m, err)
	}

	// A write past the core (Modify) knows no MACs: none stay.
	if _, err := s.Modify(ctx, "test", func(*Snapshot) (map[string]any, error) { return next, nil }); err != nil {
		t.Fatal(err)
	}
	sameMACs(t, "after Modify", storedMACs(t, s), map[string]string{})
}

// The MACs are written in the inventory's transaction: a write that fails in either part stores neither.
func TestMemberMACsInOneTransaction(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	if err := writeMACs(t, s, cfgOf(t, macsConfig), macsOfConfig); err != nil {
		t.Fatal(err)
	}
	want := storedMACs(t, s)
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	unchanged := func(what string) {
		t.Helper()
		after, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if after.Version != before.Version || !Equal(after.Config, before.Config) {
			t.Errorf("%s: the inventory changed (version %d -> %d)", what, before.Version, after.Version)
		}
		sameMACs(t, what, storedMACs(t, s), want)
	}

	// The MAC part fails (two members with one MAC, which the core never gives): the config change goes too.
	next := deepCopy(cfgOf(t, macsConfig))
	members := next["clusters"].(map[string]any)["dev"].(map[string]any)["members"].(map[string]any)
	members["agent"].(map[string]any)["ip"] = "192.168.1.21"
	err = writeMACs(t, s, next, []MemberMAC{{"dev", "server", "aa:bb:cc:dd:ee:01"}, {"dev", "agent", "AA:BB:CC:DD:EE:01"}})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("a write with a MAC twice: %v, want a conflict", err)
	}
	unchanged("a write whose MACs fail")

	// The config part fails (a member whose machine is installing cannot go): the MAC changes go too.
	if _, err := s.CreateMachine(ctx, "pxe", "aa:bb:cc:dd:ee:02", nil, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateMachine(ctx, "op", "aa:bb:cc:dd:ee:02", MachineChange{Assign: &[2]string{"dev", "agent"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateMachine(ctx, "op", "aa:bb:cc:dd:ee:02", MachineChange{State: statep(StateInstalling)}); err != nil {
		t.Fatal(err)
	}
	next = deepCopy(cfgOf(t, macsConfig))
	delete(next["clusters"].(map[string]any)["dev"].(map[string]any)["members"].(map[string]any), "agent")
	err = writeMACs(t, s, next, []MemberMAC{{"dev", "server", "aa:bb:cc:dd:ee:0a"}, {"dev", "inline", "aa:bb:cc:dd:ee:0b"}})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("removing a member whose machine is installing: %v, want a conflict", err)
	}
	unchanged("a write whose config fails")
}

// Migrating 00010 down brings back the trigger that read the members' JSON, and up again fills member_macs from
// the stored inventory (its next write replaces them with the core's).
func TestMemberMACsMigrateDownUp(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	// Past the core: no MACs stored, the migration's fill is all there is.
	if _, err := s.Modify(ctx, "test", func(*Snapshot) (map[string]any, error) { return cfgOf(t, macsConfig), nil }); err != nil {
		t.Fatal(err)
	}
	p, db, err := s.goose()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := p.DownTo(ctx, 9); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateMachine(ctx, "pxe", "aa:bb:cc:dd:ee:77", nil, ""); err != nil {
		t.Fatal(err)
	}
	// 00002's rule again: the named template's MAC, from the JSON.
	if _, err := s.UpdateMachine(ctx, "op", "aa:bb:cc:dd:ee:77", MachineChange{Assign: &[2]string{"dev", "agent"}}); !errors.Is(err, ErrConflict) ||
		!strings.Contains(err.Error(), "the config gives that member the MAC aa:bb:cc:dd:ee:02") {
		t.Fatalf("after migrating down, assigning another machine to agent: %v", err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatal(err)
	}
	sameMACs(t, "after migrating up", storedMACs(t, s), map[string]string{
		"dev/server": "aa:bb:cc:dd:ee:01", "dev/agent": "aa:bb:cc:dd:ee:02", "dev/inline": "aa:bb:cc:dd:ee:03"})
	if _, err := s.UpdateMachine(ctx, "op", "aa:bb:cc:dd:ee:77", MachineChange{Assign: &[2]string{"dev", "inline"}}); !errors.Is(err, ErrConflict) ||
		!strings.Contains(err.Error(), "the config gives that member the MAC aa:bb:cc:dd:ee:03") {
		t.Errorf("after migrating up, assigning another machine to inline: %v", err)
	}
}
