package cozystack

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
)

// The ConfigMap bootstrap applies once its ready step passed: the cluster's record that its platform, and so
// its CNI, was up once. nix8sd reads it to decide what a member's readiness means (docs/cozystack.md,
// "Readiness before and after bootstrap"). In cozy-system, so removing Cozystack's namespace removes it too.
const (
	MarkerNamespace = "cozy-system"
	MarkerName      = "nix8s-cozystack-bootstrap"
)

// marker is the ConfigMap recording a finished bootstrap. It holds the version only, no time: applying it
// again changes nothing (bootstrap stays idempotent); its creationTimestamp says when.
func marker(version string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": MarkerName, "namespace": MarkerNamespace,
			"labels": map[string]any{"app.kubernetes.io/managed-by": FieldManager}},
		"data": map[string]any{"version": version},
	}}
}

// Bootstrapped says whether `nix8s cozystack bootstrap` (or a cozystack-bootstrap job) has finished on the
// cluster kube reaches: its marker ConfigMap exists. Before that a Cozystack cluster has no CNI (k3s runs
// with --flannel-backend=none), so no node is Ready and none is expected to be.
func Bootstrapped(ctx context.Context, kube kubernetes.Interface) (bool, error) {
	_, err := kube.CoreV1().ConfigMaps(MarkerNamespace).Get(ctx, MarkerName, metav1.GetOptions{})
	switch {
	case err == nil:
		return true, nil
	case apierrors.IsNotFound(err):
		return false, nil
	default:
		return false, fmt.Errorf("reading configmap %s/%s (whether Cozystack is bootstrapped): %w", MarkerNamespace, MarkerName, err)
	}
}

// NotBootstrappedError is what an operation that needs Ready nodes says about a Cozystack cluster whose
// platform is not bootstrapped yet.
func NotBootstrappedError(cluster, operation string) error {
	return fmt.Errorf("cluster %q runs Cozystack, whose platform is not bootstrapped yet (no configmap %s/%s: bootstrap's last step, %s, has not passed), so it has no CNI and no node is Ready: a %s would wait for Ready nodes in vain; bootstrap first: nix8s cozystack bootstrap %s (or POST /v1/clusters/%s/cozystack/bootstrap)",
		cluster, MarkerNamespace, MarkerName, StepReady, operation, cluster, cluster)
}
