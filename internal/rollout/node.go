package rollout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/kubectl/pkg/drain"

	"github.com/nix8s/nix8s/internal/kube"
	"github.com/nix8s/nix8s/internal/progress"
	"github.com/nix8s/nix8s/internal/wait"
)

// preflight reaches the API server and checks that every selected member is a registered node, before
// anything is touched.
func (ro *rollout) preflight(ctx context.Context) error {
	nodes, err := ro.o.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("reaching the Kubernetes API server of cluster %q: %w", ro.c.Name, err)
	}
	have := map[string]bool{}
	for _, n := range nodes.Items {
		have[n.Name] = true
	}
	var missing []string
	for _, m := range ro.selected() {
		if h := ro.c.Members[m].HostName; !have[h] {
			missing = append(missing, fmt.Sprintf("%q (member %s)", h, m))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("cluster %q: no node %s registered with the API server; install and join it first (nix8s install)",
			ro.c.Name, strings.Join(missing, ", "))
	}
	return nil
}

// selected is the selected members, in no particular order.
func (ro *rollout) selected() []string {
	if len(ro.o.Members) > 0 {
		return ro.o.Members
	}
	out := make([]string, 0, len(ro.c.Members))
	for m := range ro.c.Members {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// nodeVersions is the kubelet version of each member's node, by member; members without a node are left out.
func (ro *rollout) nodeVersions(ctx context.Context) (map[string]string, error) {
	nodes, err := ro.o.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("reaching the Kubernetes API server of cluster %q: %w", ro.c.Name, err)
	}
	byName := map[string]string{}
	for _, n := range nodes.Items {
		byName[n.Name] = n.Status.NodeInfo.KubeletVersion
	}
	out := map[string]string{}
	for m, mem := range ro.c.Members {
		if v, ok := byName[mem.HostName]; ok && v != "" {
			out[m] = v
		}
	}
	return out, nil
}

// kind decides between a configuration rollout and an upgrade, and refuses unsupported version changes.
// The running version is FromVersion, else each node's kubelet version (not in a dry run without a client).
func (ro *rollout) kind(ctx context.Context) (Kind, string, error) {
	if ro.c.K3sVersion == nil {
		if ro.o.FromVersion != "" {
			return "", "", fmt.Errorf("from-version %s given, but cluster %q sets no k3sVersion (it runs the NixOS default): nothing to upgrade to",
				ro.o.FromVersion, ro.c.Name)
		}
		return Configuration, "", nil
	}
	to, err := ParseVersion(*ro.c.K3sVersion)
	if err != nil {
		return "", "", fmt.Errorf("cluster %q: k3sVersion: %w", ro.c.Name, err)
	}
	var running []Version
	switch {
	case ro.o.FromVersion != "":
		from, err := ParseVersion(ro.o.FromVersion)
		if err != nil {
			return "", "", fmt.Errorf("from-version: %w", err)
		}
		running = []Version{from}
	case ro.o.Client != nil:
		versions, err := ro.nodeVersions(ctx)
		if err != nil {
			return "", "", err
		}
		members := make([]string, 0, len(versions))
		for m := range versions {
			members = append(members, m)
		}
		sort.Strings(members)
		for _, m := range members {
			v, err := ParseVersion(versions[m])
			if err != nil {
				return "", "", fmt.Errorf("node %q: kubelet version: %w; pass --from-version", ro.c.Members[m].HostName, err)
			}
			running = append(running, v)
		}
	default:
		ro.progress("dry run: no --from-version given, so the k3s version is taken as unchanged (%s)", to)
	}
	var changed []Version
	for _, v := range running {
		if v.Compare(to) != 0 {
			changed = append(changed, v)
		}
	}
	if len(changed) == 0 {
		return Configuration, "", nil
	}
	sort.Slice(changed, func(i, j int) bool { return changed[i].Compare(changed[j]) < 0 })
	for _, from := range changed {
		if err := CheckUpgrade(from, to, ro.o.Force); err != nil {
			return "", "", fmt.Errorf("cluster %q: %w", ro.c.Name, err)
		}
	}
	return Upgrade, changed[0].String(), nil
}

// checkSkew refuses to upgrade agents while a server that is not part of this rollout still runs an older
// k3s: a kubelet must never be newer than its API server.
func (ro *rollout) checkSkew(ctx context.Context, selected []string) error {
	if ro.o.Client == nil || len(ro.o.Members) == 0 {
		return nil
	}
	hasAgent := false
	for _, m := range selected {
		hasAgent = hasAgent || ro.c.Members[m].Role != "server"
	}
	if !hasAgent {
		return nil
	}
	versions, err := ro.nodeVersions(ctx)
	if err != nil {
		return err
	}
	for _, s := range ro.c.Servers {
		if !slices.Contains(selected, s) && versions[s] != ro.wantVersion {
			return fmt.Errorf("cluster %q: refusing to upgrade agents to %s while server %s runs %s (a kubelet must never be newer than its API server); roll out the servers first, or together with the agents",
				ro.c.Name, ro.wantVersion, ro.c.Members[s].HostName, orUnknown(versions[s]))
		}
	}
	return nil
}

func orUnknown(s string) string {
	if s == "" {
		return "an unknown version"
	}
	return s
}

func (ro *rollout) helper(ctx context.Context, node string, phase Phase) *drain.Helper {
	member := ro.memberOf(node)
	out := progress.Writer(ro.em.Reporter, func(line string) progress.Event {
		return progress.Event{Time: time.Now(), Cluster: ro.c.Name, Member: member, Node: node, Phase: string(phase),
			Status: progress.Running, Message: line}
	})
	return &drain.Helper{
		Ctx:                  ctx,
		Client:               ro.o.Client,
		IgnoreAllDaemonSets:  true,
		DeleteEmptyDirData:   true,
		GracePeriodSeconds:   -1, // each pod's own
		Timeout:              ro.o.DrainTimeout,
		EvictErrorRetryDelay: ro.o.EvictRetryDelay,
		Out:                  out,
		ErrOut:               out,
	}
}

// cordon marks the node unschedulable (or schedulable again).
func (ro *rollout) cordon(ctx context.Context, node string, unschedulable bool) error {
	n, err := ro.o.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("node %q is not registered with the API server", node)
	}
	if err != nil {
		return err
	}
	phase := PhaseCordon
	if unschedulable {
		ro.event(node, phase, progress.Running, "cordoning")
	} else {
		phase = PhaseUncordon
		ro.event(node, phase, progress.Running, "uncordoning")
	}
	return drain.RunCordonOrUncordon(ro.helper(ctx, node, phase), n, unschedulable)
}

