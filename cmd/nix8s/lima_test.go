package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/nix8s/nix8s/internal/secrets"
	"github.com/nix8s/nix8s/internal/sshtest"
)

// nix8s lima against the stand-in limactl of internal/lima alone, without VMs behind it (real VMs booting
// NixOS images cannot run here; TestLimaUpOnSSHNodes has sshd nodes for VMs): up creates and starts the first
// server from its instance file and then waits for it to answer over ssh with the pinned key, which nothing
// does here; status and down act on what the stand-in holds.
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

// limaEnv is a cluster "dev" of two servers and an agent in Lima, against the stand-in limactl of
// internal/lima whose VMs are sshd nodes in network namespaces behind 127.0.0.1 forwards (sshtest.LimaVMs):
// real Lima VMs booting NixOS images cannot run here (limactl refuses root; no NixOS image, nixpkgs or KVM).
// k3s is the sshtest stand-in (it cannot run here either): a server's k3s answers /readyz, and a node is
// Ready, once its token file is on it; the first server's makes the agent's join token (sshtest.K3sTokens).
type limaEnv struct {
	net     *sshtest.Net
	si      *sshtest.StandIns
	vms     *sshtest.LimaVMs
	k3sOn   atomic.Pointer[sshtest.K3sTokens] // set when the first server boots (in the VM host's goroutine)
	dir     string
	config  string
	limactl string
	known   string
	apiPort int
}

const (
	limaServerToken = "/var/lib/nix8s/secrets/k3s-token"
	limaAgentToken  = "/var/lib/nix8s/secrets/k3s-agent-token"
)

func newLimaEnv(t *testing.T) *limaEnv {
	requireNix(t)
	n := sshtest.Start(t)
	e := &limaEnv{net: n, si: n.StandIns(t), dir: t.TempDir()}
	state, home := filepath.Join(e.dir, "standin"), filepath.Join(e.dir, "lima")
	e.limactl, _ = filepath.Abs("../../internal/lima/testdata/limactl")
	e.known = filepath.Join(e.dir, "known_hosts")
	t.Setenv("LIMA_STANDIN", state)
	t.Setenv("LIMA_HOME", home)
	t.Setenv("NIX8S_LIMACTL", e.limactl)
	t.Setenv("NIX8S_CONFIG", "")
	t.Setenv("XDG_CACHE_HOME", filepath.Join(e.dir, "cache"))
	e.vms = n.LimaVMs(t, state, home)
	e.apiPort = freePorts(t)
	// No sshPortBase: up picks each VM's port once, and every other command asks limactl list --json.
	cfg := fmt.Sprintf(`nodes:
  vm:
    install:
      disk: /dev/vda
clusters:
  dev:
    k3s:
      version: "v1.34.2+k3s1"
    members:
      server1: { node: vm, role: server, ip: 192.168.107.10 }
      server2: { node: vm, role: server, ip: 192.168.107.11 }
      agent:   { node: vm, role: agent,  ip: 192.168.107.20 }
provisioning:
  lima:
    network: 192.168.107.0/24
    apiPortBase: %d
`, e.apiPort)
	e.config = filepath.Join(e.dir, "cluster.yaml")
	if err := os.WriteFile(e.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	agent := e.vms.VM("nix8s-dev-agent")
	e.vms.OnBoot = func(t testing.TB, vm *sshtest.LimaVM) {
		if vm.HostName == "dev-agent" {
			return
		}
		// The server's k3s starts with the system; its API answers once the token is there (watch below).
		e.si.Register(t, vm.HostName, false)
		vm.Node.WriteFile(t, "/etc/rancher/k3s/k3s.yaml", strings.Replace(k3sYAML, "Q0EK", base64.StdEncoding.EncodeToString(vm.APICA()), 1), 0o600)
		if _, err := os.Stat(filepath.Join(vm.Node.Dir, "upper/etc/nix8s-test/k3s")); vm.HostName == "dev-server1" && err != nil {
			k3s := n.K3sTokens(t, vm.Node)
			k3s.JoinFrom(t, "dev-agent", agent.Node, limaAgentToken)
			e.k3sOn.Store(k3s)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go e.watchTokens(ctx, done)
	t.Cleanup(func() { cancel(); <-done })
	if code, _, stderr := e.run(t, "gen-secrets", "--dir", filepath.Join(e.dir, "secrets"), "dev"); code != 0 {
		t.Fatalf("gen-secrets: exit %d\n%s", code, stderr)
	}
	return e
}

// watchTokens plays k3s coming up on each VM once its token file is there: the node registers Ready (a
// server's API then answers /readyz).
func (e *limaEnv) watchTokens(ctx context.Context, done chan struct{}) {
	defer close(done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
		for vm, file := range map[string]string{"dev-server1": limaServerToken, "dev-server2": limaServerToken, "dev-agent": limaAgentToken} {
			node := e.vms.VM("nix8s-" + vm).Node
			reg := filepath.Join(e.si.Dir, "nodes", vm)
			if _, err := os.Stat(filepath.Join(node.Dir, "upper", file)); err != nil {
				continue
			}
			if b, _ := os.ReadFile(reg); string(b) != "True\n" && e.vms.Running("nix8s-"+vm) {
				os.WriteFile(reg, []byte("True\n"), 0o644)
			}
		}
	}
}

// freePorts is a port of 127.0.0.1 that is free, with the next one free too (the servers' API forwards).
func freePorts(t *testing.T) int {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1))
		l.Close()
		if err == nil {
			l2.Close()
			return p
		}
	}
	t.Fatal("no two free ports in a row on 127.0.0.1")
	return 0
}

