package provision

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nix8s/nix8s/internal/remote"
)

// Readiness answers, once per call, whether a server's API or a node is ready. Install repeats the probes
// until they succeed or the wait times out.
type Readiness interface {
	// APIReady is nil when the API server on host answers /readyz with ok.
	APIReady(ctx context.Context, host remote.Host) error
	// NodeReady is nil when the node called node has the condition Ready=True, asked on host.
	NodeReady(ctx context.Context, host remote.Host, node string) error
}

// SSHReadiness asks k3s itself over ssh (`k3s kubectl`, as root on the server), so that no port besides ssh
// needs to be reachable and no certificate check is skipped.
type SSHReadiness struct {
	Runner remote.Runner
}

// APIReady implements Readiness.
func (r SSHReadiness) APIReady(ctx context.Context, host remote.Host) error {
	out, err := r.Runner.Run(ctx, host, "k3s kubectl get --raw /readyz")
	if err != nil {
		return err
	}
	if s := strings.TrimSpace(string(out)); s != "ok" {
		return fmt.Errorf("%s: /readyz answered %q", host, s)
	}
	return nil
}

// NodeReady implements Readiness.
func (r SSHReadiness) NodeReady(ctx context.Context, host remote.Host, node string) error {
	out, err := r.Runner.Run(ctx, host, "k3s kubectl get node "+remote.Quote(node)+" -o json")
	if err != nil {
		return err
	}
	n, err := ParseNode(out)
	if err != nil {
		return fmt.Errorf("%s: %w", host, err)
	}
	if n.Ready != "True" {
		return fmt.Errorf("node %s is not Ready (Ready=%s)", node, n.Ready)
	}
	return nil
}

// Node is what nix8s reads of a Kubernetes node.
type Node struct {
	Name           string `json:"name"`
	Ready          string `json:"ready"` // the Ready condition's status: True, False, Unknown, or "" when absent
	KubeletVersion string `json:"kubeletVersion"`
}

type nodeJSON struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Status struct {
		Conditions []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"conditions"`
		NodeInfo struct {
			KubeletVersion string `json:"kubeletVersion"`
		} `json:"nodeInfo"`
	} `json:"status"`
}

func (j nodeJSON) node() Node {
	n := Node{Name: j.Metadata.Name, KubeletVersion: j.Status.NodeInfo.KubeletVersion}
	for _, c := range j.Status.Conditions {
		if c.Type == "Ready" {
			n.Ready = c.Status
		}
	}
	return n
}

// ParseNode reads `kubectl get node NAME -o json`.
func ParseNode(data []byte) (Node, error) {
	var j nodeJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return Node{}, fmt.Errorf("reading kubectl's node JSON: %w", err)
	}
	return j.node(), nil
}

// ParseNodes reads `kubectl get nodes -o json`.
func ParseNodes(data []byte) ([]Node, error) {
	var list struct {
		Items []nodeJSON `json:"items"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("reading kubectl's node list JSON: %w", err)
	}
	nodes := make([]Node, len(list.Items))
	for i, j := range list.Items {
		nodes[i] = j.node()
	}
	return nodes, nil
}
