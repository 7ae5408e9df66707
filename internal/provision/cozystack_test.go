package provision

// ClusterReadiness against a real kube-apiserver and etcd (internal/k8stest) asked with the real kubectl: k3s
// cannot run here, so `k3s kubectl` (kubectl built into k3s) is a two-line stand-in that runs kubectl with the
// test API server's kubeconfig, and the commands run locally instead of over ssh (the ssh path is
// SSHReadiness's own tests'). No kubelet runs: the test registers the node and sets its Ready condition.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/cozystack"
	"github.com/nix8s/nix8s/internal/k8stest"
	"github.com/nix8s/nix8s/internal/remote"
)

// localK3s runs each command locally, with `k3s kubectl` going to the test API server.
type localK3s struct{ dir string }

func (l localK3s) Run(ctx context.Context, _ remote.Host, cmd string) ([]byte, error) {
	c := exec.CommandContext(ctx, "sh", "-c", cmd)
	c.Env = append(os.Environ(), "PATH="+l.dir+":"+os.Getenv("PATH"))
	out, err := c.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		return out, &remote.ExitError{Host: "local", Cmd: cmd, Code: ee.ExitCode(), Stderr: string(ee.Stderr)}
	}
	return out, err
}

func (localK3s) Copy(context.Context, remote.Host, string, string) error { panic("not used") }

func TestClusterReadinessBeforeAndAfterCozystackBootstrap(t *testing.T) {
	if _, err := exec.LookPath("kubectl"); err != nil {
		t.Fatal("kubectl is needed (.ci/install installs it)")
	}
	ctx := context.Background()
	env, err := k8stest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Stop() })
	kc, err := env.Kubeconfig("")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "kubeconfig"), kc, 0o600); err != nil {
		t.Fatal(err)
	}
	shim := "#!/bin/sh\n# k3s stand-in: `k3s kubectl ...` is kubectl.\nshift\nexec kubectl --kubeconfig " + filepath.Join(dir, "kubeconfig") + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(dir, "k3s"), []byte(shim), 0o755); err != nil {
		t.Fatal(err)
	}
	run := localK3s{dir: dir}
	host := remote.Host{Name: "z-s1", Addr: "127.0.0.1"}
	plain := core.Cluster{Name: "z"}
	cozy := core.Cluster{Name: "z", Cozystack: &core.Cozystack{Version: "v1.6.2"}}
	r := ClusterReadiness(cozy, SSHReadiness{Runner: run}, run)
	if ClusterReadiness(cozy, r, run) != r {
		t.Error("ClusterReadiness wraps twice")
	}

	if err := r.NodeReady(ctx, host, "z-a1"); err == nil {
		t.Fatal("a node that is not registered counts as ready")
	}
	if _, err := env.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "z-a1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := k8stest.SetNodeStatus(ctx, env.Client, "z-a1", false, "v1.34.2+k3s1"); err != nil {
		t.Fatal(err)
	}
	if err := r.NodeReady(ctx, host, "z-a1"); err != nil {
		t.Errorf("registered, NotReady, Cozystack not bootstrapped: %v, want ready", err)
	}
	if err := ClusterReadiness(plain, SSHReadiness{Runner: run}, run).NodeReady(ctx, host, "z-a1"); err == nil ||
		!strings.Contains(err.Error(), "node z-a1 is not Ready (Ready=False)") {
		t.Errorf("a cluster without Cozystack: %v, want not Ready", err)
	}

	// Bootstrapped (its marker): Ready again means Ready.
	if _, err := env.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: cozystack.MarkerNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Client.CoreV1().ConfigMaps(cozystack.MarkerNamespace).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: cozystack.MarkerName}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := r.NodeReady(ctx, host, "z-a1"); err == nil || !strings.Contains(err.Error(), "node z-a1 is not Ready (Ready=False)") {
		t.Errorf("registered, NotReady, Cozystack bootstrapped: %v, want not Ready", err)
	}
	if err := k8stest.SetNodeStatus(ctx, env.Client, "z-a1", true, "v1.34.2+k3s1"); err != nil {
		t.Fatal(err)
	}
	if err := r.NodeReady(ctx, host, "z-a1"); err != nil {
		t.Errorf("Ready, Cozystack bootstrapped: %v", err)
	}
}
