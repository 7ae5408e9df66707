package lima

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/provision"
	"github.com/nix8s/nix8s/internal/remote"
)

// devConfig is a Lima cluster of one server and two agents on 192.168.107.0/24, SSH ports from Lima's choice
// (nil) or fixed.
func devConfig(sshPortBase any) map[string]any {
	lima := map[string]any{"network": "192.168.107.0/24"}
	if sshPortBase != nil {
		lima["sshPortBase"] = sshPortBase
	}
	return map[string]any{
		"nodes": map[string]any{"vm": map[string]any{"install": map[string]any{"disk": "/dev/vda"}}},
		"clusters": map[string]any{"dev": map[string]any{
			"k3s": map[string]any{"version": "v1.34.2+k3s1"},
			"members": map[string]any{
				"server": map[string]any{"node": "vm", "role": "server", "ip": "192.168.107.10"},
				"agent1": map[string]any{"node": "vm", "role": "agent", "ip": "192.168.107.20"},
				"agent2": map[string]any{"node": "vm", "role": "agent", "ip": "192.168.107.21"},
			},
		}},
		"provisioning": map[string]any{"lima": lima},
	}
}

func evaluator(t *testing.T) *core.Evaluator {
	t.Helper()
	if _, err := exec.LookPath("nix-instantiate"); err != nil {
		t.Fatal("nix-instantiate not found: apt-get install nix-bin")
	}
	ev, err := core.New(core.Options{LibDir: "../../lib", CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// standIn is a Cluster whose limactl is testdata/limactl, with its state in a directory of the test.
type standIn struct {
	*Cluster
	state string
}

func newStandIn(t *testing.T, cfg map[string]any) standIn {
	t.Helper()
	ctx := context.Background()
	ev := evaluator(t)
	v, err := Load(ctx, ev, cfg, "dev")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ev.Plan(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	home := filepath.Join(dir, "lima")
	state := filepath.Join(dir, "standin")
	prog, _ := filepath.Abs("testdata/limactl")
	return standIn{state: state, Cluster: &Cluster{
		View:      v,
		Plan:      p.Plan.Clusters["dev"],
		Limactl:   &Limactl{Program: prog, Env: append(os.Environ(), "LIMA_HOME="+home, "LIMA_STANDIN="+state)},
		Home:      home,
		MachineID: "0123456789abcdef0123456789abcdef",
		Dir:       filepath.Join(dir, "instances"),
	}}
}

func (s standIn) home() (string, error) { return s.Home, nil }

func (s standIn) calls(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.state, "calls"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "list --json" { // the reads of the instances; the test asserts the actions
			out = append(out, l)
		}
	}
	return out
}

// fakes of the install walk's ssh seams: they record who was reached where and with which key.
type fakeSSH struct {
	mu        sync.Mutex
	installed map[string]bool // host names that answer the probe as NixOS
	delivered []string        // "<host> <addr>:<port> <key>"
	ready     []string
}

func (f *fakeSSH) Run(_ context.Context, h remote.Host, cmd string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.installed[h.Name] {
		return []byte(h.Name + "\nnixos\n"), nil
	}
	return nil, &remote.ExitError{Code: 255}
}
func (f *fakeSSH) Copy(context.Context, remote.Host, string, string) error { return nil }
func (f *fakeSSH) Deliver(_ context.Context, h remote.Host, key string, files []provision.File) (provision.Delivered, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delivered = append(f.delivered, h.Name+" "+h.Addr+":"+itoa(h.Port)+" "+key)
	return provision.Delivered{Files: files, HostKey: key}, nil
}
func (f *fakeSSH) APIReady(_ context.Context, h remote.Host) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ready = append(f.ready, "api "+h.Name)
	return nil
}
func (f *fakeSSH) NodeReady(_ context.Context, h remote.Host, node string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ready = append(f.ready, "node "+node)
	return nil
}

var someImages = map[string]string{"dev-server": "/nix/store/a/nixos.qcow2", "dev-agent1": "/nix/store/b/nixos.qcow2", "dev-agent2": "/nix/store/c/nixos.qcow2"}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func upOptions(f *fakeSSH, images map[string]string) UpOptions {
	return UpOptions{
		Image: func(_ context.Context, m Member) (string, error) { return images[m.HostName], nil },
		Install: provision.Options{
			Tokens:    &provision.Tokens{Token: "t0k3n", AgentToken: "ag3nt"},
			Runner:    f,
			Readiness: f,
			Deliverer: f,
		},
	}
}

// up on a cluster with no VMs creates the network and reservations, then creates and starts the VMs in join
// order (the server alone first), each with its own fixed port and the host key the install pins.
func TestUpCreatesTheClusterInJoinOrder(t *testing.T) {
	s := newStandIn(t, devConfig(nil))
	f := &fakeSSH{installed: map[string]bool{}}
	images := map[string]string{"dev-server": "/nix/store/a-server/nixos.qcow2", "dev-agent1": "/nix/store/b-agent1/nixos.qcow2", "dev-agent2": "/nix/store/c-agent2/nixos.qcow2"}
	rep, err := s.Up(context.Background(), upOptions(f, images))
	if err != nil {
		t.Fatal(err)
	}
	calls := s.calls(t)
	if want := "network list --json"; calls[0] != want {
		t.Errorf("first call %q, want %q", calls[0], want)
	}
	if want := "network create nix8s-dev --mode user-v2 --gateway 192.168.107.1/24"; calls[1] != want {
		t.Errorf("second call %q, want %q", calls[1], want)
	}
	// The server is created and started before any agent.
	var order []string
	for _, c := range calls[2:] {
		order = append(order, c)
	}
	if !strings.HasPrefix(order[0], "--tty=false create --name nix8s-dev-server ") || order[1] != "--tty=false start nix8s-dev-server" {
		t.Errorf("the server first: %q", order)
	}
	if len(order) != 6 {
		t.Errorf("calls after the network: %q, want create and start of three VMs", order)
	}
	for _, m := range rep.Members {
		if m.Status != provision.Done {
			t.Errorf("%s: %s (%s), want done", m.HostName, m.Status, m.Error)
		}
	}
	if !slices.Equal(f.ready, []string{"api dev-server"}) {
		t.Errorf("readiness waits %q, want the first server's API", f.ready)
	}

	// Each instance file: the core's data, its image, its port, and the key the install pinned.
	ports := map[int]bool{}
	for _, d := range f.delivered {
		fields := strings.Fields(d) // host addr:port type key
		host, addr, key := fields[0], fields[1], fields[2]+" "+fields[3]
		inst := "nix8s-" + host
		raw, err := os.ReadFile(filepath.Join(s.Dir, inst+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Images []struct{ Location, Arch string }
			SSH    struct {
				LocalPort int `yaml:"localPort"`
			}
			Networks  []map[string]string
			Plain     bool
			Message   string
			Provision []struct{ Mode, Path, Content, Permissions string }
		}
		if err := yaml.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		if doc.Images[0].Location != images[host] || doc.Images[0].Arch != "x86_64" {
			t.Errorf("%s: images %+v, want %s", inst, doc.Images, images[host])
		}
		if addr != "127.0.0.1:"+itoa(doc.SSH.LocalPort) || doc.SSH.LocalPort == 0 {
			t.Errorf("%s: reached at %s, its ssh.localPort is %d", inst, addr, doc.SSH.LocalPort)
		}
		ports[doc.SSH.LocalPort] = true
		if !doc.Plain || doc.Networks[0]["lima"] != "nix8s-dev" || len(doc.Networks) != 1 {
			t.Errorf("%s: plain %v, networks %v", inst, doc.Plain, doc.Networks)
		}
		var pub string
		for _, p := range doc.Provision {
			if p.Mode != "data" {
				t.Errorf("%s: provision %+v", inst, p)
			}
			if p.Path == provision.HostKeyPath+".pub" {
				pub = strings.TrimSpace(p.Content)
			}
			if p.Path == provision.HostKeyPath && (p.Permissions != "600" || !strings.Contains(p.Content, "PRIVATE KEY")) {
				t.Errorf("%s: private host key %q with mode %s", inst, p.Path, p.Permissions)
			}
		}
		if pub != key {
			t.Errorf("%s: the instance carries host key %q, the install pinned %q", inst, pub, key)
		}
		if info, err := os.Stat(filepath.Join(s.Dir, inst+".yaml")); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s: instance file mode %v (%v), want 0600: it holds a private key", inst, info.Mode(), err)
		}
	}
	if len(f.delivered) != 3 || len(ports) != 3 {
		t.Errorf("delivered %q, ports %v: want three members on three ports", f.delivered, ports)
	}

	// The reservations: each member's IP for the MAC Lima gives its eth0.
	var leases map[string]string
	b, err := os.ReadFile(LeasesFile(s.Home, "nix8s-dev"))
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(b, &leases)
	for _, m := range s.View.Members {
		if want := MAC(s.MachineID, filepath.Join(s.Home, m.Instance)); leases[m.IP] != want {
			t.Errorf("leases[%s] = %q, want %s", m.IP, leases[m.IP], want)
		}
	}
}

// A second up leaves running members alone, starts stopped ones and creates none.
func TestUpIsIdempotent(t *testing.T) {
	s := newStandIn(t, devConfig(60100))
	f := &fakeSSH{installed: map[string]bool{}}
	images := map[string]string{"dev-server": "/nix/store/a/nixos.qcow2", "dev-agent1": "/nix/store/b/nixos.qcow2", "dev-agent2": "/nix/store/c/nixos.qcow2"}
	if _, err := s.Up(context.Background(), upOptions(f, images)); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(s.state, "calls"))
	for h := range images {
		f.installed[h] = true
	}
	if err := s.Limactl.Stop(context.Background(), "nix8s-dev-agent2"); err != nil {
		t.Fatal(err)
	}
	images["dev-agent1"] = "/nix/store/b2/nixos.qcow2"
	var progress strings.Builder
	s.Progress = &progress
	rep, err := s.Up(context.Background(), upOptions(f, images))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"stop nix8s-dev-agent2", "network list --json", "--tty=false start nix8s-dev-agent2"}
	if got := s.calls(t); !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
	for _, m := range rep.Members {
		if m.Status != provision.Skipped {
			t.Errorf("%s: %s, want skipped (it runs NixOS as itself)", m.HostName, m.Status)
		}
	}
	if !strings.Contains(progress.String(), "warning: dev-agent1: its configuration's image changed") {
		t.Errorf("no warning of agent1's changed image:\n%s", progress.String())
	}
	// Fixed ports: sshPortBase plus the member's index in name order.
	for m, p := range map[string]int{"agent1": 60100, "agent2": 60101, "server": 60102} {
		if got := s.Plan.Members[m].SSH.Port; got != p {
			t.Errorf("%s: port %d, want %d", m, got, p)
		}
	}
}

