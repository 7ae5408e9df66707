package core

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// WriteSummary prints the plan for people: per cluster the API endpoint, the first server, the members
// (in join order), the join waves and the rollout order. clusters selects and orders clusters; nil means
// all, alphabetically.
func WriteSummary(w io.Writer, p Plan, clusters []string) error {
	if clusters == nil {
		for name := range p.Clusters {
			clusters = append(clusters, name)
		}
		sort.Strings(clusters)
	}
	for i, name := range clusters {
		c, ok := p.Clusters[name]
		if !ok {
			return fmt.Errorf("no cluster named %q in the plan", name)
		}
		if i > 0 {
			fmt.Fprintln(w)
		}
		if err := writeCluster(w, name, c); err != nil {
			return err
		}
	}
	return nil
}

func writeCluster(w io.Writer, name string, c Cluster) error {
	endpoint := c.APIEndpoint
	if c.HA.Enable && c.HA.VIP != nil {
		endpoint += " (HA through VIP " + *c.HA.VIP + ")"
	} else if c.HA.Enable {
		endpoint += " (HA enabled, single server)"
	}
	version := "(the NixOS default)"
	if c.K3sVersion != nil {
		version = *c.K3sVersion
	}
	fmt.Fprintf(w, "cluster %s\n", name)
	fmt.Fprintf(w, "  endpoint      %s\n", endpoint)
	fmt.Fprintf(w, "  first server  %s\n", c.FirstServer)
	fmt.Fprintf(w, "  k3s           %s\n", version)
	fmt.Fprintf(w, "  members       %d (%s, %s)\n\n", len(c.Members), plural(len(c.Servers), "server"), plural(len(c.Agents), "agent"))

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tROLE\tIP\tMAC\tNODE")
	for _, m := range joinOrder(c) {
		mem := c.Members[m]
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", m, mem.Role, mem.IP, orDash(mem.MAC, "-"), orDash(mem.Node, "(inline)"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintf(w, "\n  join waves (each waits for the one before)\n")
	for i, wave := range c.Provision {
		fmt.Fprintf(w, "    %d. %s\n", i+1, strings.Join(wave, ", "))
	}
	fmt.Fprintf(w, "  rollout order (first server last)\n    %s\n", strings.Join(c.Rollout, ", "))
	if len(c.UpgradeRollout) > 0 {
		fmt.Fprintf(w, "  k3s upgrade order (servers before agents)\n    %s\n", strings.Join(c.UpgradeRollout, ", "))
	}
	return nil
}

// joinOrder lists members wave by wave, then any the waves do not mention (none, if the core is right).
func joinOrder(c Cluster) []string {
	seen := map[string]bool{}
	var order []string
	for _, wave := range c.Provision {
		for _, m := range wave {
			if !seen[m] {
				seen[m] = true
				order = append(order, m)
			}
		}
	}
	var rest []string
	for m := range c.Members {
		if !seen[m] {
			rest = append(rest, m)
		}
	}
	sort.Strings(rest)
	return append(order, rest...)
}

func orDash(s *string, dflt string) string {
	if s == nil {
		return dflt
	}
	return *s
}

func plural(n int, what string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", what)
	}
	return fmt.Sprintf("%d %ss", n, what)
}
