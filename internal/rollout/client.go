package rollout

import (
	"errors"
	"fmt"
	"io/fs"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ClientOptions say how to reach a cluster's API server.
type ClientOptions struct {
	// Kubeconfig is the kubeconfig file; empty uses $KUBECONFIG, else ~/.kube/config.
	Kubeconfig string
	// Context is the kubeconfig context; empty picks the context named after the cluster (what `nix8s
	// kubeconfig` writes), else the current context.
	Context string
	// Timeout bounds each API request; default 30s.
	Timeout time.Duration
}

// NewClient builds a client for cluster from a kubeconfig. It returns the API server's address too, for
// messages.
func NewClient(cluster string, o ClientOptions) (kubernetes.Interface, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if o.Kubeconfig != "" {
		rules.ExplicitPath = o.Kubeconfig
	}
	raw, err := rules.Load()
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, "", fmt.Errorf("kubeconfig %s does not exist; 'nix8s kubeconfig --merge %s' fetches one", o.Kubeconfig, cluster)
		}
		return nil, "", fmt.Errorf("reading the kubeconfig: %w", err)
	}
	ctxName := o.Context
	if ctxName == "" {
		if _, ok := raw.Contexts[cluster]; ok {
			ctxName = cluster
		}
	}
	if ctxName != "" {
		if _, ok := raw.Contexts[ctxName]; !ok {
			return nil, "", fmt.Errorf("the kubeconfig has no context %q", ctxName)
		}
	}
	cfg, err := clientcmd.NewNonInteractiveClientConfig(*raw, ctxName, &clientcmd.ConfigOverrides{}, rules).ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, "", fmt.Errorf("no kubeconfig found; 'nix8s kubeconfig --merge %s' fetches one, or pass --kubeconfig FILE", cluster)
		}
		return nil, "", fmt.Errorf("reading the kubeconfig: %w", err)
	}
	return ClientFor(cfg, o.Timeout)
}

// ClientFor builds a client from a REST config, with a request timeout (default 30s) and a rate limit that
// suits polling a handful of nodes and pods.
func ClientFor(cfg *rest.Config, timeout time.Duration) (kubernetes.Interface, string, error) {
	cfg = rest.CopyConfig(cfg)
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	cfg.Timeout = timeout
	cfg.QPS, cfg.Burst = 50, 100
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, "", err
	}
	return cs, cfg.Host, nil
}