// drain evicts the node's pods through the eviction API, so PodDisruptionBudgets are honoured; an eviction
// a budget refuses is retried until DrainTimeout, then the drain fails.
func (ro *rollout) drain(ctx context.Context, node string) error {
	ro.event(node, PhaseDrain, progress.Running, "draining")
	start := time.Now()
	if err := drain.RunNodeDrain(ro.helper(ctx, node, PhaseDrain), node); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Since(start) >= ro.o.DrainTimeout {
			return fmt.Errorf("timed out after %s: %w", ro.o.DrainTimeout, err)
		}
		return err
	}
	return nil
}

// leaseRenewal is the node's last heartbeat (its Lease's renewTime in kube-node-lease), read right after the
// switch; nil when the node has no Lease (a kubelet that does not renew one is not waited for).
func (ro *rollout) leaseRenewal(ctx context.Context, node string) *metav1.MicroTime {
	l, err := ro.o.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, node, metav1.GetOptions{})
	if err != nil || l.Spec.RenewTime == nil {
		return &metav1.MicroTime{}
	}
	return l.Spec.RenewTime
}

// waitReady waits until the node reports Ready (and, in an upgrade, the new kubelet version) from a kubelet
// that has renewed the node's Lease since the switch. The Ready condition alone can be stale: a restarting
// kubelet reports nothing, and the API server only marks the node NotReady after its grace period (40 s);
// the Lease is renewed every 10 s by a running kubelet, and both times come from the node's clock.
func (ro *rollout) waitReady(ctx context.Context, node string, switched *metav1.MicroTime) error {
	if ro.wantVersion != "" {
		ro.event(node, PhaseReady, progress.Running, "waiting until Ready with kubelet %s", ro.wantVersion)
	} else {
		ro.event(node, PhaseReady, progress.Running, "waiting until Ready")
	}
	last, err := wait.Poll(ctx, ro.o.ReadyTimeout, ro.o.PollInterval, func(ctx context.Context) error {
		n, err := ro.o.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		ready, why := kube.Ready(n)
		version := n.Status.NodeInfo.KubeletVersion
		switch {
		case !ready:
			return errors.New(why)
		case ro.wantVersion != "" && version != ro.wantVersion:
			return fmt.Errorf("Ready, but its kubelet runs %s, not %s", orUnknown(version), ro.wantVersion)
		case !ro.renewedSince(ctx, node, switched):
			return errors.New("Ready, but its kubelet has not renewed the node's lease since the switch")
		}
		return nil
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		if last == nil {
			last = errors.New("no answer from the API server yet")
		}
		return fmt.Errorf("node %q not Ready after %s: %s", node, ro.o.ReadyTimeout, last)
	default:
		return err
	}
}

// renewedSince says whether the node's Lease was renewed after switched; a node without a Lease before the
// switch (zero switched) counts as renewed.
func (ro *rollout) renewedSince(ctx context.Context, node string, switched *metav1.MicroTime) bool {
	if switched.IsZero() {
		return true
	}
	l, err := ro.o.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, node, metav1.GetOptions{})
	return err == nil && l.Spec.RenewTime != nil && switched.Before(l.Spec.RenewTime)
}
