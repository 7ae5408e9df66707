// Package nodewatch learns from each cluster's Kubernetes API when the machines of its members have joined
// (k3s registered their Node) and are ready (that Node is Ready), and moves them installing -> joined -> ready
// (or join_failed -> ready, a late success) through the store, whose database checks and logs every
// transition. In a Cozystack cluster not bootstrapped yet, registered is ready (Watcher.Cozystack). It polls:
// one List of the Nodes per cluster and pass, only for clusters with machines waiting.
package nodewatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nix8s/nix8s/internal/cozystack"
	"github.com/nix8s/nix8s/internal/kube"
	"github.com/nix8s/nix8s/internal/store"
)

// Store is what the Watcher needs of *store.Store.
type Store interface {
	Machines(ctx context.Context, f store.MachineFilter) ([]*store.Machine, error)
	MachinesOfCluster(ctx context.Context, cluster string) (map[string]*store.Machine, error)
	Events(ctx context.Context, mac string, after int64, limit int) ([]*store.Event, error)
	UpdateMachine(ctx context.Context, actor, mac string, c store.MachineChange) (*store.Machine, error)
}

// Defaults of the Watcher's fields.
const (
	DefaultInterval = 10 * time.Second
	DefaultActor    = "nix8sd:nodewatch"
)

// Slack is how much older than the start of the machine's current install a Node may be and still count as
// registered by that install. A reinstalled machine keeps its host name, so the Node object of its previous
// install may still be there (nobody deleted it: see Forget); it says nothing about the new install, and
// its Ready condition may even still be True for a while (the node lifecycle controller marks a silent
// kubelet Unknown only after its grace period). Counting it would report joined before the disk is even
// wiped. The slack covers clock skew between the database and the API server and creation timestamps,
// which have whole seconds only.
const Slack = time.Minute

// watched are the states the Watcher moves machines out of: a registered node moves its machine out of
// installing, a Ready one out of joined or join_failed.
var watched = []store.State{store.StateInstalling, store.StateJoined, store.StateJoinFailed}

// Watcher moves the machines of the clusters' members along as their Nodes register and become Ready.
type Watcher struct {
	Store Store
	// Clients reaches a cluster's API server (jobs.Runner.NodeClient in nix8sd). Run caches each client until
	// a call through it fails.
	Clients func(ctx context.Context, cluster string) (kubernetes.Interface, error)
	// HostNames maps each member of cluster to its Kubernetes node name: its hostName in the plan
	// (inventory.Inventory.HostNames in nix8sd).
	HostNames func(ctx context.Context, cluster string) (map[string]string, error)
	// Cozystack says whether cluster runs Cozystack (its plan's clusters.<c>.cozystack); nil: no cluster does.
	// Until such a cluster's platform is bootstrapped (cozystack.Bootstrapped) it has no CNI and no node is
	// Ready, so a registered node counts as ready; after, its Node must be Ready (docs/cozystack.md).
	Cozystack func(ctx context.Context, cluster string) (bool, error)
	// Interval is the pause between passes of Run; default DefaultInterval.
	Interval time.Duration
	// Actor names the watcher in the machines' event log; default DefaultActor.
	Actor string
	// Logger gets errors of Run's passes and every transition; default slog.Default().
	Logger *slog.Logger

	mu      sync.Mutex
	clients map[string]kubernetes.Interface
}

func (w *Watcher) actor() string {
	if w.Actor != "" {
		return w.Actor
	}
	return DefaultActor
}

func (w *Watcher) logger() *slog.Logger {
	if w.Logger != nil {
		return w.Logger
	}
	return slog.Default()
}