// up refuses an instance of the same name that nix8s did not make, and reservations it cannot make take.
func TestUpRefuses(t *testing.T) {
	s := newStandIn(t, devConfig(nil))
	os.MkdirAll(filepath.Join(s.state, "instances"), 0o755)
	os.WriteFile(filepath.Join(s.state, "instances", "nix8s-dev-agent1.json"),
		[]byte(`{"name":"nix8s-dev-agent1","status":"Running","message":"someone else's"}`+"\n"), 0o644)
	_, err := s.Up(context.Background(), upOptions(&fakeSSH{}, nil))
	if err == nil || !strings.Contains(err.Error(), `the Lima instance nix8s-dev-agent1 exists but is not nix8s's dev-agent1 (its message is "someone else's"`) {
		t.Errorf("up with a foreign instance: %v", err)
	}

	s = newStandIn(t, devConfig(nil))
	dir := filepath.Join(s.Home, "_networks", "nix8s-dev")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "usernet_nix8s-dev.pid"), []byte(itoa(os.Getpid())), 0o644)
	_, err = s.Up(context.Background(), upOptions(&fakeSSH{}, nil))
	if err == nil || !strings.Contains(err.Error(), "its daemon runs, which reads reservations only when it starts; stop the cluster first (nix8s lima down dev)") {
		t.Errorf("up with the network daemon running and no reservations: %v", err)
	}

	s = newStandIn(t, devConfig(nil))
	os.MkdirAll(filepath.Join(s.state, "networks"), 0o755)
	os.WriteFile(filepath.Join(s.state, "networks", "nix8s-dev.json"),
		[]byte(`{"name":"nix8s-dev","mode":"user-v2","gateway":"192.168.108.1","netmask":"255.255.255.0"}`+"\n"), 0o644)
	_, err = s.Up(context.Background(), upOptions(&fakeSSH{}, nil))
	if err == nil || !strings.Contains(err.Error(), "the Lima network nix8s-dev is user-v2 192.168.108.1/255.255.255.0, not user-v2 192.168.107.0/24") {
		t.Errorf("up with the network on another subnet: %v", err)
	}
}

