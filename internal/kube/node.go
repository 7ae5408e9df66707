// Package kube is what nix8s reads of Kubernetes objects, the same way wherever it reads them (the API
// client of a rollout or the node watcher, kubectl's JSON over ssh during an install).
package kube

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// Ready says whether node's Ready condition is True, and if not, what it says instead: `Ready=False
// (KubeletNotReady: ...)`, or that there is no Ready condition. It is the one "is this node Ready" check.
func Ready(node *corev1.Node) (bool, string) {
	for _, c := range node.Status.Conditions {
		if c.Type != corev1.NodeReady {
			continue
		}
		if c.Status == corev1.ConditionTrue {
			return true, ""
		}
		why := "Ready=" + string(c.Status)
		if c.Reason != "" {
			why += " (" + c.Reason
			if c.Message != "" {
				why += ": " + c.Message
			}
			why += ")"
		}
		return false, why
	}
	return false, "no Ready condition reported"
}

// ReadyStatus is the status of node's Ready condition: True, False, Unknown, or "" when it has none.
func ReadyStatus(node *corev1.Node) string {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return string(c.Status)
		}
	}
	return ""
}

// ParseNode reads `kubectl get node NAME -o json`.
func ParseNode(data []byte) (*corev1.Node, error) {
	var n corev1.Node
	if err := json.Unmarshal(data, &n); err != nil {
		return nil, fmt.Errorf("reading kubectl's node JSON: %w", err)
	}
	return &n, nil
}

// ParseNodes reads `kubectl get nodes -o json`.
func ParseNodes(data []byte) ([]corev1.Node, error) {
	var list corev1.NodeList
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("reading kubectl's node list JSON: %w", err)
	}
	return list.Items, nil
}
