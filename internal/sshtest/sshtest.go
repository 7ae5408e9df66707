// Package sshtest starts real OpenSSH sshd "nodes" for tests: one network namespace per node with its own
// address on a test bridge, one sshd per namespace with its own host key and hostname.
//
// A node's host key starts as Node.HostKeyFile. A restart of its sshd (the stand-ins' kexec and reboot, see
// standins.go) serves the key the node would have then: the kexec installer's own key if it was given one
// (KexecKeyFile), else an /etc/ssh/ssh_host_ed25519_key written on the node (by an install), else the first.
//
// Nodes share the host's filesystem and processes, so each node runs in its own mount namespace with
// overlays over /etc, /var and /run: what a node writes there (/etc/NIXOS, /run/current-system,
// /etc/rancher/k3s/k3s.yaml, token files) is private to it, while the rest of the system (ssh, sh, tar) is
// shared. The overlays' upper layers live in the node's directory, so a test can read what landed on a node.
//
// Needs root, ip (iproute2), unshare/nsenter (util-linux), sshd and ssh-keygen (openssh). Without them a test
// fails under CI=true and is skipped elsewhere.
package sshtest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/remote"
)

// Net is a bridge with sshd nodes on it.
type Net struct {
	// Dir holds everything of the net: keys, known_hosts, node directories, the stand-ins' shared state.
	Dir string
	// KeyFile is the client's private key, authorised for root on every node.
	KeyFile string
	// KnownHostsFile lists every node's host key under its address.
	KnownHostsFile string
	// Prefix is the /24 the nodes live in, like "10.99.37": the bridge is .1, nodes .2 onwards.
	Prefix string
	// Nodes in the order they were asked for.
	Nodes []*Node

	id     int
	bridge string
}

// Node is one sshd.
type Node struct {
	Name string // node label given to Start
	IP   string
	Dir  string // node's own directory: overlay layers, sshd config, host key
	ns   string
	veth string // root-namespace end of the node's link
	cmd  *exec.Cmd
	done chan struct{} // closed when sshd has exited
}

// Require fails the test under CI=true, and skips it elsewhere, when netns nodes cannot be made here.
func Require(t testing.TB) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, bin := range []string{"ip", "unshare", "nsenter", "/usr/sbin/sshd", "ssh", "ssh-keygen", "ssh-keyscan", "scp", "tar"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "sshd nodes need " + strings.Join(missing, ", ") + " (apt-get install iproute2 util-linux openssh-server openssh-client; run as root)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI=true requires them")
	}
	t.Skip(msg + "; skipping")
}