// Run calls Sync every Interval for each cluster with a machine in installing, joined or join_failed, until
// ctx ends. Errors are logged and the next pass tries again.
func (w *Watcher) Run(ctx context.Context) {
	interval := w.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		w.pass(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (w *Watcher) pass(ctx context.Context) {
	clusters, err := w.waiting(ctx)
	if err != nil {
		if ctx.Err() == nil {
			w.logger().Error("listing machines", "err", err)
		}
		return
	}
	w.mu.Lock()
	for c := range w.clients {
		if !slices.Contains(clusters, c) {
			delete(w.clients, c)
		}
	}
	w.mu.Unlock()
	for _, c := range clusters {
		if err := w.Sync(ctx, c); err != nil && ctx.Err() == nil {
			w.logger().Warn("cluster "+c, "cluster", c, "err", err)
		}
	}
}

// waiting lists the clusters with a machine in a watched state, sorted.
func (w *Watcher) waiting(ctx context.Context) ([]string, error) {
	var out []string
	for _, st := range watched {
		f := store.MachineFilter{State: st, Limit: 1000}
		for {
			ms, err := w.Store.Machines(ctx, f)
			if err != nil {
				return nil, err
			}
			for _, m := range ms {
				if m.Cluster != nil && !slices.Contains(out, *m.Cluster) {
					out = append(out, *m.Cluster)
				}
			}
			if len(ms) < f.Limit {
				break
			}
			f.After = ms[len(ms)-1].MAC
		}
	}
	slices.Sort(out)
	return out, nil
}

// client is the cached client of cluster, made by Clients when there is none.
func (w *Watcher) client(ctx context.Context, cluster string) (kubernetes.Interface, error) {
	w.mu.Lock()
	c, ok := w.clients[cluster]
	w.mu.Unlock()
	if ok {
		return c, nil
	}
	if w.Clients == nil {
		return nil, errors.New("nodewatch: the Watcher has no Clients")
	}
	c, err := w.Clients(ctx, cluster)
	if err != nil {
		return nil, fmt.Errorf("reaching the API server of cluster %q: %w", cluster, err)
	}
	w.mu.Lock()
	if w.clients == nil {
		w.clients = map[string]kubernetes.Interface{}
	}
	w.clients[cluster] = c
	w.mu.Unlock()
	return c, nil
}

func (w *Watcher) dropClient(cluster string) {
	w.mu.Lock()
	delete(w.clients, cluster)
	w.mu.Unlock()
}

// Sync makes one pass over cluster: every machine assigned to a member and in state installing, joined or
// join_failed whose Node (named after the member's host name) exists and was created by its current install
// (see Slack) moves installing -> joined ("node <name> registered"), and on to ready when that Node's Ready
// condition is True ("node <name> is Ready"); join_failed moves to ready only. Nothing moves back: a Node
// that is NotReady again, or gone, changes nothing (the database's deadline fails a machine that stays
// joined), and join_failed does not go back to joined, which would only restart that deadline.
// Machines in other states (ready, rebuilding, ...) are not touched. Each change names the version read
// (optimistic concurrency): a machine changed meanwhile (store.ErrConflict) is left to the next pass.
func (w *Watcher) Sync(ctx context.Context, cluster string) error {
	machines, err := w.Store.MachinesOfCluster(ctx, cluster)
	if err != nil {
		return err
	}
	var members []string
	for member, m := range machines {
		if slices.Contains(watched, m.State) {
			members = append(members, member)
		}
	}
	if len(members) == 0 {
		return nil
	}
	slices.Sort(members)
	if w.HostNames == nil {
		return errors.New("nodewatch: the Watcher has no HostNames")
	}
	hosts, err := w.HostNames(ctx, cluster)
	if err != nil {
		return fmt.Errorf("the host names of cluster %q: %w", cluster, err)
	}
	client, err := w.client(ctx, cluster)
	if err != nil {
		return err
	}
	list, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		w.dropClient(cluster)
		return fmt.Errorf("listing the nodes of cluster %q: %w", cluster, err)
	}
	nodes := map[string]*corev1.Node{}
	for i := range list.Items {
		nodes[list.Items[i].Name] = &list.Items[i]
	}
	registeredIsReady, err := w.registeredIsReady(ctx, cluster, client)
	if err != nil {
		return err
	}
	var errs []error
	for _, member := range members {
		if err := w.syncMachine(ctx, machines[member], hosts[member], nodes, registeredIsReady); err != nil {
			errs = append(errs, fmt.Errorf("machine %s (%s.%s): %w", machines[member].MAC, cluster, member, err))
		}
	}
	return errors.Join(errs...)
}

// registeredIsReady says whether cluster is a Cozystack cluster whose platform is not bootstrapped yet, where
// a registered node is all a member can be.
func (w *Watcher) registeredIsReady(ctx context.Context, cluster string, client kubernetes.Interface) (bool, error) {
	if w.Cozystack == nil {
		return false, nil
	}
	cozy, err := w.Cozystack(ctx, cluster)
	if err != nil {
		return false, fmt.Errorf("whether cluster %q runs Cozystack: %w", cluster, err)
	}
	if !cozy {
		return false, nil
	}
	done, err := cozystack.Bootstrapped(ctx, client)
	if err != nil {
		w.dropClient(cluster)
		return false, fmt.Errorf("cluster %q: %w", cluster, err)
	}
	return !done, nil
}

func (w *Watcher) syncMachine(ctx context.Context, m *store.Machine, host string, nodes map[string]*corev1.Node, registeredIsReady bool) error {
	if host == "" {
		return fmt.Errorf("the plan gives member %q no host name", *m.Member)
	}
	// A network install still armed has not reported done: the disk is not written yet, so any Node by that
	// name is a leftover of an earlier install, whatever its age.
	if m.State == store.StateInstalling && m.InstallArmed {
		return nil
	}
	// Kubernetes node names are lower case (the kubelet lowers the host name).
	node := nodes[strings.ToLower(host)]
	if node == nil {
		return nil
	}
	started, err := w.installStarted(ctx, m)
	if err != nil {
		return err
	}
	if started.IsZero() || node.CreationTimestamp.Time.Before(started.Add(-Slack)) {
		return nil
	}
	ready, why := Ready(node), fmt.Sprintf("node %s is Ready", node.Name)
	if !ready && registeredIsReady {
		ready, why = true, fmt.Sprintf("node %s registered; Cozystack is not bootstrapped yet, so there is no CNI and no node is Ready: registered counts as ready", node.Name)
	}
	if m.State == store.StateInstalling {
		if m, err = w.move(ctx, m, store.StateJoined, fmt.Sprintf("node %s registered", node.Name)); err != nil || m == nil {
			return err
		}
	}
	if ready {
		_, err = w.move(ctx, m, store.StateReady, why)
	}
	return err
}

// move changes m's state at m's version; a conflict (another writer, or the database refusing) gives nil
// and no error: the next pass reads the machine again.
func (w *Watcher) move(ctx context.Context, m *store.Machine, to store.State, reason string) (*store.Machine, error) {
	next, err := w.Store.UpdateMachine(ctx, w.actor(), m.MAC, store.MachineChange{Version: m.Version, State: &to, Reason: reason})
	if errors.Is(err, store.ErrConflict) {
		w.logger().Info("machine changed meanwhile; next pass", "mac", m.MAC, "to", to, "err", err)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	w.logger().Info("machine "+string(m.State)+" -> "+string(to), "mac", m.MAC, "cluster", *m.Cluster, "member", *m.Member, "reason", reason)
	return next, nil
}

// installStarted is when m's current install began: when it entered installing, read from its event log
// unless it is installing now; zero when the log has no such event.
func (w *Watcher) installStarted(ctx context.Context, m *store.Machine) (time.Time, error) {
	if m.State == store.StateInstalling {
		return m.StateChangedAt, nil
	}
	// TODO(store): a store method returning the time of the machine's last transition into installing
	// would spare reading the whole log.
	var started time.Time
	after := int64(0)
	for {
		evs, err := w.Store.Events(ctx, m.MAC, after, 1000)
		if err != nil {
			return time.Time{}, err
		}
		for _, e := range evs {
			if e.Kind == "state" && e.NewState != nil && *e.NewState == store.StateInstalling {
				started = e.At
			}
		}
		if len(evs) < 1000 {
			return started, nil
		}
		after = evs[len(evs)-1].ID
	}
}

// Ready says whether node's Ready condition is True (kube.Ready).
func Ready(node *corev1.Node) bool {
	ok, _ := kube.Ready(node)
	return ok
}

// NodePasswordSecret is the name of the Secret in kube-system in which a k3s server keeps the hash of a
// node's password: k3s-io/k3s pkg/nodepassword, getSecretName: strings.ToLower(nodeName + ".node-password."
// + version.Program), the program being "k3s".
func NodePasswordSecret(nodeName string) string {
	return strings.ToLower(nodeName + ".node-password.k3s")
}

// Forget deletes node nodeName and its k3s node password secret (NodePasswordSecret, namespace kube-system)
// before the machine is reinstalled. A reinstalled node comes back with the same name and a new password
// (/etc/rancher/node/password went with the disk); while the old secret is there the servers refuse it
// ("Node password rejected, duplicate hostname or contents of '/etc/rancher/node/password' may not match
// server node-passwd entry"), and the old Node object would be taken for the new one. Either already gone is
// fine. It does not remove a server's etcd member, which a reinstalled server also needs.
func Forget(ctx context.Context, client kubernetes.Interface, nodeName string) error {
	name := strings.ToLower(nodeName)
	if err := client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting node %s: %w", name, err)
	}
	secret := NodePasswordSecret(name)
	if err := client.CoreV1().Secrets(metav1.NamespaceSystem).Delete(ctx, secret, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting the node password secret %s/%s of node %s: %w", metav1.NamespaceSystem, secret, name, err)
	}
	return nil
}

// ForgetOldNode forgets (Forget) the Node of m's member in the background, before m is reinstalled: what
// runs when an install is armed (storeboot.Adapter.OnArm, the API's reinstall). It reaches the cluster through
// Clients and HostNames, uncached; a failure is logged, since k3s refuses the reinstalled node only if the
// old password secret is still there.
func (w *Watcher) ForgetOldNode(ctx context.Context, m *store.Machine) {
	if m.Cluster == nil || m.Member == nil || w.Clients == nil || w.HostNames == nil {
		return
	}
	cluster, member := *m.Cluster, *m.Member
	go func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		hosts, err := w.HostNames(ctx, cluster)
		if err != nil {
			return
		}
		host, ok := hosts[member]
		if !ok {
			return
		}
		client, err := w.Clients(ctx, cluster)
		if err == nil {
			err = Forget(ctx, client, host)
		}
		if err != nil {
			w.logger().Warn("could not remove the old node of a reinstalled member; if k3s refuses it, delete the node and its secret <node>.node-password.k3s in kube-system",
				"member", cluster+"-"+member, "err", err)
		}
	}()
}
