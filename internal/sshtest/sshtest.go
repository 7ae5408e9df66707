// Package sshtest starts real OpenSSH sshd "nodes" for tests: one network namespace per node with its own
// address on a test bridge, one sshd per namespace with its own host key and hostname.
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
	"strings"
	"testing"
	"time"

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
	for _, bin := range []string{"ip", "unshare", "nsenter", "/usr/sbin/sshd", "ssh", "ssh-keygen", "scp", "tar"} {
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
	path := "/run/current-system/sw/bin:" + n.BinDir() + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	conf := strings.Join([]string{
		"ListenAddress " + node.IP,
		"Port 22",
		"HostKey " + key,
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
	// files neither slow down nor change the commands.
	script := mounts.String() + "sed -i 's|^\\(root:.*:\\)[^:]*$|\\1/bin/sh|' /etc/passwd\n" +
		"mkdir -p /run/sshd\nhostname nixos\nexec /usr/sbin/sshd -D -e -f " + cfg + "\n"
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

// SSHOptions are the ssh client options that reach the nodes, for stand-ins that call ssh themselves.
func (n *Net) SSHOptions() string {
	return "-F none -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=" + n.KnownHostsFile + " -o LogLevel=ERROR"
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

// Stop kills the node's sshd: it becomes unreachable.
func (node *Node) Stop() {
	if node.cmd != nil && node.cmd.Process != nil {
		node.cmd.Process.Kill()
		select {
		case <-node.done:
		case <-time.After(5 * time.Second):
		}
	}
}

func mustRun(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}
