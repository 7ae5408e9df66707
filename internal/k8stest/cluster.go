package k8stest

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// AddNode registers a node as its kubelet would: Ready, reporting kubeletVersion, with a Lease.
func AddNode(ctx context.Context, c kubernetes.Interface, name, kubeletVersion string) error {
	_, err := c.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelHostname: name}},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	if err := SetNodeStatus(ctx, c, name, true, kubeletVersion); err != nil {
		return err
	}
	return RenewLease(ctx, c, name)
}

// SetNodeStatus sets the node's Ready condition and, when not empty, its kubelet version, as its kubelet
// would after (re)starting.
func SetNodeStatus(ctx context.Context, c kubernetes.Interface, name string, ready bool, kubeletVersion string) error {
	n, err := c.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	cond := corev1.NodeCondition{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		Message: "kubelet is posting ready status", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(),
	}
	if !ready {
		cond.Status, cond.Reason, cond.Message = corev1.ConditionFalse, "KubeletNotReady", "container runtime is down"
	}
	n.Status.Conditions = []corev1.NodeCondition{cond}
	if kubeletVersion != "" {
		n.Status.NodeInfo.KubeletVersion = kubeletVersion
	}
	_, err = c.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
	return err
}

// Owner is what manages a test pod.
type Owner string

const (
	Bare       Owner = ""           // no controller: drain refuses it without --force
	ReplicaSet Owner = "ReplicaSet" // evicted by drain
	DaemonSet  Owner = "DaemonSet"  // left alone by a drain that ignores DaemonSets
)

// Pod describes a pod to place on a node.
type Pod struct {
	Namespace, Name, Node string
	Labels                map[string]string
	// Owner and OwnerName name its controller, which is created when missing.
	Owner     Owner
	OwnerName string
	// EmptyDir gives the pod an emptyDir volume (drain must be told to delete its data).
	EmptyDir bool
}

// RunPod creates the pod bound to its node and marks it Running, as the scheduler and kubelet would
// (evictions of pods that are not Running ignore PodDisruptionBudgets).
func RunPod(ctx context.Context, c kubernetes.Interface, p Pod) error {
	if err := EnsureNamespace(ctx, c, p.Namespace); err != nil {
		return err
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels},
		Spec: corev1.PodSpec{
			NodeName:   p.Node,
			Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app:1"}},
		},
	}
	if p.EmptyDir {
		pod.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	}
	if p.Owner != Bare {
		ref, err := ensureOwner(ctx, c, p)
		if err != nil {
			return err
		}
		pod.OwnerReferences = []metav1.OwnerReference{ref}
	}
	created, err := c.CoreV1().Pods(p.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	created.Status.Phase = corev1.PodRunning
	created.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	_, err = c.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{})
	return err
}

func ensureOwner(ctx context.Context, c kubernetes.Interface, p Pod) (metav1.OwnerReference, error) {
	labels := map[string]string{"app": p.OwnerName}
	template := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app:1"}}},
	}
	sel := &metav1.LabelSelector{MatchLabels: labels}
	var meta metav1.ObjectMeta
	switch p.Owner {
	case ReplicaSet:
		rs, err := c.AppsV1().ReplicaSets(p.Namespace).Get(ctx, p.OwnerName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			rs, err = c.AppsV1().ReplicaSets(p.Namespace).Create(ctx, &appsv1.ReplicaSet{
				ObjectMeta: metav1.ObjectMeta{Name: p.OwnerName},
				Spec:       appsv1.ReplicaSetSpec{Replicas: ptr.To[int32](1), Selector: sel, Template: template},
			}, metav1.CreateOptions{})
		}
		if err != nil {
			return metav1.OwnerReference{}, err
		}
		meta = rs.ObjectMeta
	case DaemonSet:
		ds, err := c.AppsV1().DaemonSets(p.Namespace).Get(ctx, p.OwnerName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			ds, err = c.AppsV1().DaemonSets(p.Namespace).Create(ctx, &appsv1.DaemonSet{
				ObjectMeta: metav1.ObjectMeta{Name: p.OwnerName},
				Spec:       appsv1.DaemonSetSpec{Selector: sel, Template: template},
			}, metav1.CreateOptions{})
		}
		if err != nil {
			return metav1.OwnerReference{}, err
		}
		meta = ds.ObjectMeta
	default:
		return metav1.OwnerReference{}, fmt.Errorf("unknown owner kind %q", p.Owner)
	}
	return metav1.OwnerReference{
		APIVersion: "apps/v1", Kind: string(p.Owner), Name: meta.Name, UID: meta.UID,
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
	}, nil
}

