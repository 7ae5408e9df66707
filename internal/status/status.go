// Package status reports, per member of a cluster, whether it is reachable over ssh, which NixOS system it
// runs next to the one its flake describes, and whether its k3s node is Ready and at which version.
package status

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/provision"
	"github.com/nix8s/nix8s/internal/remote"
)

// Member is the status of one member.
type Member struct {
	Name      string `json:"name"`
	HostName  string `json:"hostName"`
	Role      string `json:"role"`
	IP        string `json:"ip"`
	Reachable bool   `json:"reachable"`
	// Error is why the member could not be reached or asked.
	Error string `json:"error,omitempty"`
	// HostNameNow is the hostname the machine has now.
	HostNameNow string `json:"currentHostName,omitempty"`
	// Current is the target of /run/current-system; empty when the machine does not run NixOS.
	Current string `json:"currentSystem,omitempty"`
	// Desired is the toplevel the flake builds for the member; empty without a flake.
	Desired string `json:"desiredSystem,omitempty"`
	// UpToDate is Current == Desired, nil without a flake.
	UpToDate *bool `json:"upToDate,omitempty"`
	// Ready is the k3s node's Ready condition (True, False, Unknown), empty when the cluster does not know it.
	Ready string `json:"ready,omitempty"`
	// Version is the node's kubelet (k3s) version.
	Version string `json:"k3sVersion,omitempty"`
}

// Report is the status of a cluster.
type Report struct {
	Cluster string   `json:"cluster"`
	Members []Member `json:"members"`
	// Nodes says where the node list came from, or why there is none.
	Nodes string `json:"nodes"`
}

// Desired is the toplevel store path of nixosConfigurations.<hostName> in the flake.
type Desired func(ctx context.Context, hostName string) (string, error)

// Get asks every member, in parallel, and one reachable server for the node list.
func Get(ctx context.Context, r remote.Runner, c core.Cluster, desired Desired) *Report {
	names := append(append([]string{}, c.Servers...), c.Agents...)
	rep := &Report{Cluster: c.Name, Members: make([]Member, len(names))}
	var wg sync.WaitGroup
	for i, m := range names {
		mem := c.Members[m]
		rep.Members[i] = Member{Name: m, HostName: mem.HostName, Role: mem.Role, IP: mem.IP}
		wg.Add(1)
		go func() {
			defer wg.Done()
			probe(ctx, r, remote.HostOf(mem), &rep.Members[i], desired)
		}()
	}
	wg.Wait()
	rep.Nodes = "no reachable server"
	for i, m := range names {
		st := rep.Members[i]
		if c.Members[m].Role != "server" || !st.Reachable {
			continue
		}
		out, err := r.Run(ctx, remote.HostOf(c.Members[m]), "k3s kubectl get nodes -o json")
		if err != nil {
			rep.Nodes = fmt.Sprintf("asking %s: %v", st.HostName, err)
			continue
		}
		nodes, err := provision.ParseNodes(out)
		if err != nil {
			rep.Nodes = fmt.Sprintf("asking %s: %v", st.HostName, err)
			continue
		}
		rep.Nodes = "from " + st.HostName
		byName := map[string]provision.Node{}
		for _, n := range nodes {
			byName[n.Name] = n
		}
		for j := range rep.Members {
			if n, ok := byName[rep.Members[j].HostName]; ok {
				rep.Members[j].Ready, rep.Members[j].Version = n.Ready, n.KubeletVersion
			}
		}
		break
	}
	return rep
}

func probe(ctx context.Context, r remote.Runner, host remote.Host, st *Member, desired Desired) {
	out, err := r.Run(ctx, host, "uname -n; readlink /run/current-system || true")
	if err != nil {
		st.Error = err.Error()
		return
	}
	st.Reachable = true
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	st.HostNameNow = strings.TrimSpace(lines[0])
	if len(lines) > 1 {
		st.Current = strings.TrimSpace(lines[1])
	}
	if desired != nil {
		d, err := desired(ctx, st.HostName)
		if err != nil {
			st.Error = fmt.Sprintf("evaluating the desired system: %v", err)
			return
		}
		st.Desired = d
		up := d == st.Current
		st.UpToDate = &up
	}
}
