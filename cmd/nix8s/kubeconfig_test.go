package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// k3sYAML is what k3s writes to /etc/rancher/k3s/k3s.yaml (credentials shortened).
const k3sYAML = `apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0EK
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: Q0VSVAo=
    client-key-data: S0VZCg==
`

func testKubeconfig(t *testing.T, e *opsEnv) {
	// Only the second server has a kubeconfig and the first is down: nix8s falls back to the next server.
	e.net.Node("s2").WriteFile(t, "/etc/rancher/k3s/k3s.yaml", k3sYAML, 0o600)
	e.si.Register(t, "t-s1", false)
	defer e.si.Register(t, "t-s1", true)
	out := filepath.Join(e.dir, "t.kubeconfig")
	code, _, stderr := e.run(t, "kubeconfig", "-o", out, "t")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "(from t-s2)") {
		t.Errorf("stderr %s", stderr)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%v %v", fi, err)
	}
	data, _ := os.ReadFile(out)
	var cfg map[string]any
	yaml.Unmarshal(data, &cfg)
	cl := cfg["clusters"].([]any)[0].(map[string]any)
	if cl["name"] != "t" || cl["cluster"].(map[string]any)["server"] != "https://"+e.net.Node("s1").IP+":6443" ||
		cfg["current-context"] != "t" || cfg["users"].([]any)[0].(map[string]any)["name"] != "t" ||
		cfg["contexts"].([]any)[0].(map[string]any)["context"].(map[string]any)["user"] != "t" {
		t.Errorf("kubeconfig:\n%s", data)
	}

	// --merge into the first existing file of KUBECONFIG, keeping the other entries.
	kdir := t.TempDir()
	existing := filepath.Join(kdir, "config")
	other := strings.ReplaceAll(strings.ReplaceAll(k3sYAML, "default", "other"), "127.0.0.1", "10.1.1.1")
	os.WriteFile(existing, []byte(other), 0o600)
	t.Setenv("KUBECONFIG", filepath.Join(kdir, "missing")+":"+existing)
	for range 2 { // merging twice leaves one entry per name
		if code, _, stderr := e.run(t, "kubeconfig", "--merge", "t"); code != 0 {
			t.Fatalf("exit %d\n%s", code, stderr)
		}
	}
	data, _ = os.ReadFile(existing)
	yaml.Unmarshal(data, &cfg)
	var names []string
	for _, c := range cfg["clusters"].([]any) {
		names = append(names, c.(map[string]any)["name"].(string))
	}
	if strings.Join(names, ",") != "other,t" || cfg["current-context"] != "t" || len(cfg["users"].([]any)) != 2 {
		t.Errorf("merged kubeconfig:\n%s", data)
	}
	if _, err := os.Stat(filepath.Join(kdir, "missing")); !os.IsNotExist(err) {
		t.Errorf("merge created the missing KUBECONFIG entry")
	}
}
