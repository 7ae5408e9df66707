package remote_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/remote"
	"github.com/nix8s/nix8s/internal/sshtest"
)

func TestSSH(t *testing.T) {
	n := sshtest.Start(t, "a", "b")
	ctx := context.Background()
	ssh := n.SSH()
	a := n.Host("a")

	out, err := ssh.Run(ctx, a, "echo $NIX8S_TEST_NODE; echo oops >&2")
	if err != nil || string(out) != "a\n" {
		t.Errorf("Run = %q, %v", out, err)
	}
	src := filepath.Join(t.TempDir(), "f")
	os.WriteFile(src, []byte("payload"), 0o600)
	if err := ssh.Copy(ctx, a, src, "/etc/copied"); err != nil {
		t.Fatal(err)
	}
	if got := n.Node("a").Exec(t, "cat /etc/copied"); got != "payload" {
		t.Errorf("copied %q", got)
	}

	wrongKeys := filepath.Join(t.TempDir(), "known_hosts")
	// b's key under a's address: a presents a different key.
	kh, _ := os.ReadFile(n.KnownHostsFile)
	lines := strings.Split(strings.TrimSpace(string(kh)), "\n")
	os.WriteFile(wrongKeys, []byte(n.Node("a").IP+" "+strings.SplitN(lines[1], " ", 2)[1]+"\n"), 0o644)

	tests := []struct {
		name    string
		runner  *remote.SSH
		host    remote.Host
		cmd     string
		want    string
		or      string // an equally right message
		unreach bool
	}{
		{name: "a failing command", runner: ssh, host: a, cmd: "echo bad >&2; exit 3",
			want: `a: "echo bad >&2; exit 3" exited with code 3: bad`},
		{name: "a changed host key is refused", runner: &remote.SSH{ConfigFile: "none", KnownHostsFile: wrongKeys}, host: a, cmd: "true",
			want: "a (" + a.Addr + ") is unreachable over ssh: Host key verification failed.", unreach: true},
		{name: "an unknown host key is refused, not accepted", runner: &remote.SSH{ConfigFile: "none", KnownHostsFile: filepath.Join(t.TempDir(), "empty")}, host: a, cmd: "true",
			want: "a (" + a.Addr + ") is unreachable over ssh: Host key verification failed.", unreach: true},
		{name: "a command that outlives its timeout", runner: &remote.SSH{ConfigFile: "none", KnownHostsFile: n.KnownHostsFile, CommandTimeout: 300 * time.Millisecond}, host: a, cmd: "sleep 5",
			want: `a: "sleep 5" timed out after 300ms`},
		{name: "nobody listening", runner: ssh, host: remote.Host{Name: "c", Addr: n.Prefix + ".250", KeyFile: n.KeyFile}, cmd: "true",
			want: "c (" + n.Prefix + ".250) is unreachable over ssh: ssh: connect to host " + n.Prefix + ".250 port 22: Connection timed out", unreach: true,
			// ConnectTimeout (2s) normally ends the wait before ARP gives up (3s); under load ARP may win.
			or: "c (" + n.Prefix + ".250) is unreachable over ssh: ssh: connect to host " + n.Prefix + ".250 port 22: No route to host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.runner.Run(ctx, tt.host, tt.cmd)
			var u *remote.UnreachableError
			if err == nil || (err.Error() != tt.want && (tt.or == "" || err.Error() != tt.or)) || errors.As(err, &u) != tt.unreach {
				t.Errorf("error %v\nwant %s", err, tt.want)
			}
		})
	}
}

func TestHostOf(t *testing.T) {
	key := "/k"
	tests := []struct {
		name       string
		ssh        core.SSH
		want       remote.Host
		wantTarget string
	}{
		{name: "the plan's defaults", ssh: core.SSH{Host: "10.0.0.1", Port: 22, User: "root"},
			want: remote.Host{Name: "dev-a", Addr: "10.0.0.1", User: "root", Port: 22}, wantTarget: "root@10.0.0.1"},
		{name: "all set", ssh: core.SSH{Host: "127.0.0.1", Port: 2222, User: "admin", KeyFile: &key},
			want: remote.Host{Name: "dev-a", Addr: "127.0.0.1", User: "admin", Port: 2222, KeyFile: "/k"}, wantTarget: "admin@127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The member's IP is not where it is reached: the endpoint is (a forwarded port, say).
			h := remote.HostOf(core.Member{Name: "a", HostName: "dev-a", IP: "10.9.9.9", SSH: tt.ssh})
			if h != tt.want || h.Target() != tt.wantTarget {
				t.Errorf("HostOf = %+v (%s), want %+v (%s)", h, h.Target(), tt.want, tt.wantTarget)
			}
		})
	}
}

func TestQuote(t *testing.T) {
	if got := remote.QuoteArgs("a", "b c", "it's", "#x", ".#host", ""); got != `a 'b c' 'it'\''s' '#x' .#host ''` {
		t.Errorf("QuoteArgs = %s", got)
	}
}

