package status

import (
	"context"
	"strings"
	"testing"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/sshtest"
)

// TestStatus runs against real sshd nodes with the k3s stand-in; Desired is a function here because
// evaluating a NixOS toplevel needs nixpkgs, which cannot be had offline (the CLI's is `nix eval`).
func TestStatus(t *testing.T) {
	n := sshtest.Start(t, "s", "a", "b")
	si := n.StandIns(t)
	c := core.Cluster{Name: "t", FirstServer: "s", Servers: []string{"s"}, Agents: []string{"a", "b"}, Members: map[string]core.Member{}}
	for _, m := range []string{"s", "a", "b"} {
		role := "agent"
		if m == "s" {
			role = "server"
		}
		c.Members[m] = core.Member{Name: m, HostName: "t-" + m, Role: role, IP: n.Node(m).IP, SSH: n.Endpoint(m)}
	}
	// s and a are installed; b still runs the installer.
	for _, m := range []string{"s", "a"} {
		n.Node(m).Exec(t, "touch /etc/NIXOS && hostname t-"+m+" && ln -sfn /nix/store/00000000000000000000000000000000-nixos-system-t-"+m+" /run/current-system")
	}
	si.Register(t, "t-s", true)
	si.Register(t, "t-a", false)
	desired := func(_ context.Context, host string) (string, error) {
		if host == "t-a" {
			return "/nix/store/11111111111111111111111111111111-nixos-system-t-a", nil
		}
		return "/nix/store/00000000000000000000000000000000-nixos-system-" + host, nil
	}
	r := Get(context.Background(), n.SSH(), c, desired)
	if r.Nodes != "from t-s" {
		t.Errorf("nodes: %s", r.Nodes)
	}
	var got []string
	for _, m := range r.Members {
		up := "-"
		if m.UpToDate != nil {
			up = map[bool]string{true: "up-to-date", false: "outdated"}[*m.UpToDate]
		}
		got = append(got, strings.Join([]string{m.Name, m.HostNameNow, up, m.Ready, m.Version}, " "))
	}
	want := []string{"s t-s up-to-date True v1.31.0+k3s1", "a t-a outdated False v1.31.0+k3s1", "b nixos outdated  "}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("status:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	n.Node("s").Stop()
	r = Get(context.Background(), n.SSH(), c, nil)
	if r.Nodes != "no reachable server" || r.Members[0].Reachable || !strings.Contains(r.Members[0].Error, "is unreachable over ssh") || r.Members[1].Ready != "" {
		t.Errorf("with the server down: %+v", r)
	}
}
