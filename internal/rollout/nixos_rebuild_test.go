package rollout

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix8s/nix8s/internal/progress"
	"github.com/nix8s/nix8s/internal/remote"
)

// nixos-rebuild cannot run here (it needs a NixOS target): a stand-in script records the arguments and
// NIX_SSHOPTS it was run with, so the test checks what the real one would be asked.
func TestNixosRebuildRunsSwitchAndRollbackOverTheSystemSSH(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	prog := filepath.Join(dir, "nixos-rebuild")
	script := "#!/bin/sh\necho \"$*|$NIX_SSHOPTS\" >>" + log + "\necho building the system configuration...\n" +
		"case \"$*\" in *fail*) echo 'error: activation failed' >&2; exit 1;; esac\n"
	if err := os.WriteFile(prog, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	n := &NixosRebuild{
		Program: prog, Flake: "/srv/infra",
		SSH:      &remote.SSH{KnownHostsFile: "/etc/nix8s/known_hosts"},
		Progress: progress.NewLines(&out),
	}
	tg := Target{Cluster: "prod", Member: "agent1", HostName: "prod-agent1", Role: "agent",
		Host: remote.Host{Name: "prod-agent1", Addr: "10.0.0.21", User: "deploy", Port: 2222}}
	if err := n.Switch(t.Context(), tg); err != nil {
		t.Fatal(err)
	}
	if err := n.Rollback(t.Context(), tg); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	opts := "-o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=10 -o User=deploy -o Port=2222 -o UserKnownHostsFile=/etc/nix8s/known_hosts"
	want := "switch --flake /srv/infra#prod-agent1 --target-host deploy@10.0.0.21 --use-remote-sudo|" + opts + "\n" +
		"switch --flake /srv/infra#prod-agent1 --rollback --target-host deploy@10.0.0.21 --use-remote-sudo|" + opts + "\n"
	if string(data) != want {
		t.Errorf("calls:\n got %s\nwant %s", data, want)
	}
	if got := out.String(); got != "[prod-agent1] building the system configuration...\n[prod-agent1] building the system configuration...\n" {
		t.Errorf("output: %q", got)
	}

	tg.HostName = "prod-fail"
	err = n.Switch(t.Context(), tg)
	if err == nil || err.Error() != "nixos-rebuild exited with code 1: error: activation failed" {
		t.Errorf("error: %v", err)
	}
	n.Program = "nix8s-test-no-such-nixos-rebuild"
	err = n.Switch(t.Context(), tg)
	if err == nil || err.Error() != "nix8s-test-no-such-nixos-rebuild not found on PATH (nix run nixpkgs#nixos-rebuild, or pass --nixos-rebuild)" {
		t.Errorf("missing program: %v", err)
	}
}
