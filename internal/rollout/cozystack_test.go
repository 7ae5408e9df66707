package rollout

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/cozystack"
)

// A Cozystack cluster has no CNI before its platform is bootstrapped, so no switched node would become Ready:
// the rollout is refused before anything is cordoned, naming the bootstrap; once bootstrap's marker exists
// (cozystack.Bootstrapped) it goes ahead as any other.
func TestACozystackClusterIsRolledOutOnlyOnceBootstrapped(t *testing.T) {
	c := newCluster(t, "cozy", 1, 1, v131, v131)
	c.Cozystack = &core.Cozystack{Version: "v1.6.2"}
	sw := newStandIn("")
	_, err := Rollout(t.Context(), c, opts(sw))
	if want := cozystack.NotBootstrappedError("cozy", "rollout"); err == nil || err.Error() != want.Error() {
		t.Fatalf("rollout before bootstrap: %v\nwant %v", err, want)
	}
	if got := sw.Calls(); len(got) != 0 {
		t.Errorf("switched before bootstrap: %v", got)
	}
	for m := range c.Members {
		if unschedulable(t, c.Members[m].HostName) {
			t.Errorf("%s cordoned by a refused rollout", m)
		}
	}

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: cozystack.MarkerNamespace}}
	if _, err := env.Client.CoreV1().Namespaces().Create(t.Context(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cms := env.Client.CoreV1().ConfigMaps(cozystack.MarkerNamespace)
	if _, err := cms.Create(t.Context(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: cozystack.MarkerName}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cms.Delete(context.Background(), cozystack.MarkerName, metav1.DeleteOptions{}) })
	r, err := Rollout(t.Context(), c, opts(sw))
	if err != nil {
		t.Fatal(err)
	}
	if want := switches(c, "agent1", "server1"); r.Counts() != "2 done" || !slices.Equal(sw.Calls(), want) {
		t.Errorf("rollout after bootstrap: %s, switches %v, want 2 done, %v", r.Counts(), sw.Calls(), want)
	}
}