// k3s is the first server's k3s stand-in, which makes the agent's join tokens.
func (e *limaEnv) k3s() *sshtest.K3sTokens { return e.k3sOn.Load() }

func (e *limaEnv) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	full := []string{args[0], "--config", e.config}
	switch args[0] {
	case "lima":
		full = append(full, "--limactl", e.limactl, "--state-dir", filepath.Join(e.dir, "instances"), "--secrets", filepath.Join(e.dir, "secrets"))
		fallthrough
	case "status", "kubeconfig", "ssh":
		full = append(full, "--known-hosts", e.known, "--ssh-config", "none")
	}
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), append(full, args[1:]...), &stdout, &stderr, os.Getenv)
	return code, stdout.String(), stderr.String()
}

// limactl runs the stand-in limactl as a user would, beside nix8s.
func (e *limaEnv) limactlRun(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(e.limactl, args...).CombinedOutput(); err != nil {
		t.Fatalf("limactl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// calls are the stand-in limactl's calls that act (not its reads), and forgets them.
func (e *limaEnv) calls(t *testing.T) []string {
	t.Helper()
	file := filepath.Join(os.Getenv("LIMA_STANDIN"), "calls")
	b, _ := os.ReadFile(file)
	os.Remove(file)
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" && l != "list --json" && l != "network list --json" {
			out = append(out, l)
		}
	}
	return out
}

// inOrder fails unless each of want appears in s after the one before it.
func inOrder(t *testing.T, s string, want ...string) {
	t.Helper()
	at := 0
	for _, w := range want {
		i := strings.Index(s[at:], w)
		if i < 0 {
			t.Errorf("%q not after %q in:\n%s", w, s[:at], s)
			return
		}
		at += i + len(w)
	}
}

// nix8s lima up on two servers and an agent: the VMs start in join order, servers one at a time; the token
// files go over ssh that accepts only the host key each VM's instance file gave it (the agent a join token
// made on the first server); up waits for the first server's /readyz and the second server's node. Then ssh,
// status and kubeconfig reach the members at 127.0.0.1:<port>; a second up leaves running VMs alone and
// starts a stopped one; a VM that serves another host key is refused; down stops the agent first.
func TestLimaUpOnSSHNodes(t *testing.T) {
	e := newLimaEnv(t)
	images := []string{"--image", "server1=/images/s1.qcow2", "--image", "server2=/images/s2.qcow2", "--image", "agent=/images/a.qcow2"}
	code, stdout, stderr := e.run(t, append(append([]string{"lima", "up", "--wait-timeout", "30s"}, images...), "dev")...)
	if code != 0 {
		t.Fatalf("up: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if got, want := e.vms.Log(), []string{"start nix8s-dev-server1", "start nix8s-dev-server2", "start nix8s-dev-agent"}; !slices.Equal(got, want) {
		t.Errorf("VMs %q, want %q", got, want)
	}
	// Servers one at a time: the second is created once the first's API answered, the agent once the second
	// is a Ready node.
	inOrder(t, stderr,
		"nix8s: dev-server1: creating the VM nix8s-dev-server1",
		"nix8s: dev-server1: waiting for ssh on 127.0.0.1 with the host key its Lima instance was given",
		"nix8s: dev-server1: delivered "+limaServerToken,
		"nix8s: dev-server1: waiting for the API to answer /readyz",
		"nix8s: dev-server1: done in",
		"nix8s: dev-server2: creating the VM nix8s-dev-server2",
		"nix8s: dev-server2: waiting until it is a Ready node",
		"nix8s: dev-server2: done in",
		"nix8s: dev-agent: creating the VM nix8s-dev-agent",
		"nix8s: dev-agent: delivered "+limaAgentToken+" (joinToken)",
		"nix8s: dev-agent: a Ready node; deleted its join token",
		"nix8s: dev-agent: done in")
	if !slices.Contains(e.k3s().Calls(t), "kubectl get --raw /readyz") {
		t.Errorf("dev-server1 was never asked /readyz: %q", e.k3s().Calls(t))
	}

	// The token files, and the host keys: each VM serves the key its instance file carried, and up recorded
	// it for 127.0.0.1:<its port>.
	tokens, err := secrets.Load(context.Background(), filepath.Join(e.dir, "secrets"), "dev", "")
	if err != nil {
		t.Fatal(err)
	}
	known, _ := os.ReadFile(e.known)
	for _, name := range []string{"dev-server1", "dev-server2", "dev-agent"} {
		vm := e.vms.VM("nix8s-" + name)
		inst, err := os.ReadFile(filepath.Join(e.dir, "instances", vm.Name+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Provision []struct{ Path, Content string }
		}
		yaml.Unmarshal(inst, &doc)
		var given string
		for _, p := range doc.Provision {
			if p.Path == "/etc/ssh/ssh_host_ed25519_key.pub" {
				given = strings.Join(strings.Fields(p.Content)[:2], " ")
			}
		}
		if served := vm.HostKey(t); given == "" || served != given {
			t.Errorf("%s serves %q, its instance gave %q", name, served, given)
		}
		if line := fmt.Sprintf("[127.0.0.1]:%d %s", vm.SSHPort, given); !strings.Contains(string(known), line) {
			t.Errorf("known_hosts lacks %q:\n%s", line, known)
		}
		if name == "dev-agent" {
			got := vm.Node.Exec(t, "cat "+limaAgentToken)
			_, join, _ := strings.Cut(got, "::")
			id, _, _ := strings.Cut(join, ".")
			if strings.Contains(got, tokens.AgentToken) || !slices.Contains(e.k3s().Tokens(t), join) || !slices.Contains(e.k3s().Deleted(t), id) {
				t.Errorf("the agent holds %q, want a join token made on dev-server1 and deleted there (%q)", got, e.k3s().Calls(t))
			}
		} else if got := vm.Node.Exec(t, "cat "+limaServerToken); got != tokens.Token {
			t.Errorf("%s's token file holds %q", name, got)
		}
	}

	t.Run("lima status", func(t *testing.T) {
		code, stdout, stderr := e.run(t, "lima", "status", "--json", "dev")
		var st struct {
			Members []struct {
				HostName string
				VM       string
				SSHPort  int
				Node     *struct{ Ready string }
			}
		}
		if err := json.Unmarshal([]byte(stdout), &st); code != 0 || err != nil || len(st.Members) != 3 {
			t.Fatalf("exit %d, %v\n%s\n%s", code, err, stdout, stderr)
		}
		for _, m := range st.Members {
			if m.VM != "Running" || m.SSHPort != e.vms.VM("nix8s-"+m.HostName).SSHPort || m.Node == nil || m.Node.Ready != "True" {
				t.Errorf("member %+v", m)
			}
		}
	})
	t.Run("status", func(t *testing.T) {
		code, stdout, stderr := e.run(t, "status", "--json", "dev")
		var r struct {
			Nodes   string
			Members []struct {
				HostName, CurrentSystem, Ready string
				Reachable                      bool
			}
		}
		if err := json.Unmarshal([]byte(stdout), &r); code != 0 || err != nil || len(r.Members) != 3 {
			t.Fatalf("exit %d, %v\n%s\n%s", code, err, stdout, stderr)
		}
		for _, m := range r.Members {
			if !m.Reachable || m.Ready != "True" || !strings.HasSuffix(m.CurrentSystem, "-nixos-system-"+m.HostName) {
				t.Errorf("member %+v", m)
			}
		}
	})
	t.Run("ssh", func(t *testing.T) {
		code, stdout, stderr := e.run(t, "ssh", "dev", "agent", "--", "uname", "-n")
		if code != 0 || stdout != "dev-agent\n" {
			t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
	})
	t.Run("kubeconfig", func(t *testing.T) {
		out := filepath.Join(e.dir, "dev.kubeconfig")
		if code, _, stderr := e.run(t, "kubeconfig", "-o", out, "dev"); code != 0 {
			t.Fatalf("exit %d\n%s", code, stderr)
		}
		data, _ := os.ReadFile(out)
		var cfg struct {
			Clusters []struct {
				Cluster struct {
					Server string `yaml:"server"`
					CA     string `yaml:"certificate-authority-data"`
				} `yaml:"cluster"`
			} `yaml:"clusters"`
		}
		if err := yaml.Unmarshal(data, &cfg); err != nil || len(cfg.Clusters) != 1 {
			t.Fatalf("kubeconfig (%v):\n%s", err, data)
		}
		c := cfg.Clusters[0].Cluster
		if want := fmt.Sprintf("https://127.0.0.1:%d", e.apiPort); c.Server != want {
			t.Fatalf("kubeconfig server %s, want %s (the first server's forward of 6443)", c.Server, want)
		}
		// The URL reaches the first server's API through its forward, with the kubeconfig's CA.
		ca, _ := base64.StdEncoding.DecodeString(c.CA)
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(ca)
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		resp, err := client.Get(c.Server + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "ok" || resp.Header.Get("X-Nix8s-Instance") != "nix8s-dev-server1" {
			t.Errorf("GET %s/readyz: %q from %q", c.Server, body, resp.Header.Get("X-Nix8s-Instance"))
		}
	})

	t.Run("a second up leaves running VMs alone and starts a stopped one", func(t *testing.T) {
		e.limactlRun(t, "stop", "nix8s-dev-server2")
		e.calls(t)
		before := len(e.vms.Log())
		code, stdout, stderr := e.run(t, append(append([]string{"lima", "up", "--json", "--wait-timeout", "30s"}, images...), "dev")...)
		var r struct {
			Members []struct{ HostName, Status string }
		}
		if err := json.Unmarshal([]byte(stdout), &r); code != 0 || err != nil || len(r.Members) != 3 {
			t.Fatalf("exit %d, %v\n%s\n%s", code, err, stdout, stderr)
		}
		for _, m := range r.Members {
			if m.Status != "skipped" {
				t.Errorf("%s: %s, want skipped (it runs NixOS as itself)", m.HostName, m.Status)
			}
		}
		if got := e.calls(t); !slices.Equal(got, []string{"--tty=false start nix8s-dev-server2"}) {
			t.Errorf("limactl calls %q, want the start of the stopped VM alone", got)
		}
		if got := e.vms.Log()[before:]; !slices.Equal(got, []string{"start nix8s-dev-server2"}) {
			t.Errorf("VMs %q", got)
		}
		inOrder(t, stderr, "nix8s: dev-server2: starting the stopped VM nix8s-dev-server2", "nix8s: dev-server2: waiting until it is a Ready node", "nix8s: dev-server2: skipped in")
	})

	t.Run("a VM that serves another host key is refused", func(t *testing.T) {
		e.limactlRun(t, "delete", "--force", "nix8s-dev-agent")
		e.vms.SetForeignKey("nix8s-dev-agent")
		before := len(e.k3s().Tokens(t))
		code, stdout, stderr := e.run(t, append(append([]string{"lima", "up", "--wait-timeout", "3s"}, images...), "dev")...)
		if code != 1 || !strings.Contains(stderr, "dev-agent: timed out after 3s waiting for ssh with the host key its Lima instance was given") ||
			!strings.Contains(stderr, "the machine answers with another host key than its Lima instance was given") {
			t.Errorf("exit %d\n%s\n%s", code, stdout, stderr)
		}
		agent := e.vms.VM("nix8s-dev-agent")
		if _, err := os.Stat(filepath.Join(agent.Node.Dir, "upper", limaAgentToken)); !os.IsNotExist(err) {
			t.Errorf("the refused VM got its token file (%v)", err)
		}
		// Its join token was made for it, and deleted when the delivery failed.
		made := e.k3s().Tokens(t)
		if len(made) != before+1 || !slices.Contains(e.k3s().Deleted(t), strings.SplitN(made[len(made)-1], ".", 2)[0]) {
			t.Errorf("join tokens made %q, deleted %q", made, e.k3s().Deleted(t))
		}
	})

	t.Run("down stops the agent first", func(t *testing.T) {
		e.calls(t)
		if code, _, stderr := e.run(t, "lima", "down", "dev"); code != 0 {
			t.Fatalf("down: exit %d\n%s", code, stderr)
		}
		want := []string{"stop nix8s-dev-agent", "stop nix8s-dev-server2", "stop nix8s-dev-server1"}
		if got := e.calls(t); !slices.Equal(got, want) {
			t.Errorf("limactl calls %q, want %q", got, want)
		}
		for _, name := range []string{"nix8s-dev-server1", "nix8s-dev-server2", "nix8s-dev-agent"} {
			vm := e.vms.VM(name)
			if e.vms.Running(name) {
				t.Errorf("%s still runs", name)
			}
			if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", vm.SSHPort)); err == nil {
				c.Close()
				t.Errorf("%s: 127.0.0.1:%d still forwarded", name, vm.SSHPort)
			}
		}
	})
}
