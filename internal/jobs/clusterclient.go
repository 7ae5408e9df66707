package jobs

import (
	"context"
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/kubeconfig"
	"github.com/nix8s/nix8s/internal/provision"
	"github.com/nix8s/nix8s/internal/rollout"
)

// ClusterClient reaches cluster cl's API server as its administrator: through c.APIServer when set, else with
// the admin kubeconfig fetched over ssh from the first ready server (kubeconfig.Fetch, as nix8s kubeconfig
// does). host is the API server's address and from says where the
// credentials came from, for the log; the credentials themselves are never returned or logged.
func (c Config) ClusterClient(ctx context.Context, cl core.Cluster) (client kubernetes.Interface, host, from string, err error) {
	rc, from := c.APIServer, "the daemon's configuration"
	if rc == nil {
		ssh := c.SSH()
		var data []byte
		if data, from, err = kubeconfig.Fetch(ctx, ssh, provision.SSHReadiness{Runner: ssh}, cl); err != nil {
			return nil, "", "", err
		}
		if rc, err = clientcmd.RESTConfigFromKubeConfig(data); err != nil {
			return nil, "", "", fmt.Errorf("the kubeconfig of %s: %w", from, err)
		}
	}
	client, host, err = rollout.ClientFor(rc, 0)
	if err != nil {
		return nil, "", "", err
	}
	return client, host, from, nil
}
