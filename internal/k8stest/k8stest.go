// Package k8stest runs a real Kubernetes API server (kube-apiserver + etcd, started by controller-runtime's
// envtest) for tests, and plays the parts of a cluster that do not run there: no kubelet and no controllers
// run, so tests register nodes and set their Ready status, mark pods Running, force-delete terminating pods
// the way a kubelet would, and set PodDisruptionBudget status the way the disruption controller would.
//
// The binaries come from .ci/tools-k8s.sh (built from the Go module proxy, versions pinned in
// test/k8sbin/go.mod) or from $KUBEBUILDER_ASSETS.
package k8stest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Env is a running API server.
type Env struct {
	// Config reaches the API server as an administrator.
	Config *rest.Config
	// Client is a clientset for Config.
	Client kubernetes.Interface
	env    *envtest.Environment
}

// AssetsDir is the directory holding kube-apiserver and etcd: $KUBEBUILDER_ASSETS, else the cache that
// .ci/tools-k8s.sh fills ($NIX8S_K8S_BIN_DIR or ~/.cache/nix8s/k8s-bin, keyed by the versions in
// test/k8sbin/go.mod). A missing binary is an error naming the fix.
func AssetsDir() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		k8s, etcd, err := pinnedVersions()
		if err != nil {
			return "", err
		}
		base := os.Getenv("NIX8S_K8S_BIN_DIR")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", err
			}
			base = filepath.Join(home, ".cache", "nix8s", "k8s-bin")
		}
		dir = filepath.Join(base, "kube-apiserver-"+k8s+"-etcd-"+etcd)
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if fi, err := os.Stat(filepath.Join(dir, bin)); err != nil || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("no %s in %s: build kube-apiserver and etcd with .ci/tools-k8s.sh (cold: 5-11 min, ~2.4 GB RAM), or point KUBEBUILDER_ASSETS at a directory holding both", bin, dir)
		}
	}
	return dir, nil
}

// pinnedVersions reads the kube-apiserver and etcd versions from test/k8sbin/go.mod, found by walking up
// from the working directory (a test's is its package directory).
func pinnedVersions() (k8s, etcd string, err error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		f, err := os.Open(filepath.Join(dir, "test", "k8sbin", "go.mod"))
		if err == nil {
			defer f.Close()
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				fields := strings.Fields(sc.Text())
				if len(fields) >= 2 && fields[0] == "require" {
					fields = fields[1:]
				}
				if len(fields) < 2 {
					continue
				}
				switch fields[0] {
				case "k8s.io/kubernetes":
					k8s = fields[1]
				case "go.etcd.io/etcd/server/v3":
					etcd = fields[1]
				}
			}
			if k8s == "" || etcd == "" {
				return "", "", fmt.Errorf("%s pins no k8s.io/kubernetes or go.etcd.io/etcd/server/v3", f.Name())
			}
			return k8s, etcd, sc.Err()
		}
		if filepath.Dir(dir) == dir {
			return "", "", errors.New("no test/k8sbin/go.mod above the working directory; set KUBEBUILDER_ASSETS")
		}
	}
}

// Start starts etcd and kube-apiserver (a few seconds). Call it once per test binary, in TestMain.
func Start() (*Env, error) {
	dir, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	te := &envtest.Environment{
		BinaryAssetsDirectory:    dir,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	cfg, err := te.Start()
	if err != nil {
		return nil, fmt.Errorf("starting kube-apiserver and etcd from %s: %w", dir, err)
	}
	// Tests play kubelets and controllers through this client: no client-side rate limit.
	cfg.QPS = -1
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		te.Stop()
		return nil, err
	}
	return &Env{Config: cfg, Client: cs, env: te}, nil
}

// Stop stops the API server and etcd and removes their data.
func (e *Env) Stop() error { return e.env.Stop() }

// Kubeconfig is an administrator's kubeconfig for the API server, its context named contextName.
func (e *Env) Kubeconfig(contextName string) ([]byte, error) {
	u, err := e.env.AddUser(envtest.User{Name: "nix8s-test-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, err
	}
	kc, err := u.KubeConfig()
	if err != nil {
		return nil, err
	}
	if contextName == "" {
		return kc, nil
	}
	cfg, err := clientcmd.Load(kc)
	if err != nil {
		return nil, err
	}
	ctx, ok := cfg.Contexts[cfg.CurrentContext]
	if !ok {
		return nil, fmt.Errorf("envtest's kubeconfig has no context %q", cfg.CurrentContext)
	}
	delete(cfg.Contexts, cfg.CurrentContext)
	cfg.Contexts[contextName] = ctx
	cfg.CurrentContext = contextName
	return clientcmd.Write(*cfg)
}
