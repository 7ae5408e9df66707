package store

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// State is a state of the machine state machine. The database defines the states, the moves between them
// (machine_transitions, refused by its trigger otherwise) and the sets the daemon decides by (StateSets); the
// constants only name its rows, and TestStatesAreTheTable fails when a migration adds a state Go does not name.
type State string

// The rows of machine_states (migration 00002).
const (
	StateDiscovered        State = "discovered"
	StateInstalling        State = "installing"
	StateInstallFailed     State = "install_failed"
	StateJoined            State = "joined"
	StateJoinFailed        State = "join_failed"
	StateReady             State = "ready"
	StateRebuilding        State = "rebuilding"
	StateRebuildFailed     State = "rebuild_failed"
	StateDeprovisioning    State = "deprovisioning"
	StateDeprovisionFailed State = "deprovision_failed"
)

// AllStates are the states Go names, in the order of the table's definition.
var AllStates = []State{StateDiscovered, StateInstalling, StateInstallFailed, StateJoined, StateJoinFailed, StateReady,
	StateRebuilding, StateRebuildFailed, StateDeprovisioning, StateDeprovisionFailed}

// StateKind is machine_states.kind.
type StateKind string

// The kinds of state.
const (
	// KindStable: the machine stays until someone moves it.
	KindStable StateKind = "stable"
	// KindInProgress: an operation runs; the machine goes to the state's failed state when it fails or its
	// deadline passes.
	KindInProgress StateKind = "in_progress"
	// KindFailed: an operation failed; an operator (or a new attempt) moves it on.
	KindFailed StateKind = "failed"
)

// StateInfo is one row of machine_states, as GET /v1/machine-states lists it.
type StateInfo struct {
	State State     `json:"state"`
	Kind  StateKind `json:"kind"`
	// FailedState is where an in-progress state goes when its operation fails or its deadline passes.
	FailedState *State  `json:"failedState"`
	Deadline    *string `json:"deadline"`
	NeedsMember bool    `json:"needsMember"`
	// CountsAsReady: a member whose machine is in this state counts as ready for the join order (migration
	// 00011): the members of later join waves may install.
	CountsAsReady bool   `json:"countsAsReady"`
	Description   string `json:"description"`
}

// StateSets are the sets of states the daemon decides by, read from machine_states by Migrate (LoadStates), as
// the daemon starts: only a migration changes them (an operator who changes one by hand restarts the daemons).
// The zero value holds no state: every question answers false.
type StateSets struct {
	info map[State]StateInfo
}

// Stable reports whether st is of kind stable.
func (s *StateSets) Stable(st State) bool { return s.kind(st) == KindStable }

// InProgress reports whether st is of kind in_progress.
func (s *StateSets) InProgress(st State) bool { return s.kind(st) == KindInProgress }

// Failed reports whether st is of kind failed.
func (s *StateSets) Failed(st State) bool { return s.kind(st) == KindFailed }

// CountsAsReady reports whether a member whose machine is in st counts as ready for the join order.
func (s *StateSets) CountsAsReady(st State) bool { return s != nil && s.info[st].CountsAsReady }

// FailureOf is the failed state of the in-progress state st; false when st is not in progress.
func (s *StateSets) FailureOf(st State) (State, bool) {
	if s == nil || s.info[st].FailedState == nil {
		return "", false
	}
	return *s.info[st].FailedState, true
}

// Ready lists the states that count as ready, sorted.
func (s *StateSets) Ready() []State {
	var out []State
	if s != nil {
		for st, i := range s.info {
			if i.CountsAsReady {
				out = append(out, st)
			}
		}
	}
	slices.Sort(out)
	return out
}

func (s *StateSets) kind(st State) StateKind {
	if s == nil {
		return ""
	}
	return s.info[st].Kind
}

// StateSets returns the sets read by the last Migrate or LoadStates; empty before either ran.
func (s *Store) StateSets() *StateSets {
	if sets := s.sets.Load(); sets != nil {
		return sets
	}
	return &StateSets{}
}

// LoadStates reads machine_states into StateSets. A state the database defines and Go does not name (the
// database was migrated by a newer nix8sd), or one Go names and the database lacks, is an error: decisions by
// state would silently be wrong.
func (s *Store) LoadStates(ctx context.Context) error {
	infos, err := s.States(ctx)
	if err != nil {
		return fmt.Errorf("reading the machine states: %w", err)
	}
	sets, err := newStateSets(infos)
	if err != nil {
		return err
	}
	s.sets.Store(sets)
	return nil
}

func newStateSets(infos []StateInfo) (*StateSets, error) {
	sets := &StateSets{info: map[State]StateInfo{}}
	var unknown []string
	for _, i := range infos {
		if !slices.Contains(AllStates, i.State) {
			unknown = append(unknown, string(i.State))
		}
		sets.info[i.State] = i
	}
	var missing []string
	for _, st := range AllStates {
		if _, ok := sets.info[st]; !ok {
			missing = append(missing, string(st))
		}
	}
	switch {
	case len(unknown) > 0:
		return nil, fmt.Errorf("the database defines machine states this nix8sd does not know: %s (a newer nix8sd migrated it); run that version",
			strings.Join(unknown, ", "))
	case len(missing) > 0:
		return nil, fmt.Errorf("the database lacks machine states this nix8sd needs: %s; run nix8sd migrate", strings.Join(missing, ", "))
	}
	return sets, nil
}

// States lists the machine states as the database defines them now (deadlines may be tuned by hand).
func (s *Store) States(ctx context.Context) ([]StateInfo, error) {
	rows, err := s.pool.Query(ctx, `SELECT state, kind, failed_state, deadline::text, needs_member, counts_as_ready, description
		FROM machine_states ORDER BY state`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (StateInfo, error) {
		var st StateInfo
		err := r.Scan(&st.State, &st.Kind, &st.FailedState, &st.Deadline, &st.NeedsMember, &st.CountsAsReady, &st.Description)
		return st, err
	})
}
