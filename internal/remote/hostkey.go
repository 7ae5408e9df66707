package remote

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// MaxHostKey bounds a public host key line (a 16384-bit RSA key is about 2.8 KB of base64).
const MaxHostKey = 4096

// hostKeyTypes are the host key types nix8s accepts from an installer.
var hostKeyTypes = []string{"ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"}

// CheckHostKey checks a public SSH host key as a known_hosts entry takes it: one line `<type> <base64>`
// (no comment), type ssh-ed25519, ecdsa-sha2-nistp256 or ssh-rsa, the base64 a key blob of that type, at
// most MaxHostKey bytes. Nothing else may pass: the key goes into a known_hosts file verbatim.
func CheckHostKey(key string) error {
	if len(key) > MaxHostKey {
		return fmt.Errorf("host key is %d bytes, more than %d", len(key), MaxHostKey)
	}
	typ, b64, ok := strings.Cut(key, " ")
	known := false
	for _, t := range hostKeyTypes {
		known = known || typ == t
	}
	if !ok || !known {
		return fmt.Errorf("host key must be `<type> <base64>` with type %s (the .pub file's first two fields)", strings.Join(hostKeyTypes, ", "))
	}
	blob, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || len(blob) < 4 {
		return fmt.Errorf("host key of type %s: the key is not base64 (the .pub file's second field, without a comment)", typ)
	}
	// The blob starts with its own type as an SSH string: a key of one type cannot pose as another.
	n := binary.BigEndian.Uint32(blob)
	if uint64(n) > uint64(len(blob)-4) || string(blob[4:4+n]) != typ {
		return fmt.Errorf("host key of type %s: the base64 does not hold an %s key", typ, typ)
	}
	return nil
}

// HostKeyPair is an ed25519 host key: the private key in OpenSSH's format, the public one as `<type> <base64>`.
type HostKeyPair struct {
	Private string
	Public  string
}

// NewHostKey generates an ed25519 host key with ssh-keygen.
func NewHostKey(ctx context.Context) (HostKeyPair, error) {
	dir, err := os.MkdirTemp("", "nix8s-hostkey-*")
	if err != nil {
		return HostKeyPair{}, err
	}
	defer os.RemoveAll(dir)
	f := filepath.Join(dir, "key")
	if err := keygen(ctx, "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", f); err != nil {
		return HostKeyPair{}, err
	}
	priv, err := os.ReadFile(f)
	if err != nil {
		return HostKeyPair{}, err
	}
	pub, err := os.ReadFile(f + ".pub")
	if err != nil {
		return HostKeyPair{}, err
	}
	return HostKeyPair{Private: string(priv), Public: publicLine(string(pub))}, nil
}

// PublicHostKey is the public half of an OpenSSH private key (ssh-keygen -y), as `<type> <base64>`.
func PublicHostKey(ctx context.Context, private string) (string, error) {
	dir, err := os.MkdirTemp("", "nix8s-hostkey-*")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	f := filepath.Join(dir, "key")
	if err := os.WriteFile(f, []byte(private), 0o600); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "ssh-keygen", "-y", "-f", f)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("not an unencrypted OpenSSH private key: ssh-keygen -y: %s", lastLine(stderr.String()+err.Error()))
	}
	pub := publicLine(string(out))
	if err := CheckHostKey(pub); err != nil {
		return "", err
	}
	return pub, nil
}

// publicLine is the first two fields of a .pub line: the key without its comment.
func publicLine(s string) string {
	f := strings.Fields(s)
	if len(f) < 2 {
		return strings.TrimSpace(s)
	}
	return f[0] + " " + f[1]
}

func keygen(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "ssh-keygen", args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return errors.New("ssh-keygen not found on PATH (it comes with the OpenSSH client)")
		}
		return fmt.Errorf("ssh-keygen %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// recordMu serialises RecordHostKey: members installed in parallel record into one known_hosts file.
var recordMu sync.Mutex

// RecordHostKey makes key the only key of host in the known_hosts file: the host's entries (under its
// address, or `[addr]:port` for another port than 22; hashed ones too) are removed with ssh-keygen -R,
// which keeps the previous contents as file.old, then `<name> <key>` is appended. A missing file, and its
// directory, are created (0600, 0700).
func RecordHostKey(ctx context.Context, file string, host Host, key string) error {
	if err := CheckHostKey(key); err != nil {
		return err
	}
	name := knownHostsName(host)
	recordMu.Lock()
	defer recordMu.Unlock()
	if _, err := os.Stat(file); err == nil {
		if err := keygen(ctx, "-R", name, "-f", file); err != nil {
			return fmt.Errorf("removing the old host key of %s from %s: %w", host, file, err)
		}
	} else if !os.IsNotExist(err) {
		return err
	} else if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "%s %s\n", name, key)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("recording the host key of %s in %s: %w", host, file, err)
	}
	return nil
}

// knownHostsName is how ssh looks host up in known_hosts: its address, `[addr]:port` for another port than 22.
func knownHostsName(host Host) string {
	if host.port() != 22 {
		return "[" + host.Addr + "]:" + itoa(host.port())
	}
	return host.Addr
}

// KnownHost is one host key to trust for a host.
type KnownHost struct {
	Host Host
	// Key is `<type> <base64>` (CheckHostKey).
	Key string
}

// addrRe is what a host's address may be in a known_hosts line written here: an IP address or a DNS name.
var addrRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.:-]*$`)

// WriteKnownHostsCommand writes path as a program (0700) that prints keys as known_hosts lines, each under
// its host's address (`[addr]:port` for another port than 22), for SSH.KnownHostsCommand. ssh runs it itself,
// without a shell, so path must be absolute, and it is one ssh_config word: no spaces, no % (ssh's tokens).
// Every key and address is checked first: nothing else may reach the file.
func WriteKnownHostsCommand(path string, keys []KnownHost) error {
	if !filepath.IsAbs(path) || strings.ContainsAny(path, " \t\n%\"'\\") {
		return fmt.Errorf("%q cannot be an ssh KnownHostsCommand: it must be an absolute path without spaces, quotes or %%", path)
	}
	var b strings.Builder
	b.WriteString("#!/bin/sh\n# nix8s: host keys to trust besides the known_hosts files (ssh KnownHostsCommand).\ncat <<'EOF'\n")
	for _, k := range keys {
		if err := CheckHostKey(k.Key); err != nil {
			return fmt.Errorf("the host key of %s: %w", k.Host, err)
		}
		if !addrRe.MatchString(k.Host.Addr) {
			return fmt.Errorf("the host key of %s: %q is not an address a known_hosts line can hold", k.Host, k.Host.Addr)
		}
		fmt.Fprintf(&b, "%s %s\n", knownHostsName(k.Host), k.Key)
	}
	b.WriteString("EOF\n")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o700)
	if err != nil {
		return err
	}
	_, err = f.WriteString(b.String())
	if err == nil {
		err = f.Chmod(0o700) // an existing file (os.CreateTemp's) keeps its mode otherwise
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
