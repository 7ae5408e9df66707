package store

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// The constants are the table: a migration that adds a state fails here until Go names it (and decides what
// the PXE decision, the jobs and the node watcher do with it), and a constant the migrations lack fails too.
func TestStatesAreTheTable(t *testing.T) {
	s := open(t)
	infos, err := s.States(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var table []State
	for _, i := range infos {
		table = append(table, i.State)
	}
	named := slices.Clone(AllStates)
	slices.Sort(named)
	if !slices.Equal(table, named) {
		t.Fatalf("machine_states has %v; store.AllStates names %v: add the new state's constant (states.go) and its handling", table, named)
	}
}

// The sets the daemon decides by come from the table as Migrate leaves it: kind, each in-progress state's
// failed state, and counts_as_ready (migration 00011).
func TestStateSetsFromTheTable(t *testing.T) {
	sets := open(t).StateSets()
	var stable, inProgress, failed []State
	failures := map[State]State{}
	for _, st := range AllStates {
		if sets.Stable(st) {
			stable = append(stable, st)
		}
		if sets.InProgress(st) {
			inProgress = append(inProgress, st)
		}
		if sets.Failed(st) {
			failed = append(failed, st)
		}
		if f, ok := sets.FailureOf(st); ok {
			failures[st] = f
		}
	}
	tests := []struct {
		name      string
		got, want []State
	}{
		{"stable", stable, []State{StateDiscovered, StateReady}},
		{"in progress", inProgress, []State{StateInstalling, StateJoined, StateRebuilding, StateDeprovisioning}},
		{"failed", failed, []State{StateInstallFailed, StateJoinFailed, StateRebuildFailed, StateDeprovisionFailed}},
		{"counts as ready", sets.Ready(), []State{StateReady, StateRebuildFailed, StateRebuilding}},
	}
	for _, tc := range tests {
		if !slices.Equal(tc.got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	want := map[State]State{StateInstalling: StateInstallFailed, StateJoined: StateJoinFailed,
		StateRebuilding: StateRebuildFailed, StateDeprovisioning: StateDeprovisionFailed}
	if len(failures) != len(want) {
		t.Errorf("failed states %v, want %v", failures, want)
	}
	for from, to := range want {
		if failures[from] != to {
			t.Errorf("the failed state of %s is %q, want %s", from, failures[from], to)
		}
	}
	// The zero value answers no.
	var none *StateSets
	if none.Failed(StateInstallFailed) || none.CountsAsReady(StateReady) {
		t.Error("nil StateSets claims a state")
	}
}

// A database migrated by a newer nix8sd (a state this one does not name) is refused at start, not decided on
// as if the state were none of the sets.
func TestLoadStatesRefusesAnUnknownState(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	if _, err := s.pool.Exec(ctx, `INSERT INTO machine_states (state, kind, needs_member, description)
		VALUES ('burning_in', 'stable', false, 'a newer nix8sd''s state')`); err != nil {
		t.Fatal(err)
	}
	err := s.LoadStates(ctx)
	if err == nil || !strings.Contains(err.Error(), "burning_in") || !strings.Contains(err.Error(), "newer nix8sd") {
		t.Fatalf("LoadStates: %v; want the unknown state named", err)
	}
	if !s.StateSets().Failed(StateInstallFailed) {
		t.Error("the refused load replaced the sets read by Migrate")
	}
}
