package provision

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/nix8s/nix8s/internal/kube"
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
	n, err := kube.ParseNode(out)
	if err != nil {
		return fmt.Errorf("%s: %w", host, err)
	}
	if ok, _ := kube.Ready(n); !ok {
		return fmt.Errorf("node %s is not Ready (Ready=%s)", node, kube.ReadyStatus(n))
	}
	return nil
}

// Node is what nix8s reads of a Kubernetes node.
type Node struct {
	Name           string `json:"name"`
	Ready          string `json:"ready"` // the Ready condition's status: True, False, Unknown, or "" when absent
	KubeletVersion string `json:"kubeletVersion"`
}

func nodeOf(n *corev1.Node) Node {
	return Node{Name: n.Name, Ready: kube.ReadyStatus(n), KubeletVersion: n.Status.NodeInfo.KubeletVersion}
}

// ParseNode reads `kubectl get node NAME -o json`.
func ParseNode(data []byte) (Node, error) {
	n, err := kube.ParseNode(data)
	if err != nil {
		return Node{}, err
	}
	return nodeOf(n), nil
}

// ParseNodes reads `kubectl get nodes -o json`.
func ParseNodes(data []byte) ([]Node, error) {
	items, err := kube.ParseNodes(data)
	if err != nil {
		return nil, err
	}
	nodes := make([]Node, len(items))
	for i := range items {
		nodes[i] = nodeOf(&items[i])
	}
	return nodes, nil
}
