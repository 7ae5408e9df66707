package jobs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix8s/nix8s/internal/remote"
	"github.com/nix8s/nix8s/internal/sshtest"
	"github.com/nix8s/nix8s/internal/store"
)

// k3sYAML is an admin kubeconfig as k3s writes it, with a client certificate and key made here (client-go
// parses them when it makes a client).
func k3sYAML(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "system:admin"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	priv := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	b64 := base64.StdEncoding.EncodeToString
	return `apiVersion: v1
clusters:
- cluster: {certificate-authority-data: ` + b64(cert) + `, server: "https://127.0.0.1:6443"}
  name: default
contexts:
- context: {cluster: default, user: default}
  name: default
current-context: default
kind: Config
users:
- name: default
  user: {client-certificate-data: ` + b64(cert) + `, client-key-data: ` + b64(priv) + `}
`
}

// A cluster installed over the network only: no known_hosts file holds its members' keys (the daemon's
// --known-hosts is empty). Once a member's deliver-secrets job reached it with the key its installer
// reported, the daemon's later ssh to it accepts that key, from the database: the kubeconfig fetch (which
// rollouts and node status use), the agent's join token on the server, and the ssh options a rollout's
// nixos-rebuild gets (split on spaces as nixos-rebuild splits NIX_SSHOPTS). Before any delivery nothing is
// trusted; a host presenting another key at the member's address is refused; a machine installed again, or
// locked, loses the trust. Real sshds (internal/sshtest) and real ssh; k3s is a stand-in (sshtest.StandIns
// for /readyz, sshtest.K3sTokens for tokens): it cannot run here.
func TestMembersReachedWithTheirDeliveredHostKeys(t *testing.T) {
	e := newS1A1(t, "52:54:00:ee:00:")
	n, si, st, macs, secretsDir := e.n, e.si, e.st, e.macs, e.secretsDir
	s1, a1 := n.Node("s1"), n.Node("a1")
	// s1 is a ready k3s server: NixOS, its hostname, its API up, its admin kubeconfig.
	s1.Exec(t, "touch /etc/NIXOS; hostname t-s1")
	si.Register(t, "t-s1", true)
	s1.WriteFile(t, "/etc/rancher/k3s/k3s.yaml", k3sYAML(t), 0o600)
	ctx := context.Background()
	p := testPlan(n)
	p.c.APIEndpoint = "https://" + s1.IP + ":6443"
	empty := filepath.Join(t.TempDir(), "known_hosts") // --known-hosts, and it holds nothing
	r := &Runner{Store: st, Planner: p, Worker: "w", Poll: 50 * time.Millisecond, Config: Config{
		SSHConfigFile: "none", KnownHostsFile: empty, ConnectTimeout: 2 * time.Second, SecretsDir: secretsDir,
		WaitTimeout: 2 * time.Second, WaitInterval: 50 * time.Millisecond,
	}}
	start(t, r)
	deliver := func(member string, node *sshtest.Node) *store.Job {
		t.Helper()
		j, err := r.QueueDeliverSecrets(ctx, "t", member, macs[member], hostKey(t, node))
		if err != nil {
			t.Fatal(err)
		}
		return waitJob(t, st, j.ID)
	}
	refused := func(what string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "Host key verification failed") {
			t.Errorf("%s: %v, want the host key refused", what, err)
		}
	}
	// nixosRebuildSSH runs `true` on node with cfg's ssh options as nixos-rebuild passes them: NIX_SSHOPTS,
	// split on spaces by the shell.
	nixosRebuildSSH := func(cfg Config, node *sshtest.Node) error {
		t.Helper()
		host := remote.HostOf(p.c.Members[node.Name])
		cmd := exec.Command("sh", "-c", `exec ssh $NIX_SSHOPTS -- "$0" true`, host.Addr)
		cmd.Env = append(os.Environ(), "NIX_SSHOPTS="+strings.Join(cfg.SSH().Options(host, true), " "))
		out, err := cmd.CombinedOutput()
		if err != nil {
			return &exec.ExitError{ProcessState: cmd.ProcessState, Stderr: out}
		}
		return nil
	}

	// Nothing delivered yet: nothing is trusted, not even on first use.
	_, _, err := r.Kubeconfig(ctx, p.c)
	refused("kubeconfig before any delivery", err)

	// s1's delivery pins the key its installer reported; the kubeconfig fetch then reaches s1 with it.
	if j := deliver("s1", s1); j.Status != "succeeded" {
		t.Fatalf("delivery to s1: %s %v\n%s", j.Status, j.Error, j.Log)
	}
	data, from, err := r.Kubeconfig(ctx, p.c)
	if err != nil || from != "t-s1" || !strings.Contains(string(data), "server: https://"+s1.IP+":6443") {
		t.Fatalf("kubeconfig after s1's delivery: %v %q\n%s", err, from, data)
	}
	if _, host, _, err := r.ClusterClient(ctx, p.c); err != nil || !strings.Contains(host, s1.IP) {
		t.Errorf("cluster client: %q %v", host, err)
	}
	if data, _ := os.ReadFile(empty); len(data) != 0 {
		t.Errorf("--known-hosts was written: %q", data)
	}

	// The agent's join token is made on s1, reached with s1's key from the database alone.
	j := deliver("a1", a1)
	if j.Status != "succeeded" || !strings.Contains(j.Log, "join token ") {
		t.Fatalf("delivery to a1: %s %v\n%s", j.Status, j.Error, j.Log)
	}
	var res DeliverResult
	raw, _ := st.JobResult(ctx, j.ID)
	json.Unmarshal(raw, &res)
	if res.HostKey != hostKey(t, a1) || !res.JoinTokenRevoked {
		t.Errorf("a1's result: %s", raw)
	}

	// The rollout's ssh: both members, with their keys from the database, through NIX_SSHOPTS.
	cfg, done, err := r.configFor(ctx, p.c)
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range []*sshtest.Node{s1, a1} {
		if err := nixosRebuildSSH(cfg, node); err != nil {
			t.Errorf("nixos-rebuild's ssh to %s: %v: %s", node.Name, err, err.(*exec.ExitError).Stderr)
		}
	}
	command := cfg.knownHostsCommand
	done()
	if _, err := os.Stat(command); !os.IsNotExist(err) {
		t.Errorf("the members' keys outlived the operation: %v", err)
	}

	// a1 now presents another host key (an impostor on its address, or a system that is not the one
	// installed): refused.
	other := filepath.Join(t.TempDir(), "other")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", other).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	priv, _ := os.ReadFile(other)
	pub, _ := os.ReadFile(other + ".pub")
	a1.WriteFile(t, "/etc/ssh/ssh_host_ed25519_key", string(priv), 0o600)
	a1.WriteFile(t, "/etc/ssh/ssh_host_ed25519_key.pub", string(pub), 0o644)
	a1.Reboot(t)
	cfg, done, err = r.configFor(ctx, p.c)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	_, err = cfg.SSH().Run(ctx, remote.HostOf(p.c.Members["a1"]), "true")
	refused("a1 with another key", err)
	if _, err := cfg.SSH().Run(ctx, remote.HostOf(p.c.Members["s1"]), "true"); err != nil {
		t.Errorf("s1: %v", err)
	}

	// A machine installed again, or locked, is trusted no more.
	if _, err := st.ArmInstall(ctx, "op", macs["a1"], 0, "reinstall"); err != nil {
		t.Fatal(err)
	}
	locked := true
	if _, err := st.UpdateMachine(ctx, "op", macs["s1"], store.MachineChange{Locked: &locked, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if keys, err := st.MemberHostKeys(ctx, "t"); err != nil || len(keys) != 0 {
		t.Errorf("keys of a reinstalled and a locked machine: %+v %v", keys, err)
	}
	_, _, err = r.Kubeconfig(ctx, p.c)
	refused("kubeconfig from a locked machine", err)
}
