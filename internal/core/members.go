package core

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// UnknownMembersError names the members an operation was asked for that a cluster does not have.
type UnknownMembersError struct {
	Cluster string
	// Unknown are the names, in the order given; Index is each one's position in the request.
	Unknown []string
	Index   []int
	// Known are the cluster's members, sorted.
	Known []string
}

func (e *UnknownMembersError) Error() string {
	return fmt.Sprintf("cluster %q has no member %s; members: %s", e.Cluster, quoted(e.Unknown), quoted(e.Known))
}

// One is the error's message for the i-th unknown name alone.
func (e *UnknownMembersError) One(i int) string {
	return fmt.Sprintf("cluster %q has no member %q; members: %s", e.Cluster, e.Unknown[i], quoted(e.Known))
}

// MemberNames lists c's members for messages: `"agent1", "server1"`.
func (c Cluster) MemberNames() string { return quoted(c.memberNames()) }

func (c Cluster) memberNames() []string {
	names := make([]string, 0, len(c.Members))
	for n := range c.Members {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func quoted(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}

// CheckMembers is nil when every name is a member of c, else an *UnknownMembersError. It is the one check of
// an operation's member selection (the CLI, the REST API, install and rollout).
func (c Cluster) CheckMembers(members []string) error {
	e := &UnknownMembersError{Cluster: c.Name}
	for i, m := range members {
		if _, ok := c.Members[m]; !ok {
			e.Unknown, e.Index = append(e.Unknown, m), append(e.Index, i)
		}
	}
	if len(e.Unknown) == 0 {
		return nil
	}
	e.Known = c.memberNames()
	return e
}

// SelectWaves is waves (the plan's provision or rollout waves) cut down to members, in the plan's order
// whatever the order given; empty members selects every member. Waves left empty are dropped.
func SelectWaves(waves [][]string, members []string) [][]string {
	var out [][]string
	for _, wave := range waves {
		var w []string
		for _, m := range wave {
			if len(members) == 0 || slices.Contains(members, m) {
				w = append(w, m)
			}
		}
		if len(w) > 0 {
			out = append(out, w)
		}
	}
	return out
}

// ServerOrder is c's servers with the first server first: the order in which the operations try them (for the
// admin kubeconfig, for an agent's join token).
func (c Cluster) ServerOrder() []string {
	order := []string{c.FirstServer}
	for _, m := range c.Servers {
		if m != c.FirstServer {
			order = append(order, m)
		}
	}
	return order
}
