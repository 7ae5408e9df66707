package tests

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The settings `make test` puts into NIX_CONFIG (Makefile, NIX_TEST_CONFIG).
const (
	absentGroup  = "nix8s-test-absent-group"
	noiseSetting = "nix8s-test-stderr-noise"
)

// TestNixWarnsOnStderrUnderMakeTest checks the reproduction every test runs under with `make test`: Nix prints
// a fresh machine's warnings on stderr, and the data on stdout stays exactly the value. Without it a test that
// parses combined output passes on a machine with a nixbld group and fails on a fresh one.
func TestNixWarnsOnStderrUnderMakeTest(t *testing.T) {
	if cfg := os.Getenv("NIX_CONFIG"); !strings.Contains(cfg, absentGroup) || !strings.Contains(cfg, noiseSetting) {
		t.Skip("NIX_CONFIG lacks the fresh-machine settings: make test sets them (Makefile, NIX_TEST_CONFIG)")
	}
	if _, err := exec.LookPath("nix-instantiate"); err != nil {
		t.Fatalf("nix-instantiate not found: install Nix (Debian: apt-get install nix-bin)")
	}
	noise := "warning: unknown setting '" + noiseSetting + "'"
	group := "warning: the group '" + absentGroup + "' specified in 'build-users-group' does not exist"
	// Nix checks the group when it opens the local store as root (a daemon client or another user never does),
	// which is how the CI machine runs.
	local := []string{noise}
	if os.Geteuid() == 0 {
		local = append(local, group)
	}
	for _, c := range []struct {
		name string
		argv []string
		want []string
	}{
		{"nix-instantiate on the local store, as deploy/ evaluates the NixOS module",
			[]string{"nix-instantiate", "--eval", "--strict", "--json", "--readonly-mode", "--expr", `{ a = [ 1 "x" ]; }`}, local},
		{"nix-instantiate on the dummy store, as the core runs",
			[]string{"nix-instantiate", "--eval", "--strict", "--json", "--store", "dummy://", "--expr", `{ a = [ 1 "x" ]; }`}, []string{noise}},
		{"nix eval, as nix8s status evaluates a toplevel",
			[]string{"nix", "--extra-experimental-features", "nix-command", "eval", "--json", "--expr", `{ a = [ 1 "x" ]; }`}, local},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(c.argv[0], c.argv[1:]...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("%v\n%s", err, stderr.Bytes())
			}
			if got := strings.TrimSpace(stdout.String()); got != `{"a":[1,"x"]}` {
				t.Errorf("stdout %q, want only the value", stdout.String())
			}
			for _, w := range c.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.Bytes())
				}
			}
		})
	}
}
