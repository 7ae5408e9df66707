package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"nix8s": func() { os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.Getenv)) },
	})
}

// TestScript runs the CLI scripts in testdata/*.txtar against the real nix-instantiate and the embedded core.
func TestScript(t *testing.T) {
	requireNix(t)
	testscript.Run(t, testscript.Params{
		Dir: "testdata",
		Setup: func(env *testscript.Env) error {
			// testscript sets HOME=/no-home; keep the materialised core inside the sandbox.
			env.Setenv("XDG_CACHE_HOME", filepath.Join(env.WorkDir, ".cache"))
			return nil
		},
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
	})
}

// TestMissingNix runs in-process because the script tests need PATH to find nix8s itself.
func TestMissingNix(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfg, []byte("nodes: {}\n"), 0o644)
	t.Setenv("PATH", dir)
	t.Setenv("XDG_CACHE_HOME", dir)
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"validate", cfg}, &stdout, &stderr, func(string) string { return "" })
	want := "nix8s: error: nix-instantiate not found on PATH; nix8s evaluates its core with Nix\n" +
		"nix8s: hint: install Nix: apt-get install nix-bin (Debian/Ubuntu), or see https://nixos.org/download\n"
	if code != 1 || stderr.String() != want || stdout.Len() != 0 {
		t.Errorf("exit %d\nstderr:\n%s\nwant:\n%s", code, stderr.String(), want)
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		code       int
		wantStderr string
	}{
		{"no command", nil, 2, "Usage:\n  nix8s"},
		{"unknown command", []string{"frobnicate"}, 2, "nix8s: error: unknown command \"frobnicate\"\nnix8s: hint: run 'nix8s help' for usage\n"},
		{"missing file", []string{"validate"}, 1, "nix8s: error: no config given\nnix8s: hint: pass --config FILE (the cluster config as YAML or JSON) or set NIX8S_CONFIG\n"},
		{"too many files", []string{"plan", "a", "b"}, 2, "nix8s: error: plan takes one config, got 2 arguments\nnix8s: hint: run 'nix8s help plan' for usage\n"},
		{"unknown flag", []string{"plan", "--yaml", "a"}, 2, "nix8s: error: flag provided but not defined: -yaml\n"},
		{"schema takes no file", []string{"schema", "x"}, 2, "nix8s: error: schema takes 0 arguments, got 1\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, &stdout, &stderr, func(string) string { return "" })
			if code != tt.code || !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and stderr containing:\n%s", code, stderr.String(), tt.code, tt.wantStderr)
			}
		})
	}
}

func TestParseInterspersed(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantPos []string
		json    bool
	}{
		{"flag first", []string{"--json", "f"}, []string{"f"}, true},
		{"flag last", []string{"f", "--json"}, []string{"f"}, true},
		{"no flag", []string{"f"}, []string{"f"}, false},
		{"double dash ends flags", []string{"--", "--json"}, []string{"--json"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFlagSet("x")
			j := fs.Bool("json", false, "")
			pos, err := parseInterspersed(fs, tt.args)
			if err != nil || strings.Join(pos, " ") != strings.Join(tt.wantPos, " ") || *j != tt.json {
				t.Errorf("parseInterspersed(%q) = %q, json=%v, %v", tt.args, pos, *j, err)
			}
		})
	}
}

// requireNix fails on CI (CI=true) when nix-instantiate is missing, and skips elsewhere.
func requireNix(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("nix-instantiate")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("nix-instantiate is not on PATH, and CI=true requires it; install it with: apt-get install nix-bin")
		}
		t.Skip("nix-instantiate is not on PATH (apt-get install nix-bin); skipping")
	}
	return p
}
