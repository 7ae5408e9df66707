// Package lima runs a cluster of the config as local Lima VMs, one per member running that member's own NixOS
// configuration (docs/lima.md): the core's Lima view (lib/lima.nix) says what each VM is, this package writes
// the instance files, drives limactl and hands the members, reached on 127.0.0.1, to provision.Install, which
// walks the join waves as it does for machines.
package lima

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"

	"github.com/nix8s/nix8s/internal/core"
)

// View is the core's Lima view of one cluster (`core.lima cfg cluster`).
type View struct {
	Errors   []core.Problem `json:"errors"`
	Warnings []core.Problem `json:"warnings"`
	Cluster  string         `json:"cluster"`
	// Network is the cluster's own user-v2 network.
	Network Network `json:"network"`
	// Waves are the plan's join waves: the first server, each other server alone, then the agents.
	Waves [][]string `json:"waves"`
	// Members in name order.
	Members []Member `json:"members"`
}

// Network is a cluster's Lima network.
type Network struct {
	// Name is `nix8s-<cluster>`.
	Name string `json:"name"`
	// Subnet is the network, like 192.168.107.0/24.
	Subnet string `json:"subnet"`
	// GatewayArg is what `limactl network create --gateway` gets (the first address); Lima itself serves
	// gateway and DNS on the second, Gateway.
	GatewayArg string `json:"gatewayArg"`
	Gateway    string `json:"gateway"`
	Prefix     int    `json:"prefix"`
}

// Member is one member's VM.
type Member struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	IP       string `json:"ip"`
	HostName string `json:"hostName"`
	// Instance is the Lima instance name, `nix8s-<cluster>-<member>`.
	Instance string `json:"instance"`
	// Wave is the member's index in Waves.
	Wave int `json:"wave"`
	// SSHPort is the fixed SSH port on 127.0.0.1, nil when nix8s picks one at the instance's creation.
	SSHPort *int `json:"sshPort"`
	// APIPort is where a server's 6443 is forwarded on 127.0.0.1, nil for agents.
	APIPort *int `json:"apiPort"`
	// Config is the Lima instance YAML as data, without the image and the host key (Render adds them).
	Config map[string]any `json:"config"`
}

// Message is the instance's `message`, the marker by which nix8s knows an instance as its own.
func (m Member) Message() string {
	s, _ := m.Config["message"].(string)
	return s
}

var clusterName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// Load asks the core for the Lima view of cluster. An invalid config, or a cluster that does not use Lima, is
// a *core.InvalidError with the view's problems.
func Load(ctx context.Context, ev *core.Evaluator, cfg any, cluster string) (*View, error) {
	if !clusterName.MatchString(cluster) {
		return nil, fmt.Errorf("%q is not a cluster name (lowercase letters, digits and \"-\")", cluster)
	}
	out, err := ev.Eval(ctx, cfg, `core.lima cfg "`+cluster+`"`)
	if err != nil {
		return nil, err
	}
	var v View
	if err := json.Unmarshal(out, &v); err != nil {
		return nil, fmt.Errorf("decoding the core's Lima view: %w", err)
	}
	if len(v.Errors) > 0 {
		return &v, &core.InvalidError{Report: core.Report{Errors: v.Errors, Warnings: v.Warnings}}
	}
	return &v, nil
}

// Member returns the member called name.
func (v *View) Member(name string) (Member, bool) {
	for _, m := range v.Members {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}
