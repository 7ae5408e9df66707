package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nix8s/nix8s/internal/secrets"
	"github.com/nix8s/nix8s/internal/sshtest"
)

// opsEnv is a cluster "t" of real sshd nodes (internal/sshtest) described by a config file, with the
// nixos-anywhere stand-in on PATH (the real one cannot run here), and the secrets of "t" generated.
type opsEnv struct {
	net     *sshtest.Net
	si      *sshtest.StandIns
	dir     string // working directory: config.yaml, secrets/
	config  string
	secrets string
}

func newOpsEnv(t *testing.T) *opsEnv {
	requireNix(t)
	n := sshtest.Start(t, "s1", "s2", "a1", "a2")
	si := n.StandIns(t)
	t.Setenv("PATH", si.LocalBin+":"+os.Getenv("PATH"))
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	t.Setenv("NIX8S_CONFIG", "")
	e := &opsEnv{net: n, si: si, dir: t.TempDir()}
	e.config = filepath.Join(e.dir, "config.yaml")
	e.secrets = filepath.Join(e.dir, "secrets")
	cfg := "nodes:\n  std:\n    install:\n      disk: /dev/sda\nclusters:\n  t:\n    members:\n"
	for _, m := range []struct{ name, role string }{{"s1", "server"}, {"s2", "server"}, {"a1", "agent"}, {"a2", "agent"}} {
		cfg += "      " + m.name + ": { node: std, role: " + m.role + ", ip: " + n.Node(m.name).IP + " }\n"
	}
	cfg += "provisioning:\n  nixos-anywhere:\n    ssh:\n      user: root\n      keyFile: " + n.KeyFile + "\n"
	if err := os.WriteFile(e.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// run runs nix8s in-process with the flags that reach the test nodes.
func (e *opsEnv) run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	full := append([]string{args[0], "--config", e.config}, args[1:]...)
	switch args[0] {
	case "install", "status", "kubeconfig", "ssh":
		full = append([]string{args[0], "--config", e.config, "--known-hosts", e.net.KnownHostsFile, "--ssh-config", "none"}, args[1:]...)
	}
	if args[0] == "install" {
		full = append(full[:1], append([]string{"--secrets", e.secrets, "--wait-timeout", "5s"}, full[1:]...)...)
	}
	code = run(context.Background(), full, &out, &errb, os.Getenv)
	return code, out.String(), errb.String()
}

func (e *opsEnv) genSecrets(t *testing.T) {
	t.Helper()
	if code, _, stderr := e.run(t, "gen-secrets", "--dir", e.secrets, "t"); code != 0 {
		t.Fatalf("gen-secrets: exit %d\n%s", code, stderr)
	}
}

func TestInstallCommand(t *testing.T) {
	e := newOpsEnv(t)
	e.genSecrets(t)
	// The first server's k3s makes the agents' join tokens (a stand-in over the StandIns' k3s: k3s cannot
	// run here); it takes an agent as a Ready node once the agent holds a live token of its.
	k3s := e.net.K3sTokens(t, e.net.Node("s1"))
	for _, a := range []string{"a1", "a2"} {
		k3s.JoinFrom(t, "t-"+a, e.net.Node(a), "/var/lib/nix8s/secrets/k3s-agent-token")
	}

	code, stdout, stderr := e.run(t, "install", "--dry-run", "t", "--all")
	if code != 0 || !strings.Contains(stdout, "wave 3: t-a1 (agent)\n") || len(e.si.Log(t)) != 0 {
		t.Fatalf("dry run: exit %d\n%s\n%s", code, stdout, stderr)
	}

	code, stdout, stderr = e.run(t, "install", "t", "--all", "--parallel", "2", "--flake", "github:example/infra")
	if code != 0 {
		t.Fatalf("install: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"t-s1    server  1     done", "t-s2    server  2     done", "t-a1    agent   3     done", "t-a2    agent   3     done"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("report lacks %q:\n%s", want, stdout)
		}
	}
	if !strings.Contains(stderr, "nix8s: t-s1: waiting for the API to answer /readyz\n") || !strings.Contains(stderr, "[t-a2] installing t-a2\n") {
		t.Errorf("progress on stderr:\n%s", stderr)
	}
	if args := e.si.Log(t)[1]; !strings.HasPrefix(args, "args t-s1 --flake github:example/infra#t-s1 --extra-files ") {
		t.Errorf("nixos-anywhere got %q", args)
	}
	agentFiles := e.net.Node("a1").Exec(t, "find /var/lib/nix8s -type f | sort")
	if agentFiles != "/var/lib/nix8s/secrets/k3s-agent-token\n" {
		t.Errorf("files on agent a1: %q", agentFiles)
	}
	// The agents hold join tokens of their own, deleted on s1 once they were Ready; never the agent token.
	tokens, err := secrets.Load(context.Background(), e.secrets, "t", "")
	if err != nil {
		t.Fatal(err)
	}
	made := k3s.Tokens(t)
	for _, a := range []string{"a1", "a2"} {
		got := e.net.Node(a).Exec(t, "cat /var/lib/nix8s/secrets/k3s-agent-token")
		_, join, _ := strings.Cut(got, "::")
		if strings.Contains(got, tokens.AgentToken) || strings.Contains(got, tokens.Token) || !slices.Contains(made, join) {
			t.Errorf("%s holds %q, want a join token made on s1 (%q)", a, got, made)
		}
		if id, _, _ := strings.Cut(join, "."); !slices.Contains(k3s.Deleted(t), id) {
			t.Errorf("%s's join token was not deleted: %q", a, k3s.Calls(t))
		}
	}
	if len(made) != 2 || !strings.Contains(stderr, "nix8s: t-a1: a Ready node; deleted its join token ") {
		t.Errorf("join tokens made %q; stderr:\n%s", made, stderr)
	}

	t.Run("a second install skips everything, --json", func(t *testing.T) {
		code, stdout, stderr := e.run(t, "install", "--json", "t", "--all")
		var r struct {
			Members []struct{ Name, Status string }
		}
		if err := json.Unmarshal([]byte(stdout), &r); code != 0 || err != nil || len(r.Members) != 4 {
			t.Fatalf("exit %d, %v\n%s\n%s", code, err, stdout, stderr)
		}
		for _, m := range r.Members {
			if m.Status != "skipped" {
				t.Errorf("%s: %s", m.Name, m.Status)
			}
		}
	})
	t.Run("status", func(t *testing.T) {
		code, stdout, stderr := e.run(t, "status", "--json", "t")
		var r struct {
			Nodes   string
			Members []struct {
				HostName, CurrentSystem, Ready, K3sVersion string
				Reachable                                  bool
			}
		}
		if err := json.Unmarshal([]byte(stdout), &r); code != 0 || err != nil {
			t.Fatalf("exit %d, %v\n%s\n%s", code, err, stdout, stderr)
		}
		if r.Nodes != "from t-s1" || len(r.Members) != 4 {
			t.Errorf("status %+v", r)
		}
		for _, m := range r.Members {
			if !m.Reachable || m.Ready != "True" || m.K3sVersion != "v1.31.0+k3s1" || !strings.HasSuffix(m.CurrentSystem, "-nixos-system-"+m.HostName) {
				t.Errorf("member %+v", m)
			}
		}
		code, stdout, _ = e.run(t, "status", "t")
		if code != 0 || !strings.Contains(stdout, "t-a2    agent   "+e.net.Node("a2").IP+"  yes        nixos-system-t-a2  True   v1.31.0+k3s1\n") {
			t.Errorf("status table:\n%s", stdout)
		}
	})
	t.Run("ssh", func(t *testing.T) {
		code, stdout, stderr := e.run(t, "ssh", "t", "a1", "--", "uname", "-n")
		if code != 0 || stdout != "t-a1\n" {
			t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
		code, _, _ = e.run(t, "ssh", "t", "a1", "--", "sh", "-c", "exit 7")
		if code != 7 {
			t.Errorf("remote exit 7 became %d", code)
		}
	})
	t.Run("kubeconfig", func(t *testing.T) {
		testKubeconfig(t, e)
	})
	t.Run("an unreachable member", func(t *testing.T) {
		e.net.Node("a2").Stop()
		code, stdout, _ := e.run(t, "status", "--json", "t")
		if code != 0 || !strings.Contains(stdout, `"error": "t-a2 (`+e.net.Node("a2").IP+`) is unreachable over ssh: ssh: connect to host `+e.net.Node("a2").IP+` port 22: Connection refused"`) {
			t.Errorf("status:\n%s", stdout)
		}
		code, _, stderr := e.run(t, "install", "--reinstall", "t", "a2")
		want := `nix8s: error: install of cluster "t" stopped: probing t-a2: t-a2 (` + e.net.Node("a2").IP + `) is unreachable over ssh: ssh: connect to host ` + e.net.Node("a2").IP + " port 22: Connection refused\n"
		if code != 1 || !strings.HasSuffix(stderr, want) {
			t.Errorf("exit %d\n%s\nwant suffix\n%s", code, stderr, want)
		}
	})
}

// TestOpsBadInput asserts the message of each bad input to install, ssh, status, kubeconfig and gen-secrets.
func TestOpsBadInput(t *testing.T) {
	e := newOpsEnv(t)
	bad := filepath.Join(e.dir, "bad.yaml")
	os.WriteFile(bad, []byte("clusters: [\n"), 0o644)
	tests := []struct {
		name string
		args []string
		code int
		want string // stderr suffix
	}{
		{"unknown cluster", []string{"install", "prod", "--all"}, 1,
			`nix8s: error: ` + e.config + `: no cluster named "prod"; clusters: "t"` + "\n"},
		{"unknown member", []string{"install", "t", "s1", "s9"}, 1,
			`nix8s: error: cluster "t" has no member "s9"; members: "a1", "a2", "s1", "s2"` + "\n"},
		{"missing secrets", []string{"install", "t", "--all"}, 1,
			"nix8s: error: " + e.secrets + "/t.yaml: no such file: cluster \"t\" has no secrets\n" +
				"nix8s: hint: run 'nix8s gen-secrets t' first, or --no-secrets when the token files reach the nodes another way\n"},
		{"neither members nor --all", []string{"install", "t"}, 2,
			"nix8s: error: install: name the members to install, or pass --all\nnix8s: hint: run 'nix8s help install' for usage\n"},
		{"members and --all", []string{"install", "t", "s1", "--all"}, 2,
			"nix8s: error: install: --all and member names exclude each other\nnix8s: hint: run 'nix8s help install' for usage\n"},
		{"no cluster", []string{"install"}, 2,
			"nix8s: error: install: missing CLUSTER\nnix8s: hint: run 'nix8s help install' for usage\n"},
		{"parallel 0", []string{"install", "--parallel", "0", "t", "--all"}, 2,
			"nix8s: error: install: --parallel must be at least 1, got 0\nnix8s: hint: run 'nix8s help install' for usage\n"},
		{"malformed config", []string{"status", "--config", bad, "t"}, 1,
			"nix8s: error: " + bad + ":2: invalid YAML: did not find expected node content\n"},
		{"ssh to an unknown member", []string{"ssh", "t", "db1"}, 1,
			`nix8s: error: cluster "t" has no member "db1"; members: "a1", "a2", "s1", "s2"` + "\n"},
		{"ssh without member", []string{"ssh", "t"}, 2,
			"nix8s: error: ssh: want CLUSTER MEMBER\nnix8s: hint: run 'nix8s help ssh' for usage\n"},
		{"kubeconfig -o and --merge", []string{"kubeconfig", "-o", "x", "--merge", "t"}, 2,
			"nix8s: error: kubeconfig: -o and --merge exclude each other\nnix8s: hint: run 'nix8s help kubeconfig' for usage\n"},
		{"gen-secrets for an unknown cluster", []string{"gen-secrets", "--dir", e.secrets, "prod"}, 1,
			`nix8s: error: ` + e.config + `: no cluster named "prod"; clusters: "t"` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := e.run(t, tt.args...)
			if code != tt.code || !strings.HasSuffix(stderr, tt.want) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and stderr ending in:\n%s", code, stderr, tt.code, tt.want)
			}
		})
	}
	t.Run("no config", func(t *testing.T) {
		var out, errb bytes.Buffer
		code := run(context.Background(), []string{"status", "t"}, &out, &errb, func(string) string { return "" })
		want := "nix8s: error: no config given\nnix8s: hint: pass --config FILE (the cluster config as YAML or JSON) or set NIX8S_CONFIG\n"
		if code != 1 || errb.String() != want {
			t.Errorf("exit %d, stderr:\n%s", code, errb.String())
		}
	})
	t.Run("kubeconfig before any server is installed", func(t *testing.T) {
		code, _, stderr := e.run(t, "kubeconfig", "t")
		if code != 1 || !strings.Contains(stderr, `nix8s: error: no server of cluster "t" gave its kubeconfig:`+"\nt-s1: not ready: t-s1: \"k3s kubectl get --raw /readyz\" exited with code 127: sh: 1: k3s: not found\nt-s2: not ready:") {
			t.Errorf("exit %d, stderr:\n%s", code, stderr)
		}
	})
}
