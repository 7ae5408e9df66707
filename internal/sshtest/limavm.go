package sshtest

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// LimaVMs plays the VMs of the stand-in limactl in internal/lima/testdata: real Lima VMs booting NixOS images
// cannot run here (limactl refuses root, and there is no NixOS image, nixpkgs or KVM). A VM is an sshd node of
// the net, and the stand-in's `start`, `stop` and `delete` hand their work to it (files in <State>/vmm):
//
//   - `start` boots the VM as a Lima guest running nix8s's guest module would: it installs Lima's key
//     ($LIMA_HOME/_config/user, made on the first start as limactl does) for root, and the host key of the
//     instance's provision data (mode: data, only /etc/ssh/ssh_host_ed25519_key and its .pub, as
//     nix8s-lima-init does) where the node's sshd serves it from; then the node's sshd starts, and the system
//     is the member's own NixOS (/etc/NIXOS, /run/current-system, the hostname <c>-<m> of the instance
//     nix8s-<c>-<m>). Like Lima's host agent it forwards 127.0.0.1:<ssh.localPort> to the node's sshd and, for
//     each static portForward of guest port 6443, 127.0.0.1:<hostPort> to the VM's API: a stand-in HTTPS
//     server in the test process that answers /readyz with ok (k3s cannot run here). It returns once sshd
//     listens, as limactl start returns once Lima's ssh check passed.
//   - `stop` cuts the forwards and stops the node; its disk (the node's overlay upper layers, with the host
//     key and token files) stays, so the next start serves the same key.
//   - `delete` stops it and removes its disk.
//
// SetForeignKey makes a VM ignore the host key its instance gave it, as a guest without nix8s's guest module
// (or another machine on the port) would.
type LimaVMs struct {
	Net *Net
	// State is the stand-in limactl's state ($LIMA_STANDIN).
	State string
	// Home is its LIMA_HOME.
	Home string
	// OnBoot, when set, runs once a VM is up, before its `limactl start` returns: what the member's
	// configuration would start at boot (a k3s stand-in). A Fatal there fails the start.
	OnBoot func(t testing.TB, vm *LimaVM)

	mu      sync.Mutex
	vms     map[string]*LimaVM
	foreign map[string]bool
	log     []string
}

// LimaVM is one instance's VM.
type LimaVM struct {
	// Name is the instance, nix8s-<c>-<m>.
	Name string
	// HostName is the system's host name, <c>-<m>.
	HostName string
	// Node is its sshd node; Node.Dir holds its disk.
	Node *Node
	// SSHPort is its forwarded ssh port on 127.0.0.1, APIPort its forwarded 6443 (0 for none).
	SSHPort, APIPort int

	index    int
	running  bool
	forwards []*Forward
	api      *httptest.Server
}

// APICA is the PEM certificate of the VM's stand-in API, for a kubeconfig's certificate-authority-data; nil
// before its first start or for a VM without an API forward.
func (vm *LimaVM) APICA() []byte {
	if vm.api == nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: vm.api.Certificate().Raw})
}

// LimaVMs starts serving the stand-in limactl whose state is state and whose LIMA_HOME is home, until the
// test ends.
func (n *Net) LimaVMs(t testing.TB, state, home string) *LimaVMs {
	t.Helper()
	v := &LimaVMs{Net: n, State: state, Home: home, vms: map[string]*LimaVM{}, foreign: map[string]bool{}}
	if err := os.MkdirAll(v.dir(), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go v.serve(ctx, t, done)
	t.Cleanup(func() {
		cancel()
		<-done
		v.mu.Lock()
		defer v.mu.Unlock()
		for _, vm := range v.vms {
			vm.close()
		}
	})
	return v
}

func (v *LimaVMs) dir() string { return filepath.Join(v.State, "vmm") }

// VM is the instance's VM, made (not started) when there is none yet, so that a test can name its node's
// directory before it boots.
func (v *LimaVMs) VM(name string) *LimaVM {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.vm(name)
}

func (v *LimaVMs) vm(name string) *LimaVM {
	if vm, ok := v.vms[name]; ok {
		return vm
	}
	i := len(v.Net.Nodes)
	node := &Node{Name: name, IP: fmt.Sprintf("%s.%d", v.Net.Prefix, i+2), Dir: filepath.Join(v.Net.Dir, "nodes", name),
		ns: fmt.Sprintf("n8s%d-%d", v.Net.id, i)}
	v.Net.Nodes = append(v.Net.Nodes, node)
	vm := &LimaVM{Name: name, HostName: strings.TrimPrefix(name, "nix8s-"), Node: node, index: i}
	v.vms[name] = vm
	return vm
}

// SetForeignKey makes the instance's VM serve a host key of its own instead of the one its instance file
// gave it, from its next start.
func (v *LimaVMs) SetForeignKey(name string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.foreign[name] = true
}

// Log is what the VMs did, in order: "start <instance>", "stop <instance>", "delete <instance>".
func (v *LimaVMs) Log() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.log...)
}

