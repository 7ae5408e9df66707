package kubeconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const k3s = `apiVersion: v1
clusters:
- cluster: {certificate-authority-data: Q0EK, server: "https://127.0.0.1:6443"}
  name: default
contexts:
- context: {cluster: default, user: default}
  name: default
current-context: default
kind: Config
users:
- name: default
  user: {client-certificate-data: Q0VSVAo=, client-key-data: S0VZCg==}
`

func TestRewrite(t *testing.T) {
	out, err := Rewrite([]byte(k3s), "prod", "https://192.168.1.100:6443")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"server: https://192.168.1.100:6443", "current-context: prod", "cluster: prod\n", "user: prod\n", "certificate-authority-data: Q0EK", "client-key-data: S0VZCg=="} {
		if !strings.Contains(string(out), want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "default") || strings.Contains(string(out), "127.0.0.1") {
		t.Errorf("leftovers:\n%s", out)
	}
}

func TestRewriteBadInput(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"not yaml", "clusters: [", "not a kubeconfig: yaml: line 1: did not find expected node content"},
		{"two clusters", "clusters: [{name: a}, {name: b}]", "want exactly one entry in clusters, found 2"},
		{"no users", "clusters: [{name: a, cluster: {}}]\ncontexts: [{name: a, context: {}}]", "want exactly one entry in users, found 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Rewrite([]byte(tt.in), "p", "https://x:6443")
			if err == nil || err.Error() != tt.want {
				t.Errorf("error %v, want %s", err, tt.want)
			}
		})
	}
}

func TestMergeKeepsOthers(t *testing.T) {
	prod, _ := Rewrite([]byte(k3s), "prod", "https://10.0.0.1:6443")
	dev, _ := Rewrite([]byte(k3s), "dev", "https://10.0.0.2:6443")
	path := filepath.Join(t.TempDir(), "kube", "config")
	for _, add := range [][]byte{dev, prod, prod} {
		if err := MergeInto(path, add); err != nil {
			t.Fatal(err)
		}
	}
	data, _ := os.ReadFile(path)
	s := string(data)
	if strings.Count(s, "name: prod") != 3 || strings.Count(s, "name: dev") != 3 || !strings.Contains(s, "current-context: prod") {
		t.Errorf("merged:\n%s", s)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %o", fi.Mode().Perm())
	}
	if err := MergeInto(filepath.Join(t.TempDir(), "x"), []byte("k: [")); err == nil {
		t.Errorf("merging garbage worked")
	}
	os.WriteFile(path, []byte("clusters: [\n"), 0o600)
	if err := MergeInto(path, prod); err == nil || err.Error() != path+": not a kubeconfig: yaml: line 1: did not find expected node content" {
		t.Errorf("merging into a broken file: %v", err)
	}
}

func TestDefaultPath(t *testing.T) {
	dir := t.TempDir()
	exists := filepath.Join(dir, "exists")
	os.WriteFile(exists, nil, 0o600)
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"home", map[string]string{"HOME": "/h"}, "/h/.kube/config"},
		{"first existing of KUBECONFIG", map[string]string{"KUBECONFIG": dir + "/a:" + exists + ":" + dir + "/b"}, exists},
		{"else the last", map[string]string{"KUBECONFIG": dir + "/a:" + dir + "/b"}, dir + "/b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DefaultPath(func(k string) string { return tt.env[k] })
			if err != nil || got != tt.want {
				t.Errorf("%s, %v; want %s", got, err, tt.want)
			}
		})
	}
}
