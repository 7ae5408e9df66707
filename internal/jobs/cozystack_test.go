package jobs

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/nix8s/nix8s/internal/core"
)

// A cozystack-bootstrap job runs internal/cozystack's Bootstrap (tested against a real API server there) on
// the job's planned cluster. Here: the kind is registered, and its refusals end the job with the reason.
// The API server address is never contacted: both jobs stop before any connection.
func TestCozystackBootstrapJob(t *testing.T) {
	ctx := context.Background()
	url := "https://github.com/cozystack/cozystack/releases/download/v1.6.2/cozystack-operator-generic.yaml"
	crds := "sha256-r411iVK2+doiHSN0w79HJCOofC/s81Xik4YuxH9wiZ8="
	withCozy := core.Cluster{Name: "t", Servers: []string{"s1"},
		Members: map[string]core.Member{"s1": {Name: "s1", HostName: "t-s1", Role: "server", IP: "10.9.2.1"}},
		Cozystack: &core.Cozystack{Version: "v1.6.2", BootstrapTimeout: "45m", Manifests: core.CozystackManifests{
			CRDs: core.Pinned{URL: "https://example.invalid/crds.yaml", Hash: &crds}, Operator: core.Pinned{URL: url}, Placeholder: "REPLACE_ME"}}}
	without := withCozy
	without.Cozystack = nil
	for _, tc := range []struct {
		name string
		c    core.Cluster
		want string
	}{
		{"a cluster without Cozystack", without, `cluster "t" has no Cozystack: set clusters.t.cozystack.enable = true`},
		{"an operator manifest with no pinned hash", withCozy, "no hash is pinned for cozystack-operator-generic.yaml v1.6.2 (" + url + "), so it is not applied: download it and check it, then take its hash with `nix store prefetch-file --json " + url + "`"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newStore(t)
			r := &Runner{Store: st, Planner: plan{c: tc.c}, Worker: "w", Poll: 50 * time.Millisecond,
				Config: Config{APIServer: &rest.Config{Host: "https://127.0.0.1:1"}}}
			start(t, r)
			cl := "t"
			j, err := st.NewJob(ctx, KindCozystackBootstrap, &cl, nil, []byte(`{"timeout": "1m"}`))
			if err != nil {
				t.Fatal(err)
			}
			r.Wake()
			j = waitJob(t, st, j.ID)
			if j.Status != "failed" || j.Error == nil || !strings.Contains(*j.Error, tc.want) {
				t.Fatalf("job %s, error %v, want it failed with %q\n%s", j.Status, j.Error, tc.want, j.Log)
			}
		})
	}
}