// Running says whether the instance's VM runs.
func (v *LimaVMs) Running(name string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	vm, ok := v.vms[name]
	return ok && vm.running
}

// serve answers the stand-in's requests: <id>.req holds "<action> <instance>", <id>.done gets "" for done or
// the error.
func (v *LimaVMs) serve(ctx context.Context, t testing.TB, done chan struct{}) {
	defer close(done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
		reqs, _ := filepath.Glob(filepath.Join(v.dir(), "*.req"))
		for _, req := range reqs {
			data, err := os.ReadFile(req)
			if err != nil {
				continue
			}
			os.Remove(req)
			answer := ""
			if err := v.handle(t, strings.Fields(string(data))); err != nil {
				answer = err.Error()
			}
			id := strings.TrimSuffix(req, ".req")
			answer = strings.ReplaceAll(strings.TrimSpace(answer), "\n", "; ")
			if err := os.WriteFile(id+".answer", []byte(answer), 0o644); err == nil {
				os.Rename(id+".answer", id+".done")
			}
		}
	}
}

// vmTB turns a Fatal of sshtest's node code, which runs here outside the test's goroutine, into an error of
// the request.
type vmTB struct{ testing.TB }

type vmAbort struct{ msg string }

func (vmTB) Helper()                        {}
func (vmTB) FailNow()                       { panic(vmAbort{"failed"}) }
func (vmTB) Fatal(args ...any)              { panic(vmAbort{fmt.Sprint(args...)}) }
func (vmTB) Fatalf(format string, a ...any) { panic(vmAbort{fmt.Sprintf(format, a...)}) }
func (vmTB) Skip(args ...any)               { panic(vmAbort{fmt.Sprint(args...)}) }
func (vmTB) Skipf(format string, a ...any)  { panic(vmAbort{fmt.Sprintf(format, a...)}) }

func (v *LimaVMs) handle(t testing.TB, req []string) (err error) {
	if len(req) != 2 {
		return fmt.Errorf("VM host: bad request %q", req)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			a, ok := r.(vmAbort)
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("VM host: %s %s: %s", req[0], req[1], a.msg)
		}
		if err != nil && req[0] == "start" {
			v.vms[req[1]].stop()
		}
	}()
	v.log = append(v.log, req[0]+" "+req[1])
	vm := v.vm(req[1])
	switch req[0] {
	case "start":
		return v.start(vmTB{t}, vm)
	case "stop":
		vm.stop()
		return nil
	case "delete":
		vm.stop()
		vm.close()
		os.RemoveAll(vm.Node.Dir)
		delete(v.vms, vm.Name)
		return nil
	}
	return fmt.Errorf("VM host: unknown action %q", req[0])
}

// instanceFile is what the VM host reads of an instance file.
type instanceFile struct {
	SSH struct {
		LocalPort int `yaml:"localPort"`
	} `yaml:"ssh"`
	PortForwards []struct {
		GuestPort int  `yaml:"guestPort"`
		HostPort  int  `yaml:"hostPort"`
		Static    bool `yaml:"static"`
		Ignore    bool `yaml:"ignore"`
	} `yaml:"portForwards"`
	Provision []struct {
		Mode        string `yaml:"mode"`
		Path        string `yaml:"path"`
		Content     string `yaml:"content"`
		Permissions string `yaml:"permissions"`
	} `yaml:"provision"`
}

const guestHostKey = "/etc/ssh/ssh_host_ed25519_key"

