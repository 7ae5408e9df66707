package remote

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckHostKey(t *testing.T) {
	const ed = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOvD8Dx1Tm0iULqKVZ1m2ZfmoTqHcTdk3GJ0hZr9Z4Zb"
	good := []string{ed}
	if _, err := exec.LookPath("ssh-keygen"); err == nil {
		for _, typ := range []string{"ecdsa", "rsa"} {
			f := filepath.Join(t.TempDir(), "k")
			if out, err := exec.Command("ssh-keygen", "-q", "-t", typ, "-N", "", "-C", "", "-f", f).CombinedOutput(); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			pub, _ := os.ReadFile(f + ".pub")
			good = append(good, strings.TrimSpace(string(pub)))
		}
	}
	for _, k := range good {
		if err := CheckHostKey(k); err != nil {
			t.Errorf("%q: %v", k, err)
		}
	}
	bad := []string{
		"",
		"ssh-ed25519",
		ed + " root@nixos",
		ed + "\n10.0.0.1 ssh-ed25519 AAAA",
		"ssh-dss " + strings.Fields(ed)[1],
		"ssh-rsa " + strings.Fields(ed)[1], // an ed25519 blob under another type
		"ssh-ed25519 not!base64",
		"ssh-ed25519 " + strings.Repeat("A", MaxHostKey),
		" " + ed,
	}
	for _, k := range bad {
		if err := CheckHostKey(k); err == nil {
			t.Errorf("%q accepted", k)
		}
	}
}

func TestNewHostKeyAndRecord(t *testing.T) {
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skip("ssh-keygen not installed")
	}
	ctx := context.Background()
	k, err := NewHostKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckHostKey(k.Public); err != nil || !strings.HasPrefix(k.Public, "ssh-ed25519 ") {
		t.Errorf("public key %q: %v", k.Public, err)
	}
	if pub, err := PublicHostKey(ctx, k.Private); err != nil || pub != k.Public {
		t.Errorf("PublicHostKey = %q, %v; want %q", pub, err, k.Public)
	}
	if _, err := PublicHostKey(ctx, "garbage"); err == nil {
		t.Error("garbage accepted as a private key")
	}

	// The host's old entries go, plain and hashed, under its address and not another port's; others stay.
	old, _ := NewHostKey(ctx)
	dir := t.TempDir()
	file := filepath.Join(dir, "known_hosts")
	os.WriteFile(file, []byte("10.0.0.1 "+old.Public+"\n10.0.0.2 "+old.Public+"\n[10.0.0.1]:2222 "+old.Public+"\n"), 0o600)
	hashed := filepath.Join(dir, "hashed")
	os.WriteFile(hashed, []byte("10.0.0.1 "+old.Public+"\n"), 0o600)
	if out, err := exec.Command("ssh-keygen", "-H", "-f", hashed).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	h, _ := os.ReadFile(hashed)
	os.WriteFile(file, append(h, []byte(mustRead(t, file))...), 0o600)
	if err := RecordHostKey(ctx, file, Host{Addr: "10.0.0.1"}, k.Public); err != nil {
		t.Fatal(err)
	}
	want := "10.0.0.2 " + old.Public + "\n[10.0.0.1]:2222 " + old.Public + "\n10.0.0.1 " + k.Public + "\n"
	if got := mustRead(t, file); got != want {
		t.Errorf("known_hosts:\n%s\nwant:\n%s", got, want)
	}
	if err := RecordHostKey(ctx, file, Host{Addr: "10.0.0.1", Port: 2222}, k.Public); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, file); !strings.HasSuffix(got, "\n[10.0.0.1]:2222 "+k.Public+"\n") || strings.Count(got, old.Public) != 1 || strings.Count(got, "[10.0.0.1]:2222") != 1 {
		t.Errorf("known_hosts after the port-2222 record:\n%s", got)
	}
	// A missing file and directory are made.
	fresh := filepath.Join(dir, "new", "known_hosts")
	if err := RecordHostKey(ctx, fresh, Host{Addr: "10.0.0.3"}, k.Public); err != nil || mustRead(t, fresh) != "10.0.0.3 "+k.Public+"\n" {
		t.Errorf("fresh file: %v", err)
	}
	if err := RecordHostKey(ctx, fresh, Host{Addr: "10.0.0.3"}, k.Public+"\n10.0.0.9 "+k.Public); err == nil {
		t.Error("a key with a second line accepted")
	}
}

func mustRead(t *testing.T, f string) string {
	t.Helper()
	data, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestHostKeyOptions(t *testing.T) {
	h := Host{Addr: "10.0.0.1"}
	if got := strings.Join((&SSH{}).HostKeyOptions(h, []string{"/home/u/.ssh/known_hosts", "/home/u/.ssh/known_hosts2"}), " "); got != "-o StrictHostKeyChecking=yes -o UserKnownHostsFile=/home/u/.ssh/known_hosts /home/u/.ssh/known_hosts2 -o UpdateHostKeys=no" {
		t.Errorf("user's files: %s", got)
	}
	if got := strings.Join((&SSH{ConfigFile: "none", KnownHostsFile: "/k", OnlyKnownHostsFile: true}).HostKeyOptions(h, []string{"/ignored"}), " "); got != "-F none -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/k -o GlobalKnownHostsFile=/dev/null -o KnownHostsCommand=none -o HostKeyAlias=10.0.0.1 -o UpdateHostKeys=no" {
		t.Errorf("pinned: %s", got)
	}
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("ssh not installed")
	}
	// Without KnownHostsFile the user's files are what ssh -G says for the host, config included.
	cfg := filepath.Join(t.TempDir(), "ssh_config")
	os.WriteFile(cfg, []byte("Host 10.0.0.1\n  UserKnownHostsFile /srv/a /srv/b\n"), 0o644)
	got, err := (&SSH{ConfigFile: cfg}).UserKnownHostsFiles(context.Background(), h)
	if err != nil || strings.Join(got, " ") != "/srv/a /srv/b" {
		t.Errorf("UserKnownHostsFiles = %q, %v", got, err)
	}
	got, err = (&SSH{ConfigFile: cfg, KnownHostsFile: "/k"}).UserKnownHostsFiles(context.Background(), h)
	if err != nil || strings.Join(got, " ") != "/k" {
		t.Errorf("with KnownHostsFile: %q, %v", got, err)
	}
}