// down stops agents first and the server last; --delete removes the VMs and the network.
func TestDown(t *testing.T) {
	s := newStandIn(t, devConfig(nil))
	f := &fakeSSH{installed: map[string]bool{}}
	if _, err := s.Up(context.Background(), upOptions(f, someImages)); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(s.state, "calls"))
	if err := s.Down(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	want := []string{"stop nix8s-dev-agent2", "stop nix8s-dev-agent1", "stop nix8s-dev-server"}
	if got := s.calls(t); !slices.Equal(got, want) {
		t.Errorf("down: %q, want %q", got, want)
	}
	os.Remove(filepath.Join(s.state, "calls"))
	if err := s.Down(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	want = []string{"delete --force nix8s-dev-agent2", "delete --force nix8s-dev-agent1", "delete --force nix8s-dev-server",
		"network list --json", "network delete --force nix8s-dev"}
	if got := s.calls(t); !slices.Equal(got, want) {
		t.Errorf("down --delete: %q, want %q", got, want)
	}
}

// status reports each VM, its address and port, and asks only running members about their node.
func TestStatus(t *testing.T) {
	s := newStandIn(t, devConfig(nil))
	f := &fakeSSH{installed: map[string]bool{}}
	if _, err := s.Up(context.Background(), upOptions(f, someImages)); err != nil {
		t.Fatal(err)
	}
	s.Limactl.Stop(context.Background(), "nix8s-dev-agent1")
	s.Limactl.Delete(context.Background(), "nix8s-dev-agent2")
	st, _, err := s.Status(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, m := range st {
		got[m.Name] = m.VM + " " + m.IP
		if (m.VM == "Absent") != (m.SSHPort == 0) {
			t.Errorf("%s: VM %s with SSH port %d", m.Name, m.VM, m.SSHPort)
		}
		if (m.Node != nil) != (m.VM == "Running") {
			t.Errorf("%s: VM %s, node asked: %v", m.Name, m.VM, m.Node != nil)
		}
	}
	want := map[string]string{"server": "Running 192.168.107.10", "agent1": "Stopped 192.168.107.20", "agent2": "Absent 192.168.107.21"}
	if !slicesEqualMap(got, want) {
		t.Errorf("status %v, want %v", got, want)
	}
	if st[0].Name != "server" {
		t.Errorf("status order %v, want join order (server first)", st)
	}
}

func slicesEqualMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// A VM that does not start fails its member with limactl's message and where the reservation is.
func TestUpStartFails(t *testing.T) {
	s := newStandIn(t, devConfig(nil))
	s.Limactl.Env = append(s.Limactl.Env, "LIMA_STANDIN_FAIL_START=1")
	rep, err := s.Up(context.Background(), upOptions(&fakeSSH{installed: map[string]bool{}}, someImages))
	if err == nil || !strings.Contains(err.Error(), `did not receive an event with the \"running\" status`) ||
		!strings.Contains(err.Error(), "the reservation of 192.168.107.10 for 52:55:55:") {
		t.Fatalf("up: %v", err)
	}
	if rep.Members[0].Status != provision.Failed || rep.Members[1].Status != provision.NotStarted {
		t.Errorf("report %+v: want the server failed and the agents not started", rep.Members)
	}
}