func (v *LimaVMs) start(t testing.TB, vm *LimaVM) error {
	if vm.running {
		return nil
	}
	raw, err := os.ReadFile(filepath.Join(v.State, vm.Name+".yaml"))
	if err != nil {
		return fmt.Errorf("instance %s has no instance file: %w", vm.Name, err)
	}
	var inst instanceFile
	if err := yaml.Unmarshal(raw, &inst); err != nil {
		return fmt.Errorf("instance %s: %w", vm.Name, err)
	}
	if inst.SSH.LocalPort <= 0 {
		return fmt.Errorf("instance %s has no ssh.localPort", vm.Name)
	}
	auth := filepath.Join(v.Net.Dir, "authorized_keys")
	if err := v.limaKey(t, auth); err != nil {
		return err
	}
	node := vm.Node
	// The guest module's nix8s-lima-init: the host key from the provision data, nothing else of it.
	upper := filepath.Join(node.Dir, "upper")
	if !v.foreign[vm.Name] {
		for _, p := range inst.Provision {
			if p.Mode != "data" || (p.Path != guestHostKey && p.Path != guestHostKey+".pub") {
				continue
			}
			mode, err := strconv.ParseUint(p.Permissions, 8, 32)
			if err != nil {
				return fmt.Errorf("instance %s: provision %s: permissions %q", vm.Name, p.Path, p.Permissions)
			}
			dst := filepath.Join(upper, p.Path)
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(dst, []byte(p.Content), os.FileMode(mode)); err != nil {
				return err
			}
			os.Chmod(dst, os.FileMode(mode))
		}
	}
	// The node's first key (served when the guest installed none) is made again at every boot.
	os.Remove(node.HostKeyFile())
	os.Remove(node.HostKeyFile() + ".pub")
	v.Net.startNode(t, node, vm.index, auth)
	waitListening(t, node)
	node.Exec(t, fmt.Sprintf("hostname %[1]s && touch /etc/NIXOS && ln -sfn /nix/store/00000000000000000000000000000000-nixos-system-%[1]s /run/current-system", vm.HostName))
	vm.running = true
	f, err := StartForward(fmt.Sprintf("127.0.0.1:%d", inst.SSH.LocalPort), node.IP+":22")
	if err != nil {
		vm.stop()
		return err
	}
	vm.SSHPort = inst.SSH.LocalPort
	vm.forwards = append(vm.forwards, f)
	for _, pf := range inst.PortForwards {
		if pf.Ignore || pf.GuestPort != 6443 || pf.HostPort <= 0 {
			continue
		}
		if vm.api == nil {
			name := vm.Name
			vm.api = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Nix8s-Instance", name)
				if r.URL.Path != "/readyz" {
					http.NotFound(w, r)
					return
				}
				fmt.Fprint(w, "ok")
			}))
			vm.api.StartTLS()
		}
		f, err := StartForward(fmt.Sprintf("127.0.0.1:%d", pf.HostPort), vm.api.Listener.Addr().String())
		if err != nil {
			vm.stop()
			return err
		}
		vm.APIPort = pf.HostPort
		vm.forwards = append(vm.forwards, f)
	}
	if v.OnBoot != nil {
		v.OnBoot(t, vm)
	}
	return nil
}

// limaKey makes Lima's own key ($LIMA_HOME/_config/user) when there is none, as limactl does, and authorizes
// it for root on the nodes, as the guest does with the keys of its cidata.
func (v *LimaVMs) limaKey(t testing.TB, auth string) error {
	key := filepath.Join(v.Home, "_config", "user")
	if _, err := os.Stat(key); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(key), 0o700); err != nil {
			return err
		}
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lima", "-f", key).CombinedOutput(); err != nil {
			return fmt.Errorf("making Lima's key: %v: %s", err, out)
		}
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		return err
	}
	have, _ := os.ReadFile(auth)
	if bytes.Contains(have, bytes.TrimSpace(pub)) {
		return nil
	}
	f, err := os.OpenFile(auth, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Write(pub)
	return err
}

// stop cuts the forwards and powers the node off: its sshd, network namespace and link go; its disk stays.
// It also cleans up after a start that failed half way.
func (vm *LimaVM) stop() {
	for _, f := range vm.forwards {
		f.Close()
	}
	vm.forwards = nil
	vm.running = false
	node := vm.Node
	if node.cmd == nil {
		return
	}
	node.Stop()
	node.cmd = nil
	os.Remove(node.pidFile())
	exec.Command("ip", "link", "del", node.veth).Run()
	exec.Command("ip", "netns", "del", node.ns).Run()
	// The next boot's link has another MAC: a neighbour entry of this one would blackhole it for seconds.
	exec.Command("ip", "neigh", "flush", "to", node.IP).Run()
}

func (vm *LimaVM) close() {
	for _, f := range vm.forwards {
		f.Close()
	}
	vm.forwards = nil
	if vm.api != nil {
		vm.api.Close()
	}
}

// HostKey is the public host key the VM serves on its forwarded ssh port, `<type> <base64>`, as ssh-keyscan
// sees it.
func (vm *LimaVM) HostKey(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("ssh-keyscan", "-T", "5", "-t", "ed25519", "-p", strconv.Itoa(vm.SSHPort), "127.0.0.1").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 3 {
			return f[1] + " " + f[2]
		}
	}
	t.Fatalf("%s: ssh-keyscan of 127.0.0.1:%d got no host key (%v)", vm.Name, vm.SSHPort, err)
	return ""
}