// OnlyKnownHostsFile pins the host keys to KnownHostsFile: a key the ssh config's global known_hosts holds
// is accepted without it and refused with it.
func TestOnlyKnownHostsFile(t *testing.T) {
	n := sshtest.Start(t, "a")
	ctx := context.Background()
	a := n.Host("a")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "ssh_config")
	os.WriteFile(cfg, []byte("GlobalKnownHostsFile "+n.KnownHostsFile+"\n"), 0o644)
	empty := filepath.Join(dir, "known_hosts")
	os.WriteFile(empty, nil, 0o644)
	if _, err := (&remote.SSH{ConfigFile: cfg, KnownHostsFile: empty}).Run(ctx, a, "true"); err != nil {
		t.Fatalf("the config's global known_hosts should let ssh in: %v", err)
	}
	_, err := (&remote.SSH{ConfigFile: cfg, KnownHostsFile: empty, OnlyKnownHostsFile: true}).Run(ctx, a, "true")
	if err == nil || !strings.Contains(err.Error(), "Host key verification failed") {
		t.Errorf("a key outside KnownHostsFile was accepted: %v", err)
	}
	if _, err := (&remote.SSH{ConfigFile: cfg, KnownHostsFile: n.KnownHostsFile, OnlyKnownHostsFile: true}).Run(ctx, a, "true"); err != nil {
		t.Errorf("the pinned key: %v", err)
	}
}

// KnownHostsCommand adds host keys to the known_hosts files, checked by the real ssh against real sshds: a
// host whose key only the command holds is reached (its key recorded nowhere), one whose address the command
// gives another key is refused, and the command is handed to programs that run ssh (HostKeyOptions).
func TestKnownHostsCommand(t *testing.T) {
	n := sshtest.Start(t, "a", "b")
	ctx := context.Background()
	a, b := n.Host("a"), n.Host("b")
	dir := t.TempDir()
	empty := filepath.Join(dir, "known_hosts")
	aKey, bKey := n.Node("a").HostKey(t), n.Node("b").HostKey(t)

	good := filepath.Join(dir, "good")
	os.WriteFile(good, nil, 0o600) // an existing file, as os.CreateTemp makes it, becomes a program
	if err := remote.WriteKnownHostsCommand(good, []remote.KnownHost{{Host: a, Key: aKey}}); err != nil {
		t.Fatal(err)
	}
	ssh := &remote.SSH{ConfigFile: "none", KnownHostsFile: empty, KnownHostsCommand: good, ConnectTimeout: 2 * time.Second}
	if out, err := ssh.Run(ctx, a, "echo $NIX8S_TEST_NODE"); err != nil || string(out) != "a\n" {
		t.Errorf("a, its key from the command: %q %v", out, err)
	}
	if _, err := os.Stat(empty); !os.IsNotExist(err) {
		data, _ := os.ReadFile(empty)
		t.Errorf("ssh recorded a key in the known_hosts file: %q", data)
	}
	// b has no key anywhere.
	var u *remote.UnreachableError
	if _, err := ssh.Run(ctx, b, "true"); !errors.As(err, &u) || !strings.Contains(err.Error(), "Host key verification failed") {
		t.Errorf("b, no key: %v", err)
	}
	// The command holds b's key under a's address: a presents another key and is refused.
	wrong := filepath.Join(dir, "wrong")
	if err := remote.WriteKnownHostsCommand(wrong, []remote.KnownHost{{Host: a, Key: bKey}}); err != nil {
		t.Fatal(err)
	}
	ssh.KnownHostsCommand = wrong
	if _, err := ssh.Run(ctx, a, "true"); !errors.As(err, &u) || !strings.Contains(err.Error(), "Host key verification failed") {
		t.Errorf("a, another key under its address: %v", err)
	}
	// The known_hosts file's keys still count beside the command's.
	ssh = &remote.SSH{ConfigFile: "none", KnownHostsFile: n.KnownHostsFile, KnownHostsCommand: good}
	if _, err := ssh.Run(ctx, b, "true"); err != nil {
		t.Errorf("b, its key in the known_hosts file: %v", err)
	}
	if got := strings.Join(ssh.HostKeyOptions(a, nil), " "); !strings.Contains(got, "-o KnownHostsCommand="+good) {
		t.Errorf("HostKeyOptions lack the command: %s", got)
	}
	// A pinned connection (OnlyKnownHostsFile) uses no command.
	ssh.OnlyKnownHostsFile = true
	if got := strings.Join(ssh.Options(a, true), " "); strings.Contains(got, good) || !strings.Contains(got, "KnownHostsCommand=none") {
		t.Errorf("pinned options: %s", got)
	}

	for _, tc := range []struct {
		name, path string
		keys       []remote.KnownHost
		want       string
	}{
		{name: "relative path", path: "keys", want: `"keys" cannot be an ssh KnownHostsCommand`},
		{name: "space in the path", path: filepath.Join(dir, "a b"), want: "without spaces"},
		{name: "a bad key", path: filepath.Join(dir, "bad"), keys: []remote.KnownHost{{Host: a, Key: "ssh-ed25519 AAAA\nevil"}}, want: "the host key of a: "},
		{name: "a bad address", path: filepath.Join(dir, "bad"), keys: []remote.KnownHost{{Host: remote.Host{Name: "x", Addr: "a b"}, Key: aKey}}, want: `"a b" is not an address`},
	} {
		if err := remote.WriteKnownHostsCommand(tc.path, tc.keys); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