// EnsureNamespace creates the namespace when missing.
func EnsureNamespace(ctx context.Context, c kubernetes.Interface, ns string) error {
	_, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// AddPDB creates a PodDisruptionBudget over the pods labelled app=<app> and sets its status as the
// disruption controller would, allowing disruptionsAllowed evictions. Without a status the API server
// answers every eviction with 429 and drain retries until its timeout.
func AddPDB(ctx context.Context, c kubernetes.Interface, ns, name, app string, minAvailable, healthy, disruptionsAllowed int32) error {
	if err := EnsureNamespace(ctx, c, ns); err != nil {
		return err
	}
	pdb, err := c.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: ptr.To(intstr.FromInt32(minAvailable)),
			Selector:     &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	pdb.Status = policyv1.PodDisruptionBudgetStatus{
		ObservedGeneration: pdb.Generation,
		DisruptionsAllowed: disruptionsAllowed,
		CurrentHealthy:     healthy,
		DesiredHealthy:     minAvailable,
		ExpectedPods:       healthy,
	}
	_, err = c.PolicyV1().PodDisruptionBudgets(ns).UpdateStatus(ctx, pdb, metav1.UpdateOptions{})
	return err
}

// RunKubelet plays every node's kubelet until ctx ends:
//   - a pod that got a deletionTimestamp (evicted or deleted) is removed for good (grace period 0, UID
//     precondition), as a kubelet does once its containers stopped; without it a drain waits forever;
//   - the Lease of every Ready node (kube-node-lease) is renewed every few hundred milliseconds, as a running
//     kubelet does every 10 s; a NotReady node's kubelet is taken to be down and renews nothing.
func RunKubelet(ctx context.Context, c kubernetes.Interface) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		removeTerminating(ctx, c)
		if i%3 == 0 {
			renewLeases(ctx, c)
		}
	}
}

func removeTerminating(ctx context.Context, c kubernetes.Interface) {
	pods, err := c.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			continue
		}
		_ = c.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To[int64](0),
			Preconditions:      &metav1.Preconditions{UID: &p.UID},
		})
	}
}

func renewLeases(ctx context.Context, c kubernetes.Interface) {
	nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	for _, n := range nodes.Items {
		if ready(&n) && n.Annotations[kubeletDown] == "" {
			_ = RenewLease(ctx, c, n.Name)
		}
	}
}

// kubeletDown marks a node whose kubelet stopped without the API server noticing yet.
const kubeletDown = "k8stest.nix8s.io/kubelet-down"

// StopKubelet stops the node's kubelet as far as the API server can tell: its Lease is no longer renewed,
// while the node still shows Ready (the API server marks it NotReady only after its grace period).
func StopKubelet(ctx context.Context, c kubernetes.Interface, node string) error {
	n, err := c.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if n.Annotations == nil {
		n.Annotations = map[string]string{}
	}
	n.Annotations[kubeletDown] = "true"
	_, err = c.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
	return err
}

func ready(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// RenewLease renews (or creates) the node's Lease in kube-node-lease, as its kubelet does. RunKubelet may
// renew the same Lease at the same moment: a lost race (already exists, conflict) is tried again.
func RenewLease(ctx context.Context, c kubernetes.Interface, node string) error {
	for {
		err := renewLease(ctx, c, node)
		if !apierrors.IsAlreadyExists(err) && !apierrors.IsConflict(err) {
			return err
		}
	}
}

func renewLease(ctx context.Context, c kubernetes.Interface, node string) error {
	now := metav1.NewMicroTime(time.Now())
	leases := c.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	l, err := leases.Get(ctx, node, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: node},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity: ptr.To(node), LeaseDurationSeconds: ptr.To[int32](40), RenewTime: &now,
			},
		}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.RenewTime = &now
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}

// DeleteNode removes a node and its Lease.
func DeleteNode(ctx context.Context, c kubernetes.Interface, node string) {
	_ = c.CoreV1().Nodes().Delete(ctx, node, metav1.DeleteOptions{})
	_ = c.CoordinationV1().Leases(corev1.NamespaceNodeLease).Delete(ctx, node, metav1.DeleteOptions{})
}
