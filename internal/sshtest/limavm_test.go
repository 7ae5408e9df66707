package sshtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The stand-in limactl with its VMs played by LimaVMs: start brings up an sshd node that serves the host key
// of the instance's provision data on 127.0.0.1:<ssh.localPort> and forwards the API port; list --json
// reports it; stop takes it down and keeps its disk; start serves the same key again.
func TestLimaVMs(t *testing.T) {
	n := Start(t)
	dir := t.TempDir()
	state, home := filepath.Join(dir, "standin"), filepath.Join(dir, "lima")
	v := n.LimaVMs(t, state, home)
	limactl, _ := filepath.Abs("../lima/testdata/limactl")
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(limactl, args...)
		cmd.Env = append(os.Environ(), "LIMA_STANDIN="+state, "LIMA_HOME="+home)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("limactl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return stdout.String()
	}
	free := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	sshPort, apiPort := free(), free()
	key := filepath.Join(dir, "hostkey")
	mustRun(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", key)
	priv, _ := os.ReadFile(key)
	pub, _ := os.ReadFile(key + ".pub")
	indent := func(s []byte) string {
		return "      " + strings.ReplaceAll(strings.TrimSpace(string(s)), "\n", "\n      ")
	}
	inst := "images:\n  - location: /images/x.qcow2\nssh:\n  localPort: " + strconv.Itoa(sshPort) + "\n" +
		"portForwards:\n  - guestPort: 6443\n    hostIP: 127.0.0.1\n    hostPort: " + strconv.Itoa(apiPort) + "\n    static: true\n" +
		"message: nix8s cluster dev member x\nprovision:\n" +
		"  - mode: data\n    path: /etc/ssh/ssh_host_ed25519_key\n    permissions: \"600\"\n    content: |\n" + indent(priv) + "\n" +
		"  - mode: data\n    path: /etc/ssh/ssh_host_ed25519_key.pub\n    permissions: \"644\"\n    content: |\n" + indent(pub) + "\n"
	file := filepath.Join(dir, "x.yaml")
	os.WriteFile(file, []byte(inst), 0o600)
	run("--tty=false", "create", "--name", "nix8s-dev-x", file)
	want := strings.Join(strings.Fields(string(pub))[:2], " ")
	for round := range 2 {
		run("--tty=false", "start", "nix8s-dev-x")
		vm := v.VM("nix8s-dev-x")
		if got := vm.HostKey(t); got != want {
			t.Fatalf("round %d: the VM serves %q, its instance gave %q", round, got, want)
		}
		var in struct {
			Status       string
			SSHLocalPort int
		}
		sc := bufio.NewScanner(strings.NewReader(run("list", "--json")))
		for sc.Scan() {
			json.Unmarshal(sc.Bytes(), &in)
		}
		if in.Status != "Running" || in.SSHLocalPort != sshPort {
			t.Errorf("round %d: list --json: %+v", round, in)
		}
		// Lima's key logs in as root; the system is the member's.
		ssh := &limaSSH{Home: home}
		if out := ssh.Run(t, sshPort, "uname -n; test -e /etc/NIXOS && echo nixos"); out != "dev-x\nnixos\n" {
			t.Errorf("round %d: %q", round, out)
		}
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(apiPort))
		if err != nil {
			t.Errorf("round %d: the API forward: %v", round, err)
		} else {
			c.Close()
		}
		run("stop", "nix8s-dev-x")
		if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(sshPort)); err == nil {
			c.Close()
			t.Errorf("round %d: ssh still forwarded after stop", round)
		}
	}
	if got := strings.Join(v.Log(), ","); got != "start nix8s-dev-x,stop nix8s-dev-x,start nix8s-dev-x,stop nix8s-dev-x" {
		t.Errorf("log %s", got)
	}
}

// limaSSH runs commands over ssh with Lima's key on a forwarded port, any host key accepted (as Lima's own
// ssh does; the test compares the key itself).
type limaSSH struct{ Home string }

func (s *limaSSH) Run(t *testing.T, port int, cmd string) string {
	t.Helper()
	out, err := exec.Command("ssh", "-F", "none", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "LogLevel=ERROR", "-i", filepath.Join(s.Home, "_config", "user"), "-p", strconv.Itoa(port), "root@127.0.0.1", cmd).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh: %v: %s", err, out)
	}
	return string(out)
}
