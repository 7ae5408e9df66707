package rollout

import (
	"context"

	"github.com/nix8s/nix8s/internal/cozystack"
)

// requireCozystack refuses to roll out a Cozystack cluster whose platform is not bootstrapped yet: it has no
// CNI (k3s runs with --flannel-backend=none until Cozystack installs Kube-OVN and Cilium), so no switched node
// would become Ready and the first member would wait out ReadyTimeout cordoned. The error names the
// bootstrap to run (docs/cozystack.md, "Readiness before and after bootstrap").
func (ro *rollout) requireCozystack(ctx context.Context) error {
	if ro.c.Cozystack == nil {
		return nil
	}
	done, err := cozystack.Bootstrapped(ctx, ro.o.Client)
	if err != nil {
		return err
	}
	if !done {
		return cozystack.NotBootstrappedError(ro.c.Name, "rollout")
	}
	return nil
}
