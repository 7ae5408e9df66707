// Package cozystack installs Cozystack on a planned cluster and reports whether it is ready: the release's
// CRDs, then its operator with the API host filled in, then the platform Package the core rendered, each by
// server-side apply (so bootstrap may run again), then waits until every node, Package and HelmRelease is
// Ready. The order and the waits follow docs/research/cozystack.md section 4; what was exercised:
// docs/cozystack.md.
package cozystack

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/nix8s/nix8s/internal/core"
)

// FieldManager owns what bootstrap applies.
const FieldManager = "nix8s"

// The kinds bootstrap reads.
var (
	crdGVR          = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	packageGVR      = schema.GroupVersionResource{Group: "cozystack.io", Version: "v1alpha1", Resource: "packages"}
	packageSrcGVR   = schema.GroupVersionResource{Group: "cozystack.io", Version: "v1alpha1", Resource: "packagesources"}
	helmReleaseGVR  = schema.GroupVersionResource{Group: "helm.toolkit.fluxcd.io", Version: "v2", Resource: "helmreleases"}
	platformRelease = [2]string{"cozy-system", "cozystack-platform"}
)

// Steps of a bootstrap, in order.
const (
	StepAPI           = "api"           // the API answers /readyz and every member has registered its node
	StepCRDs          = "crds"          // cozystack-crds.yaml applied, its CRDs Established
	StepOperator      = "operator"      // the operator manifest applied, its Deployment Available
	StepPackageSource = "packagesource" // the operator's platform PackageSource Ready
	StepPackage       = "package"       // the platform Package applied
	StepReady         = "ready"         // every node, Package and HelmRelease Ready; then the marker (Bootstrapped)
)

