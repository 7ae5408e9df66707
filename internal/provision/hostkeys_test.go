package provision

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix8s/nix8s/internal/progress"
	"github.com/nix8s/nix8s/internal/remote"
	"github.com/nix8s/nix8s/internal/sshtest"
)

// wrongKnownHosts is a known_hosts file that gives node a key it does not have (another node's).
func wrongKnownHosts(t *testing.T, n *sshtest.Net, node, other string) string {
	t.Helper()
	pub, err := os.ReadFile(n.Node(other).HostKeyFile() + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(f, []byte(n.Node(node).IP+" "+string(pub)), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// untouched fails the test when anything of an install reached node: its new host key, a token, the NixOS
// it leaves behind.
func untouched(t *testing.T, node *sshtest.Node) {
	t.Helper()
	upper := filepath.Join(node.Dir, "upper")
	for _, p := range []string{"etc/ssh/ssh_host_ed25519_key", "etc/NIXOS", strings.TrimPrefix(tokenPath, "/"), strings.TrimPrefix(agentTokenPath, "/")} {
		if _, err := os.Stat(filepath.Join(upper, p)); err == nil {
			t.Errorf("node %s got /%s", node.Name, p)
		}
	}
}

// The host key checks of an install over ssh, attacked on real sshd nodes with the nixos-anywhere stand-in,
// which starts every ssh with the real one's StrictHostKeyChecking=no and honours only the options that
// come before it.
func TestHostKeys(t *testing.T) {
	t.Parallel()
	e := setup(t, []string{"s1", "s2"}, []string{"a1", "a2"})
	ctx := context.Background()
	prog := filepath.Join(e.si.LocalBin, "nixos-anywhere")

	t.Run("an existing system whose key is not the known one is refused before anything is sent", func(t *testing.T) {
		o := e.options(&bytes.Buffer{})
		ssh := e.net.SSH()
		ssh.KnownHostsFile = wrongKnownHosts(t, e.net, "s1", "s2")
		o.Runner, o.Installer.(*NixosAnywhere).SSH, o.Deliverer.(*Pinned).SSH = ssh, ssh, ssh
		o.Members = []string{"s1"}
		r, err := Install(ctx, e.c, o)
		if err == nil || !strings.HasPrefix(err.Error(), "probing t-s1: ") || !strings.Contains(err.Error(), "Host key verification failed.") {
			t.Errorf("error %v", err)
		}
		if statuses(r) != "s1=failed" || len(e.si.Log(t)) != 0 {
			t.Errorf("report %s, nixos-anywhere ran: %q", statuses(r), e.si.Log(t))
		}
		untouched(t, e.net.Node("s1"))
	})

	t.Run("nixos-anywhere's own connection is checked too", func(t *testing.T) {
		// No probe first: the key may change between the probe and nixos-anywhere's connection.
		ssh := e.net.SSH()
		ssh.KnownHostsFile = wrongKnownHosts(t, e.net, "s1", "s2")
		var out bytes.Buffer
		na := &NixosAnywhere{Program: prog, SSH: ssh, Progress: progress.NewLines(&out), Timeout: time.Minute}
		files := []File{{Path: HostKeyPath, Name: "hostKey", Value: "not sent"}}
		err := na.Install(ctx, Step{HostName: "t-s1", Host: e.net.Host("s1"), Flake: "/src/flake", Files: files})
		want := "ssh refused the host key of the existing system at " + e.net.Node("s1").IP + " (Host key verification failed.); nixos-anywhere stopped, nothing more was sent: nothing was installed; known hosts: " + ssh.KnownHostsFile
		if err == nil || err.Error() != want {
			t.Errorf("error:\n%v\nwant:\n%s\n%s", err, want, out.String())
		}
		if log := strings.Join(e.si.Log(t), "\n"); !strings.Contains(log, "start t-s1 ") || strings.Contains(log, "connected t-s1") {
			t.Errorf("stand-in log:\n%s", log)
		}
		untouched(t, e.net.Node("s1"))
	})

	t.Run("a kexec installer with a key of its own gets nothing", func(t *testing.T) {
		e.si.SetKexecOwnKey(t, "t-s1")
		defer e.si.SetKexecOwnKey(t)
		r, err := Install(ctx, e.c, e.options(&bytes.Buffer{}))
		if err == nil || !strings.HasPrefix(err.Error(), "installing t-s1: ssh refused the host key of the kexec installer at "+e.net.Node("s1").IP+" (Host key verification failed.)") {
			t.Errorf("error %v", err)
		}
		if statuses(r) != "s1=failed s2=not-started a1=not-started a2=not-started" {
			t.Errorf("report %s", statuses(r))
		}
		if log := strings.Join(e.si.Log(t), "\n"); !strings.Contains(log, "connected t-s1 existing") || strings.Contains(log, "connected t-s1 installer") || strings.Contains(log, "copied t-s1") {
			t.Errorf("stand-in log:\n%s", log)
		}
		untouched(t, e.net.Node("s1"))
		// As the error says: a reboot returns it to its old system, and its old key.
		s1 := e.net.Node("s1")
		s1.Reboot(t)
		if pub, _ := os.ReadFile(s1.HostKeyFile() + ".pub"); !strings.HasPrefix(string(pub), s1.HostKey(t)) {
			t.Errorf("after the reboot s1 serves %s, not its old key %s", s1.HostKey(t), pub)
		}
	})

	t.Run("a node that comes back with another key gets no tokens", func(t *testing.T) {
		e.si.SetForeignKey(t, "t-s1")
		defer e.si.SetForeignKey(t)
		known, _ := os.ReadFile(e.net.KnownHostsFile)
		o := e.options(&bytes.Buffer{})
		o.Deliverer.(*Pinned).WaitTimeout = 2 * time.Second
		r, err := Install(ctx, e.c, o)
		if err == nil || !strings.HasPrefix(err.Error(), "t-s1: timed out after 2s waiting for ssh with the host key its install was given; last answer: ") ||
			!strings.HasSuffix(err.Error(), "the machine answers with another host key than its install was given: it is not the system that was installed, or that system's services.openssh.hostKeys has no ed25519 key at /etc/ssh/ssh_host_ed25519_key; nothing delivered") {
			t.Errorf("error %v", err)
		}
		if statuses(r) != "s1=failed s2=not-started a1=not-started a2=not-started" || r.Members[0].HostKey != "" {
			t.Errorf("report %s, host key %q", statuses(r), r.Members[0].HostKey)
		}
		s1 := e.net.Node("s1")
		if got := s1.Exec(t, "ls -A /var/lib/nix8s/secrets 2>&1 || true"); strings.Contains(got, "k3s") {
			t.Errorf("s1 got token files: %q", got)
		}
		// Its install put a key there, the node serves another: neither is recorded.
		if after, _ := os.ReadFile(e.net.KnownHostsFile); !bytes.Equal(after, known) {
			t.Errorf("known_hosts changed:\n%s\nwas:\n%s", after, known)
		}
		// The operator checks the key it serves by other means and records it, to go on.
		if err := remote.RecordHostKey(ctx, e.net.KnownHostsFile, e.net.Host("s1"), s1.HostKey(t)); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("the honest path: tokens arrive after the install, pinned to its key", func(t *testing.T) {
		var progress bytes.Buffer
		o := e.options(&progress)
		o.Reinstall = true
		r, err := Install(ctx, e.c, o)
		if err != nil {
			t.Fatalf("%v\n%s", err, progress.String())
		}
		for _, m := range r.Members {
			node := e.net.Node(m.Name)
			if got := node.HostKey(t); m.Status != Done || got != m.HostKey {
				t.Errorf("%s: %s, serves %s, report %s", m.Name, m.Status, got, m.HostKey)
			}
			if got := node.Exec(t, "cat "+agentTokenPath); got != "agent-secret" {
				t.Errorf("%s: agent token %q", m.Name, got)
			}
		}
		for _, l := range grep(e.si.Log(t), "file ") {
			if strings.Contains(l, "secret") {
				t.Errorf("a token went with the install: %s", l)
			}
		}
		// The token file was written after the node served the new key: the wait precedes each delivery.
		p := progress.String()
		if w, d := strings.Index(p, "nix8s: t-s1: ssh answers with the host key its install was given"), strings.Index(p, "nix8s: t-s1: delivered "+tokenPath); w < 0 || d < w {
			t.Errorf("progress:\n%s", p)
		}
	})

	t.Run("an operator's own host key in the extra files is the one pinned", func(t *testing.T) {
		dir := t.TempDir()
		k, err := remote.NewHostKey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(dir, "t-a1", "etc", "ssh"), 0o755)
		os.WriteFile(filepath.Join(dir, "t-a1", "etc", "ssh", "ssh_host_ed25519_key"), []byte(k.Private), 0o600)
		o := e.options(&bytes.Buffer{})
		o.Reinstall, o.ExtraFiles, o.Members = true, dir, []string{"a1"}
		r, err := Install(ctx, e.c, o)
		if err != nil || r.Members[0].HostKey != k.Public || e.net.Node("a1").HostKey(t) != k.Public {
			t.Errorf("%v: report %q, want %q", err, r.Members[0].HostKey, k.Public)
		}
		os.WriteFile(filepath.Join(dir, "t-a1", "etc", "ssh", "ssh_host_ed25519_key"), []byte("garbage"), 0o600)
		o.DryRun = true
		if _, err := Install(ctx, e.c, o); err == nil || !strings.HasPrefix(err.Error(), "t-a1: extra file /etc/ssh/ssh_host_ed25519_key: not an unencrypted OpenSSH private key") {
			t.Errorf("a broken key in the extra files: %v", err)
		}
	})

	t.Run("--ssh-option alone would not check: the stand-in, like nixos-anywhere, puts its defaults first", func(t *testing.T) {
		// What the ssh first on PATH is for: given the same options as --ssh-option only, the stand-in
		// connects to a node whose key known_hosts does not hold.
		wrong := wrongKnownHosts(t, e.net, "a2", "s2")
		cmd := exec.Command(prog, "--flake", "/src/flake#t-a2", "--target-host", "root@"+e.net.Node("a2").IP, "-i", e.net.KeyFile,
			"--ssh-option", "StrictHostKeyChecking=yes", "--ssh-option", "UserKnownHostsFile="+wrong)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("stand-in: %v\n%s", err, out)
		}
		if log := strings.Join(e.si.Log(t), "\n"); !strings.Contains(log, "connected t-a2 existing") {
			t.Errorf("the stand-in did not connect with its own defaults:\n%s", log)
		}
	})
}

// An install whose nixos-anywhere ran no ssh through the check is not trusted.
func TestNixosAnywhereWithoutTheCheck(t *testing.T) {
	prog := filepath.Join(t.TempDir(), "nixos-anywhere")
	// Stands for a nixos-anywhere that reaches the machine some other way than the ssh first on PATH.
	os.WriteFile(prog, []byte("#!/bin/sh\nexit 0\n"), 0o755)
	na := &NixosAnywhere{Program: prog, SSH: &remote.SSH{KnownHostsFile: filepath.Join(t.TempDir(), "known_hosts")}}
	err := na.Install(context.Background(), Step{HostName: "t-s1", Host: remote.Host{Name: "t-s1", Addr: "10.0.0.1"}, Flake: "."})
	want := prog + " ran no ssh through nix8s's host key check (its ssh is not the first ssh on PATH), so its connections may not have been checked; the token files are not delivered"
	if err == nil || err.Error() != want {
		t.Errorf("error %v\nwant %s", err, want)
	}
}
