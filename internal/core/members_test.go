package core

import (
	"errors"
	"fmt"
	"testing"
)

func TestMemberSelection(t *testing.T) {
	c := Cluster{Name: "t", FirstServer: "s2", Servers: []string{"s1", "s2"},
		Members: map[string]Member{"s1": {}, "s2": {}, "a1": {}, "a2": {}}}
	waves := [][]string{{"s2"}, {"s1"}, {"a1", "a2"}}
	tests := []struct {
		name    string
		members []string
		waves   string
		err     string
	}{
		{name: "none selects every member", waves: "[[s2] [s1] [a1 a2]]"},
		{name: "the plan's order, whatever the order given", members: []string{"a2", "s2"}, waves: "[[s2] [a2]]"},
		{name: "unknown names, each with its place", members: []string{"a1", "db", "x"},
			err: `cluster "t" has no member "db", "x"; members: "a1", "a2", "s1", "s2"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.CheckMembers(tt.members)
			if tt.err != "" {
				var u *UnknownMembersError
				if err == nil || err.Error() != tt.err || !errors.As(err, &u) {
					t.Fatalf("error %v, want %s", err, tt.err)
				}
				if fmt.Sprint(u.Index) != "[1 2]" || u.One(0) != `cluster "t" has no member "db"; members: "a1", "a2", "s1", "s2"` {
					t.Errorf("index %v, one %q", u.Index, u.One(0))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(SelectWaves(waves, tt.members)); got != tt.waves {
				t.Errorf("waves %s, want %s", got, tt.waves)
			}
		})
	}
	if got := fmt.Sprint(c.ServerOrder()); got != "[s2 s1]" {
		t.Errorf("server order %s, want the first server first", got)
	}
}
