package sshtest

import (
	"context"
	"strings"
	"testing"
)

// TestNodes checks what the other packages' tests rely on: real sshds at their own addresses with their own
// host keys, private /etc, and the NixOS-like PATH.
func TestNodes(t *testing.T) {
	n := Start(t, "a", "b")
	ssh := n.SSH()
	ctx := context.Background()
	n.Node("a").WriteFile(t, "/etc/only-on-a", "hello\n", 0o600)
	out, err := ssh.Run(ctx, n.Host("a"), "cat /etc/only-on-a; uname -n; echo $PATH; echo $NIX8S_TEST_NODE")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 4 || lines[0] != "hello" || lines[1] != "nixos" || !strings.Contains(lines[2], "/run/current-system/sw/bin:"+n.BinDir()) || lines[3] != "a" {
		t.Errorf("node a answered %q", out)
	}
	if _, err := ssh.Run(ctx, n.Host("b"), "test ! -e /etc/only-on-a"); err != nil {
		t.Errorf("node b sees node a's /etc: %v", err)
	}
}
