package rollout

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestNewClientPicksTheContextNamedAfterTheCluster(t *testing.T) {
	kc, err := env.Kubeconfig("kc")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(file, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	c, host, err := NewClient("kc", ClientOptions{Kubeconfig: file})
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSuffix(host, "/") != strings.TrimSuffix(env.Config.Host, "/") {
		t.Errorf("host %s, want %s", host, env.Config.Host)
	}
	if _, err := c.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{}); err != nil {
		t.Errorf("listing nodes through the kubeconfig: %v", err)
	}

	missing := filepath.Join(t.TempDir(), "nope")
	for _, tc := range []struct {
		name string
		o    ClientOptions
		err  string
	}{
		{name: "missing file", o: ClientOptions{Kubeconfig: missing},
			err: "kubeconfig " + missing + " does not exist; 'nix8s kubeconfig --merge kc' fetches one"},
		{name: "unknown context", o: ClientOptions{Kubeconfig: file, Context: "prod"},
			err: `the kubeconfig has no context "prod"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := NewClient("kc", tc.o)
			if err == nil || err.Error() != tc.err {
				t.Errorf("error:\n got %v\nwant %s", err, tc.err)
			}
		})
	}
}
