package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix8s/nix8s/internal/k8stest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// nix8s rollout --all on the Lima cluster that nix8s lima up started on the rig of TestLimaUpOnSSHNodes:
// each member is switched through its Lima endpoint, 127.0.0.1 and the port limactl forwards to its sshd,
// with the host key up pinned for [127.0.0.1]:<port>. nixos-rebuild cannot run here (no NixOS target, no
// nixpkgs): the stand-in records its arguments and NIX_SSHOPTS and runs `ssh $NIX_SSHOPTS <target-host>
// uname -n` as the real one runs ssh to activate, so the options must reach the right VM with the pinned
// key. The Kubernetes API that rollout cordons, drains and waits Ready on is a real kube-apiserver
// (internal/k8stest) with the three nodes registered; the rig's k3s stand-in serves no node objects.
func TestLimaRolloutOnSSHNodes(t *testing.T) {
	e := newLimaEnv(t)
	images := []string{"--image", "server1=/images/s1.qcow2", "--image", "server2=/images/s2.qcow2", "--image", "agent=/images/a.qcow2"}
	if code, stdout, stderr := e.run(t, append(append([]string{"lima", "up", "--wait-timeout", "30s"}, images...), "dev")...); code != 0 {
		t.Fatalf("up: exit %d\n%s\n%s", code, stdout, stderr)
	}

	k8s, err := k8stest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k8s.Stop() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); k8stest.RunKubelet(ctx, k8s.Client) }()
	t.Cleanup(func() { cancel(); <-done })
	for _, n := range []string{"dev-server1", "dev-server2", "dev-agent"} {
		if err := k8stest.AddNode(ctx, k8s.Client, n, "v1.34.2+k3s1"); err != nil {
			t.Fatal(err)
		}
	}
	kc, err := k8s.Kubeconfig("dev")
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(e.dir, "api.kubeconfig")
	os.WriteFile(kubeconfig, kc, 0o600)

	log := filepath.Join(e.dir, "nixos-rebuild.log")
	rebuild := filepath.Join(e.dir, "nixos-rebuild")
	script := `#!/bin/sh
target=
prev=
for a in "$@"; do
  [ "$prev" = --target-host ] && target=$a
  prev=$a
done
host=$(ssh $NIX_SSHOPTS "$target" uname -n) || exit 1
printf 'args=%s\nopts=%s\nhost=%s\n' "$*" "$NIX_SSHOPTS" "$host" >>` + log + `
`
	if err := os.WriteFile(rebuild, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}

	code, stdout, stderr := e.run(t, "rollout", "--known-hosts", e.known, "--ssh-config", "none", "--kubeconfig", kubeconfig,
		"--nixos-rebuild", rebuild, "--flake", "/flake", "--ready-timeout", "30s", "--drain-timeout", "30s", "dev", "--all")
	if code != 0 {
		t.Fatalf("rollout: exit %d\n%s\n%s", code, stdout, stderr)
	}
	b, _ := os.ReadFile(log)
	calls := strings.Split(strings.TrimSpace(string(b)), "\nargs=")
	if len(calls) != 3 {
		t.Fatalf("nixos-rebuild ran %d times, want 3:\n%s\n%s", len(calls), b, stderr)
	}
	for _, name := range []string{"dev-server1", "dev-server2", "dev-agent"} {
		vm := e.vms.VM("nix8s-" + name)
		var call string
		for _, c := range calls {
			if strings.Contains(c, "--flake /flake#"+name+" ") {
				call = c
			}
		}
		for _, want := range []string{
			"switch --flake /flake#" + name + " --target-host root@127.0.0.1\n",
			fmt.Sprintf("-o Port=%d ", vm.SSHPort),
			"-o StrictHostKeyChecking=yes",
			"-o UserKnownHostsFile=" + e.known + " ",
			"-i " + filepath.Join(os.Getenv("LIMA_HOME"), "_config", "user") + "\n", // Lima's key, which the VMs accept
			"host=" + name,
		} {
			if !strings.Contains(call, want) {
				t.Errorf("%s: nixos-rebuild call lacks %q:\n%s", name, want, call)
			}
		}
	}
	// Agents first, then the other server, the first server last; every node uncordoned again.
	for _, name := range []string{"dev-server1", "dev-server2", "dev-agent"} {
		n, err := k8s.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil || n.Spec.Unschedulable {
			t.Errorf("%s: %v, unschedulable %v after the rollout", name, err, n != nil && n.Spec.Unschedulable)
		}
	}
	inOrder(t, stdout, "dev-agent", "done", "dev-server2", "done", "dev-server1", "done")
}