// Start makes a bridge and one sshd node per name, and removes them when the test ends. Each node's hostname
// starts as "nixos", like the NixOS installer's.
func Start(t testing.TB, names ...string) *Net {
	t.Helper()
	Require(t)
	// Not t.TempDir: test names may hold commas, which overlay mount options cannot.
	dir, err := os.MkdirTemp("", "nix8s-sshtest-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := &Net{Dir: dir}
	if err := n.pickSubnet(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.stop)
	n.KeyFile = filepath.Join(n.Dir, "id_ed25519")
	mustRun(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "nix8s-test", "-f", n.KeyFile)
	pub, err := os.ReadFile(n.KeyFile + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	auth := filepath.Join(n.Dir, "authorized_keys")
	if err := os.WriteFile(auth, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(n.BinDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	var known bytes.Buffer
	for i, name := range names {
		node := &Node{Name: name, IP: fmt.Sprintf("%s.%d", n.Prefix, i+2), Dir: filepath.Join(n.Dir, "nodes", name),
			ns: fmt.Sprintf("n8s%d-%d", n.id, i)}
		n.Nodes = append(n.Nodes, node)
		hostKey := n.startNode(t, node, i, auth)
		fmt.Fprintf(&known, "%s %s", node.IP, hostKey)
	}
	n.KnownHostsFile = filepath.Join(n.Dir, "known_hosts")
	if err := os.WriteFile(n.KnownHostsFile, known.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, node := range n.Nodes {
		waitListening(t, node)
	}
	return n
}

// BinDir is on every node's PATH after /run/current-system/sw/bin (as on NixOS); tests put node-side
// stand-ins here.
func (n *Net) BinDir() string { return filepath.Join(n.Dir, "nodebin") }

// pickSubnet takes a free 10.99.X.0/24: the bridge name n8sbX is the lock between concurrent tests, and a
// subnet some interface already uses is skipped.
func (n *Net) pickSubnet() error {
	out, _ := exec.Command("ip", "-4", "-o", "addr").Output()
	for _, id := range rand.Perm(150) {
		id += 100
		prefix := fmt.Sprintf("10.99.%d", id)
		if bytes.Contains(out, []byte(" "+prefix+".")) {
			continue
		}
		bridge := fmt.Sprintf("n8sb%d", id)
		if err := exec.Command("ip", "link", "add", bridge, "type", "bridge").Run(); err != nil {
			continue
		}
		n.id, n.bridge, n.Prefix = id, bridge, prefix
		if out, err := exec.Command("sh", "-c", fmt.Sprintf("ip addr add %s.1/24 dev %s && ip link set %s up", prefix, bridge, bridge)).CombinedOutput(); err != nil {
			return fmt.Errorf("setting up bridge %s: %v: %s", bridge, err, out)
		}
		return nil
	}
	return fmt.Errorf("no free 10.99.X.0/24 subnet for the test bridge")
}

func (n *Net) startNode(t testing.TB, node *Node, i int, auth string) (hostKey string) {
	t.Helper()
	for _, d := range []string{"etc", "var", "run"} {
		for _, layer := range []string{"upper", "ovlwork"} {
			if err := os.MkdirAll(filepath.Join(node.Dir, layer, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	key := filepath.Join(node.Dir, "ssh_host_ed25519_key")
	mustRun(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", key)
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(node.Dir, "sshd_config")
	// The node's own /etc/ssh/ssh_host_ed25519_key is the overlay's upper file (-f: a whiteout is no key).
	installedKey := filepath.Join(node.Dir, "upper", "etc", "ssh", "ssh_host_ed25519_key")
	path := "/run/current-system/sw/bin:" + n.BinDir() + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	conf := strings.Join([]string{
		"ListenAddress " + node.IP,
		"Port 22",
		"AuthorizedKeysFile " + auth,
		"PermitRootLogin prohibit-password",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"UsePAM no",
		"StrictModes no",
		"PidFile none",
		"Subsystem sftp internal-sftp",
		"SetEnv PATH=" + path + " NIX8S_TEST_NODE=" + node.Name,
		"LogLevel ERROR",
		"",
	}, "\n")
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	veth, peer := fmt.Sprintf("n8s%dv%d", n.id, i), fmt.Sprintf("n8s%dp%d", n.id, i)
	node.veth = veth
	setup := fmt.Sprintf(`set -e
ip netns add %[1]s
ip link add %[2]s type veth peer name %[3]s
ip link set %[3]s netns %[1]s
ip link set %[2]s master %[4]s up
ip -n %[1]s addr add %[5]s/24 dev %[3]s
ip -n %[1]s link set %[3]s up
ip -n %[1]s link set lo up
`, node.ns, veth, peer, n.bridge, node.IP)
	if out, err := exec.Command("sh", "-c", setup).CombinedOutput(); err != nil {
		t.Fatalf("setting up node %s: %v: %s", node.Name, err, out)
	}
	// The mounts happen inside the node's mount namespace only; sshd then serves from it.
	var mounts strings.Builder
	for _, d := range []string{"etc", "var", "run"} {
		fmt.Fprintf(&mounts, "mount -t overlay overlay -o lowerdir=/%[1]s,upperdir=%[2]s/upper/%[1]s,workdir=%[2]s/ovlwork/%[1]s /%[1]s\n", d, node.Dir)
	}
	// root logs in with /bin/sh on the nodes (in the node's own /etc/passwd), so that the host's shell rc
	// files neither slow down nor change the commands. The shell stays as the node's supervisor: it holds
	// the namespaces and starts sshd again whenever it exits (a restart), with the key the node has then.
	script := mounts.String() + "sed -i 's|^\\(root:.*:\\)[^:]*$|\\1/bin/sh|' /etc/passwd\n" +
		"mkdir -p /run/sshd\nhostname nixos\n" + fmt.Sprintf(`while :; do
  key=%[1]s
  if [ -f %[2]s ]; then key=%[2]s; elif [ -f %[3]s ]; then key=%[3]s; fi
  # sshd reads its key again for every connection: a copy keeps the key it started with until the next
  # restart (an install writes the next system's key into /etc/ssh while the installer still serves).
  install -m 0600 "$key" %[6]s
  /usr/sbin/sshd -D -e -f %[4]s -h %[6]s &
  echo $! >%[5]s
  wait $! || true
  sleep 0.05
done
`, remote.Quote(key), remote.Quote(node.KexecKeyFile()), remote.Quote(installedKey), remote.Quote(cfg), remote.Quote(node.pidFile()),
		remote.Quote(filepath.Join(node.Dir, "serving_host_key")))
	cmd := exec.Command("ip", "netns", "exec", node.ns, "unshare", "-mu", "--propagation", "private", "sh", "-ec", script)
	logf, err := os.Create(filepath.Join(node.Dir, "sshd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting sshd of %s: %v", node.Name, err)
	}
	node.cmd = cmd
	node.done = make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(node.done) }()
	return string(pub)
}

func waitListening(t testing.TB, node *Node) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", node.IP+":22", 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(node.Dir, "sshd.log"))
			t.Fatalf("sshd of node %s (%s) did not listen within 10s: %v\nsshd log:\n%s", node.Name, node.IP, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (n *Net) stop() {
	for _, node := range n.Nodes {
		node.Stop()
		if node.veth != "" {
			exec.Command("ip", "link", "del", node.veth).Run()
		}
		exec.Command("ip", "netns", "del", node.ns).Run()
	}
	if n.bridge != "" {
		exec.Command("ip", "link", "del", n.bridge).Run()
	}
}

// Node is the node called name.
func (n *Net) Node(name string) *Node {
	for _, node := range n.Nodes {
		if node.Name == name {
			return node
		}
	}
	panic("sshtest: no node " + name)
}

// SSH is a Runner that reaches the nodes: no user ssh config, the net's known_hosts, short timeouts.
func (n *Net) SSH() *remote.SSH {
	return &remote.SSH{ConfigFile: "none", KnownHostsFile: n.KnownHostsFile, ConnectTimeout: 2 * time.Second, CommandTimeout: 30 * time.Second}
}

// Host is the node called name as a remote.Host with the net's key.
func (n *Net) Host(name string) remote.Host {
	node := n.Node(name)
	return remote.Host{Name: name, Addr: node.IP, User: "root", Port: 22, KeyFile: n.KeyFile}
}

// Endpoint is the node called name as the plan's ssh endpoint of a member (core.Member.SSH) with the net's
// key: what remote.HostOf turns into Host(name), for tests that build a plan by hand.
func (n *Net) Endpoint(name string) core.SSH {
	key := n.KeyFile
	return core.SSH{Host: n.Node(name).IP, Port: 22, User: "root", KeyFile: &key}
}

// Exec runs the shell command cmd inside the node (its mount, UTS and network namespaces) and returns its
// output; a failure fails the test.
func (node *Node) Exec(t testing.TB, cmd string) string {
	t.Helper()
	out, err := exec.Command("nsenter", "-t", fmt.Sprint(node.cmd.Process.Pid), "-m", "-u", "-n", "sh", "-c", cmd).CombinedOutput()
	if err != nil {
		t.Fatalf("node %s: %q: %v: %s", node.Name, cmd, err, out)
	}
	return string(out)
}

// WriteFile writes a file at path as the node sees it.
func (node *Node) WriteFile(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	cmd := fmt.Sprintf("mkdir -p %s && cat > %s <<'NIX8S_EOF'\n%sNIX8S_EOF\nchmod %o %s", remote.Quote(filepath.Dir(path)), remote.Quote(path), content, mode, remote.Quote(path))
	node.Exec(t, cmd)
}

// Stop kills the node's sshd and its supervisor: it becomes unreachable.
func (node *Node) Stop() {
	if node.cmd != nil && node.cmd.Process != nil {
		node.cmd.Process.Kill()
		select {
		case <-node.done:
		case <-time.After(5 * time.Second):
		}
		if data, err := os.ReadFile(node.pidFile()); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && pid > 1 {
				syscall.Kill(pid, syscall.SIGKILL)
				// Gone, or a zombie (its supervisor is dead; whoever inherits it may not reap it): its socket is
				// closed either way, so connections are refused from now on.
				for i := 0; i < 250 && syscall.Kill(pid, 0) == nil; i++ {
					if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err != nil || strings.Contains(string(st), ") Z ") {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}
	}
}

// Reboot restarts the node's sshd as a reboot would: out of a kexec installer, back to the system on its
// disk (the key an install wrote, or the first). It waits until sshd listens again.
func (node *Node) Reboot(t testing.TB) {
	t.Helper()
	os.Remove(node.KexecKeyFile())
	os.Remove(node.KexecKeyFile() + ".pub")
	data, err := os.ReadFile(node.pidFile())
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		t.Fatalf("node %s: sshd pid %q", node.Name, data)
	}
	syscall.Kill(pid, syscall.SIGTERM)
	for syscall.Kill(pid, 0) == nil {
		time.Sleep(20 * time.Millisecond)
	}
	waitListening(t, node)
}

// HostKeyFile is the node's first host key (its .pub beside it): the one KnownHostsFile lists.
func (node *Node) HostKeyFile() string { return filepath.Join(node.Dir, "ssh_host_ed25519_key") }

// KexecKeyFile is the host key the node serves while it runs a kexec installer with a key of its own.
func (node *Node) KexecKeyFile() string { return filepath.Join(node.Dir, "kexec_host_key") }

func (node *Node) pidFile() string { return filepath.Join(node.Dir, "sshd.pid") }

// HostKey is the public host key the node serves now, `<type> <base64>`, as ssh-keyscan sees it.
func (node *Node) HostKey(t testing.TB) string {
	t.Helper()
	var last string
	for range 50 {
		out, err := exec.Command("ssh-keyscan", "-T", "2", "-t", "ed25519", node.IP).Output()
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == node.IP {
				return f[1] + " " + f[2]
			}
		}
		last = fmt.Sprint(err)
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("node %s: ssh-keyscan got no host key: %s", node.Name, last)
	return ""
}

func mustRun(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}
