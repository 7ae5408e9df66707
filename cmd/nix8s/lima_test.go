package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// nix8s lima against the stand-in limactl of internal/lima (real VMs booting NixOS images cannot run here):
// up creates and starts the first server from its instance file and then waits for it to answer over ssh with
// the pinned key, which no stand-in VM does; status and down act on what the stand-in holds.
func TestLimaCommand(t *testing.T) {
	requireNix(t)
	dir := t.TempDir()
	cfg, err := os.ReadFile("../../examples/lima/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "cluster.yaml")
	os.WriteFile(file, cfg, 0o644)
	state := filepath.Join(dir, "standin")
	t.Setenv("LIMA_STANDIN", state)
	t.Setenv("LIMA_HOME", filepath.Join(dir, "lima"))
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	limactl, _ := filepath.Abs("../../internal/lima/testdata/limactl")
	nix8s := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), append(args[:1:1], append([]string{"--config", file, "--limactl", limactl,
			"--state-dir", filepath.Join(dir, "instances"), "--known-hosts", filepath.Join(dir, "known_hosts")}, args[1:]...)...),
			&stdout, &stderr, os.Getenv)
		return code, stdout.String(), stderr.String()
	}

	code, _, stderr := nix8s("lima", "status", "prod")
	if code != 1 || !strings.Contains(stderr, `clusters: "prod" is not a cluster of the config; known clusters: "dev"`) {
		t.Errorf("status of an unknown cluster: exit %d\n%s", code, stderr)
	}
	code, _, stderr = nix8s("lima", "start", "dev")
	if code != 2 || !strings.Contains(stderr, "lima takes an action (up, down or status) and a cluster") {
		t.Errorf("an unknown action: exit %d\n%s", code, stderr)
	}

	code, _, stderr = nix8s("lima", "up", "--no-secrets", "--wait-timeout", "2s",
		"--image", "server=/images/server.qcow2", "--image", "agent=/images/agent.qcow2", "dev")
	if code != 1 || !strings.Contains(stderr, "dev-server: waiting for ssh on 127.0.0.1 with the host key its Lima instance was given") {
		t.Errorf("up: exit %d, want the wait for the server's pinned key to fail\n%s", code, stderr)
	}
	inst, err := os.ReadFile(filepath.Join(dir, "instances", "nix8s-dev-server.yaml"))
	if err != nil || !strings.Contains(string(inst), "location: /images/server.qcow2") || !strings.Contains(string(inst), "localPort: 60101") {
		t.Errorf("the server's instance file (%v):\n%s", err, inst)
	}
	calls, _ := os.ReadFile(filepath.Join(state, "calls"))
	for _, want := range []string{"network create nix8s-dev --mode user-v2 --gateway 192.168.107.1/24", "--tty=false create --name nix8s-dev-server", "--tty=false start nix8s-dev-server"} {
		if !strings.Contains(string(calls), want) {
			t.Errorf("limactl calls lack %q:\n%s", want, calls)
		}
	}
	if strings.Contains(string(calls), "nix8s-dev-agent") {
		t.Errorf("the agent was created before the server was up:\n%s", calls)
	}

	code, stdout, stderr := nix8s("lima", "status", "--json", "dev")
	var st struct {
		Members []struct {
			Name    string `json:"name"`
			VM      string `json:"vm"`
			SSHPort int    `json:"sshPort"`
		} `json:"members"`
	}
	if err := json.Unmarshal([]byte(stdout), &st); code != 0 || err != nil {
		t.Fatalf("status --json: exit %d, %v\n%s\n%s", code, err, stdout, stderr)
	}
	got := map[string]string{}
	for _, m := range st.Members {
		got[m.Name] = m.VM
	}
	if got["server"] != "Running" || got["agent"] != "Absent" || st.Members[0].Name != "server" || st.Members[0].SSHPort != 60101 {
		t.Errorf("status: %+v", st.Members)
	}

	if code, _, stderr := nix8s("lima", "down", "--delete", "dev"); code != 0 {
		t.Fatalf("down --delete: exit %d\n%s", code, stderr)
	}
	calls, _ = os.ReadFile(filepath.Join(state, "calls"))
	for _, want := range []string{"stop nix8s-dev-server", "delete --force nix8s-dev-server", "network delete --force nix8s-dev"} {
		if !strings.Contains(string(calls), want) {
			t.Errorf("down --delete: limactl calls lack %q:\n%s", want, calls)
		}
	}
}