// Step is one finished step of a bootstrap: what it did, or why it failed.
type Step struct {
	Step   string `json:"step"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Options is one bootstrap.
type Options struct {
	// Cluster is the planned cluster; its Cozystack must be set.
	Cluster core.Cluster
	// Config reaches the cluster's API as an administrator.
	Config *rest.Config
	// CRDs and Operator say where the manifests come from (default: the plan's URLs); their hashes are checked.
	CRDs, Operator Source
	// HTTP downloads the manifests (default http.DefaultClient).
	HTTP *http.Client
	// Timeout bounds the whole bootstrap; 0: the plan's bootstrapTimeout.
	Timeout time.Duration
	// Poll is the wait between checks (default 2s).
	Poll time.Duration
	// Report is told each step as it ends (may be nil).
	Report func(Step)
}

type clients struct {
	kube   kubernetes.Interface
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newClients(cfg *rest.Config) (*clients, error) {
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &clients{kube: kube, dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}, nil
}

// Bootstrap installs Cozystack and returns once the platform is ready, or with an error naming the step and
// what is not ready. Every step re-applies or re-checks, so running it again is safe and resumes.
func Bootstrap(ctx context.Context, o Options) ([]Step, error) {
	cz := o.Cluster.Cozystack
	if cz == nil {
		return nil, fmt.Errorf("cluster %q has no Cozystack: set clusters.%s.cozystack.enable = true", o.Cluster.Name, o.Cluster.Name)
	}
	timeout := o.Timeout
	if timeout == 0 {
		d, err := time.ParseDuration(cz.BootstrapTimeout)
		if err != nil {
			return nil, fmt.Errorf("clusters.%s.cozystack.bootstrapTimeout: %w", o.Cluster.Name, err)
		}
		timeout = d
	}
	poll := o.Poll
	if poll == 0 {
		poll = 2 * time.Second
	}
	path := "clusters." + o.Cluster.Name + ".cozystack.manifests"
	// Both manifests are pinned, read and checked before anything is applied.
	if err := CheckPinned(o.Cluster); err != nil {
		return nil, err
	}
	crds, err := load(ctx, o.HTTP, cz.Manifests.CRDs, o.CRDs, "cozystack-crds.yaml "+cz.Version, path+".crds")
	if err != nil {
		return nil, err
	}
	opRaw, err := load(ctx, o.HTTP, cz.Manifests.Operator, o.Operator, "cozystack-operator-generic.yaml "+cz.Version, path+".operator")
	if err != nil {
		return nil, err
	}
	opRaw, err = replaceHost(opRaw, cz.Manifests.Placeholder, cz.APIServerHost)
	if err != nil {
		return nil, err
	}
	crdObjs, err := objects(crds)
	if err != nil {
		return nil, fmt.Errorf("cozystack-crds.yaml: %w", err)
	}
	opObjs, err := objects(opRaw)
	if err != nil {
		return nil, fmt.Errorf("cozystack-operator-generic.yaml: %w", err)
	}
	cl, err := newClients(o.Config)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	var steps []Step
	report := func(s Step) {
		steps = append(steps, s)
		if o.Report != nil {
			o.Report(s)
		}
	}
	run := func(name string, f func() (string, error)) error {
		detail, err := f()
		if err != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("timed out after %s: %w", timeout, err)
			}
			report(Step{Step: name, Detail: err.Error()})
			return fmt.Errorf("cozystack bootstrap of %s, step %s: %w", o.Cluster.Name, name, err)
		}
		report(Step{Step: name, OK: true, Detail: detail})
		return nil
	}
	wait := func(f func() (string, error)) error { return until(ctx, poll, f) }

	if err := run(StepAPI, func() (string, error) {
		return fmt.Sprintf("/readyz ok, %d nodes registered", len(members(o.Cluster))), wait(func() (string, error) { return registered(ctx, cl, o.Cluster) })
	}); err != nil {
		return steps, err
	}
	if err := run(StepCRDs, func() (string, error) {
		if err := applyAll(ctx, cl, crdObjs); err != nil {
			return "", err
		}
		return fmt.Sprintf("%d objects applied; %s Established", len(crdObjs), strings.Join(cz.CRDs, ", ")),
			wait(func() (string, error) { return established(ctx, cl, cz.CRDs) })
	}); err != nil {
		return steps, err
	}
	if err := run(StepOperator, func() (string, error) {
		if err := applyAll(ctx, cl, opObjs); err != nil {
			return "", err
		}
		return fmt.Sprintf("%d objects applied (API host %s); deployment %s/%s Available", len(opObjs), cz.APIServerHost, cz.Operator.Namespace, cz.Operator.Deployment),
			wait(func() (string, error) { return available(ctx, cl, cz.Operator.Namespace, cz.Operator.Deployment) })
	}); err != nil {
		return steps, err
	}
	if err := run(StepPackageSource, func() (string, error) {
		return "packagesource " + cz.PackageSource + " Ready", wait(func() (string, error) {
			o, err := getObject(ctx, cl, packageSrcGVR, "", cz.PackageSource, "packagesource")
			if err != nil || !o.Ready {
				return o.String(), err
			}
			return "", nil
		})
	}); err != nil {
		return steps, err
	}
	if err := run(StepPackage, func() (string, error) {
		pkg := &unstructured.Unstructured{Object: cz.Package}
		if err := applyAll(ctx, cl, []*unstructured.Unstructured{pkg}); err != nil {
			return "", err
		}
		return "package " + pkg.GetName() + " applied", nil
	}); err != nil {
		return steps, err
	}
	var last *Report
	err = run(StepReady, func() (string, error) {
		err := wait(func() (string, error) {
			r, err := Status(ctx, o.Config, o.Cluster)
			if err != nil {
				return "", err
			}
			last = r
			return strings.Join(r.NotReady, "; "), nil
		})
		if last == nil {
			return "", err
		}
		detail := fmt.Sprintf("%d nodes, %d packages, %d helmreleases Ready", len(last.Nodes), len(last.Packages), len(last.HelmReleases))
		if err != nil {
			return detail, err
		}
		// The record that the platform was up once (Bootstrapped): from now on members must be Ready nodes.
		if err := applyAll(ctx, cl, []*unstructured.Unstructured{marker(cz.Version)}); err != nil {
			return "", err
		}
		return detail + "; recorded in configmap " + MarkerNamespace + "/" + MarkerName, nil
	})
	return steps, err
}

// until calls check every poll until it reports nothing not ready, and returns an error naming what was not
// ready when ctx ends. An error from check that is not transient (a kind the API does not know yet, a missing
// object) ends the wait.
func until(ctx context.Context, poll time.Duration, check func() (string, error)) error {
	t := time.NewTicker(poll)
	defer t.Stop()
	// What the last check that finished in time found: a check cut short by the deadline knows less.
	var last string
	for {
		notReady, err := check()
		if ctx.Err() == nil {
			if err != nil {
				return err
			}
			if notReady == "" {
				return nil
			}
			last = notReady
		}
		select {
		case <-ctx.Done():
			if last == "" {
				last = ctx.Err().Error()
			}
			return fmt.Errorf("not ready: %s", last)
		case <-t.C:
		}
	}
}

func members(c core.Cluster) []core.Member {
	var ms []core.Member
	for _, n := range append(append([]string{}, c.Servers...), c.Agents...) {
		ms = append(ms, c.Members[n])
	}
	return ms
}

// registered: /readyz answers and every member has a Node (NotReady is expected: there is no CNI yet).
func registered(ctx context.Context, cl *clients, c core.Cluster) (string, error) {
	if err := cl.kube.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error(); err != nil {
		return "/readyz: " + err.Error(), nil
	}
	var missing []string
	for _, m := range members(c) {
		if _, err := cl.kube.CoreV1().Nodes().Get(ctx, m.HostName, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			missing = append(missing, "node "+m.HostName+": not registered")
		} else if err != nil {
			return "", err
		}
	}
	return strings.Join(missing, "; "), nil
}

// applyAll server-side applies each object, with force: the operator later applies the same CRDs as its own
// field manager.
func applyAll(ctx context.Context, cl *clients, objs []*unstructured.Unstructured) error {
	for _, u := range objs {
		if err := apply(ctx, cl, u); err != nil {
			return fmt.Errorf("applying %s %s: %w", strings.ToLower(u.GetKind()), qualified(u.GetNamespace(), u.GetName()), err)
		}
	}
	return nil
}

func apply(ctx context.Context, cl *clients, u *unstructured.Unstructured) error {
	gvk := u.GroupVersionKind()
	m, err := cl.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		// A kind the CRDs just added: ask discovery again.
		cl.mapper.Reset()
		m, err = cl.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return err
	}
	var r dynamic.ResourceInterface = cl.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := u.GetNamespace()
		if ns == "" {
			ns = metav1.NamespaceDefault
		}
		r = cl.dyn.Resource(m.Resource).Namespace(ns)
	}
	_, err = r.Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	return err
}

func established(ctx context.Context, cl *clients, names []string) (string, error) {
	var not []string
	for _, n := range names {
		u, err := cl.dyn.Resource(crdGVR).Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) {
				return "", fmt.Errorf("crd %s is not in cozystack-crds.yaml", n)
			}
			return "", err
		}
		if st, _, _ := condition(u, "Established"); st != "True" {
			not = append(not, "crd "+n+": not Established")
		}
	}
	return strings.Join(not, "; "), nil
}

func available(ctx context.Context, cl *clients, ns, name string) (string, error) {
	d, err := cl.kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return "", fmt.Errorf("deployment %s/%s is not in the operator manifest", ns, name)
		}
		return "", err
	}
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable && c.Status == corev1.ConditionTrue {
			return "", nil
		}
	}
	return fmt.Sprintf("deployment %s/%s: not Available (%d of %d replicas available)", ns, name, d.Status.AvailableReplicas, d.Status.Replicas), nil
}

// Object is one object's readiness.
type Object struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Ready     bool   `json:"ready"`
	// Reason and Message are its Ready condition's, or why there is none.
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

func (o Object) String() string {
	if o.Ready {
		return ""
	}
	s := o.Kind + " " + qualified(o.Namespace, o.Name) + ": not Ready"
	if o.Reason != "" || o.Message != "" {
		s += " (" + strings.TrimSpace(o.Reason+": "+o.Message) + ")"
	}
	return s
}

// Report is the platform's state.
type Report struct {
	Cluster      string   `json:"cluster"`
	Nodes        []Object `json:"nodes"`
	Packages     []Object `json:"packages"`
	HelmReleases []Object `json:"helmReleases"`
	// Ready is every node, every Package and every HelmRelease (not suspended) Ready, with the platform's
	// Package and HelmRelease among them. A Package's Ready only says its HelmReleases were generated.
	Ready bool `json:"ready"`
	// NotReady names each object that is not, with its reason.
	NotReady []string `json:"notReady"`
}

// Status reads the platform's state once.
func Status(ctx context.Context, cfg *rest.Config, c core.Cluster) (*Report, error) {
	if c.Cozystack == nil {
		return nil, fmt.Errorf("cluster %q has no Cozystack: set clusters.%s.cozystack.enable = true", c.Name, c.Name)
	}
	cl, err := newClients(cfg)
	if err != nil {
		return nil, err
	}
	r := &Report{Cluster: c.Name, Nodes: []Object{}, NotReady: []string{}}
	nodes, err := cl.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	seen := map[string]bool{}
	for _, n := range nodes.Items {
		seen[n.Name] = true
		o := Object{Kind: "node", Name: n.Name}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				o.Ready, o.Reason, o.Message = cond.Status == corev1.ConditionTrue, cond.Reason, cond.Message
			}
		}
		r.Nodes = append(r.Nodes, o)
	}
	for _, m := range members(c) {
		if !seen[m.HostName] {
			r.Nodes = append(r.Nodes, Object{Kind: "node", Name: m.HostName, Reason: "NotRegistered", Message: "the member has no node"})
		}
	}
	r.Packages, err = list(ctx, cl, packageGVR, "package")
	if err != nil {
		return nil, err
	}
	r.HelmReleases, err = list(ctx, cl, helmReleaseGVR, "helmrelease")
	if err != nil {
		return nil, err
	}
	if !has(r.Packages, "", c.Cozystack.PackageSource) {
		r.Packages = append(r.Packages, Object{Kind: "package", Name: c.Cozystack.PackageSource, Reason: "NotFound", Message: "not applied yet"})
	}
	if !has(r.HelmReleases, platformRelease[0], platformRelease[1]) {
		r.HelmReleases = append(r.HelmReleases, Object{Kind: "helmrelease", Namespace: platformRelease[0], Name: platformRelease[1], Reason: "NotFound", Message: "not generated yet"})
	}
	for _, group := range [][]Object{r.Nodes, r.Packages, r.HelmReleases} {
		for _, o := range group {
			if !o.Ready {
				r.NotReady = append(r.NotReady, o.String())
			}
		}
	}
	r.Ready = len(r.NotReady) == 0
	return r, nil
}

func has(objs []Object, ns, name string) bool {
	for _, o := range objs {
		if o.Namespace == ns && o.Name == name {
			return true
		}
	}
	return false
}

// list reads every object of a kind; a kind the API does not serve yet (Flux's HelmRelease before the operator
// installed Flux) is an empty list.
func list(ctx context.Context, cl *clients, gvr schema.GroupVersionResource, kind string) ([]Object, error) {
	l, err := cl.dyn.Resource(gvr).List(ctx, metav1.ListOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %ss: %w", kind, err)
	}
	var out []Object
	for i := range l.Items {
		u := &l.Items[i]
		if s, _, _ := unstructured.NestedBool(u.Object, "spec", "suspend"); s {
			continue
		}
		out = append(out, readiness(u, kind))
	}
	sort.Slice(out, func(i, j int) bool {
		return qualified(out[i].Namespace, out[i].Name) < qualified(out[j].Namespace, out[j].Name)
	})
	return out, nil
}

func getObject(ctx context.Context, cl *clients, gvr schema.GroupVersionResource, ns, name, kind string) (Object, error) {
	u, err := cl.dyn.Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Object{Kind: kind, Namespace: ns, Name: name, Reason: "NotFound", Message: "not created yet"}, nil
	}
	if err != nil {
		return Object{}, err
	}
	return readiness(u, kind), nil
}

func readiness(u *unstructured.Unstructured, kind string) Object {
	o := Object{Kind: kind, Namespace: u.GetNamespace(), Name: u.GetName()}
	st, reason, msg := condition(u, "Ready")
	o.Ready, o.Reason, o.Message = st == "True", reason, msg
	if st == "" {
		o.Reason = "NoCondition"
	}
	return o
}

// condition is status.conditions[type] of an object: its status, reason and message ("" when absent).
func condition(u *unstructured.Unstructured, typ string) (status, reason, message string) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok || m["type"] != typ {
			continue
		}
		s, _ := m["status"].(string)
		r, _ := m["reason"].(string)
		msg, _ := m["message"].(string)
		return s, r, msg
	}
	return "", "", ""
}

func qualified(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}
