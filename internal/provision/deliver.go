package provision

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/nix8s/nix8s/internal/remote"
	"github.com/nix8s/nix8s/internal/wait"
)

// Deliverer writes files on a member that has just been installed, reaching it with its new host key only.
// It is the seam between Install and ssh (Pinned).
type Deliverer interface {
	// Deliver waits until host answers over ssh with hostKey (`<type> <base64>`), then writes files there,
	// each 0600 owned by root, and restarts k3s.service when files were written and the unit exists. With no
	// files it only waits.
	Deliver(ctx context.Context, host remote.Host, hostKey string, files []File) (Delivered, error)
}

// Delivered is what a delivery did.
type Delivered struct {
	// Files are the files written (paths and which secret, never the values).
	Files []File
	// K3sRestarted says whether k3s.service existed and was restarted.
	K3sRestarted bool
	// RecordedIn is the known_hosts file the host key was recorded in; empty when not recorded.
	RecordedIn string
	// HostKey is the key the host answered ssh with (the pinned one); empty when it never answered with it.
	HostKey string
}

// Pinned is the Deliverer over the system ssh that accepts one host key and nothing else: a temporary
// known_hosts holding `<addr> <hostKey>` alone, no global known_hosts, no KnownHostsCommand,
// StrictHostKeyChecking=yes. It serves nix8s install (the key the install put on the member) and nix8sd's
// deliver-secrets jobs (the key a network installer reported).
type Pinned struct {
	// SSH gives the ssh config file and the timeouts; its known_hosts are not consulted. nil means
	// remote.SSH{}.
	SSH *remote.SSH
	// WaitTimeout bounds the wait for ssh with the key; default DefaultWaitTimeout.
	WaitTimeout time.Duration
	// WaitInterval is the pause between attempts; default DefaultWaitInterval.
	WaitInterval time.Duration
	// KeyFrom says whose key it is in messages: "the installer reported", "its install was given".
	KeyFrom string
	// Record, once the member answered with the key, makes it the host's key in SSH's known_hosts
	// (KnownHostsFile, else the user's first UserKnownHostsFile), so that later ssh connections accept the
	// installed system.
	Record bool
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// Deliver implements Deliverer.
func (p *Pinned) Deliver(ctx context.Context, host remote.Host, hostKey string, files []File) (Delivered, error) {
	var res Delivered
	log := p.Log
	if log == nil {
		log = io.Discard
	}
	from := p.KeyFrom
	if from == "" {
		from = "the installer reported"
	}
	base := p.SSH
	if base == nil {
		base = &remote.SSH{}
	}
	if err := remote.CheckHostKey(hostKey); err != nil {
		return res, fmt.Errorf("%s: the host key %s: %w; nothing delivered", host, from, err)
	}
	if len(files) > 0 && host.User != "" && host.User != "root" {
		return res, fmt.Errorf("%s: delivering token files needs root over ssh, and provisioning.nixos-anywhere.ssh.user is %q; deliver them by hand", host, host.User)
	}
	tmp, err := os.MkdirTemp("", "nix8s-deliver-*")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(tmp)
	known := filepath.Join(tmp, "known_hosts")
	if err := os.WriteFile(known, []byte(host.Addr+" "+hostKey+"\n"), 0o600); err != nil {
		return res, err
	}
	ssh := &remote.SSH{SSH: base.SSH, SCP: base.SCP, KnownHostsFile: known, OnlyKnownHostsFile: true,
		ConfigFile: base.ConfigFile, ConnectTimeout: base.ConnectTimeout, CommandTimeout: base.CommandTimeout}

	timeout, interval := p.WaitTimeout, p.WaitInterval
	if timeout <= 0 {
		timeout = DefaultWaitTimeout
	}
	if interval <= 0 {
		interval = DefaultWaitInterval
	}
	fmt.Fprintf(log, "nix8s: %s: waiting for ssh on %s with the host key %s (%s)\n", host, host.Addr, from, Fingerprint(hostKey))
	if err := waitSSH(ctx, ssh, host, from, timeout, interval); err != nil {
		return res, err
	}
	fmt.Fprintf(log, "nix8s: %s: ssh answers with the host key %s\n", host, from)
	res.HostKey = hostKey
	for _, f := range files {
		if err := writeFile(ctx, ssh, host, tmp, f); err != nil {
			return res, fmt.Errorf("%s: delivering %s (%s): %w", host, f.Path, f.Name, err)
		}
		res.Files = append(res.Files, f)
		fmt.Fprintf(log, "nix8s: %s: delivered %s (%s) with mode 0600\n", host, f.Path, f.Name)
	}
	if len(files) > 0 {
		// k3s started with the installed system, before its token file existed, and failed. Its NixOS unit
		// (nixos/modules/services/cluster/rancher/default.nix) has Restart=always and RestartSec=5s, so it
		// would come back on its own within seconds; the restart makes it pick the token up now, and
		// reset-failed clears a start limit it may have run into. --no-block: a server's unit is Type=notify
		// with TimeoutStartSec=0, so waiting for the start could take as long as joining takes.
		out, err := ssh.Run(ctx, host, `if command -v systemctl >/dev/null 2>&1 && systemctl cat k3s.service >/dev/null 2>&1; then
  systemctl reset-failed k3s.service 2>/dev/null || true
  systemctl --no-block restart k3s.service && echo restarted
else echo absent; fi`)
		if err != nil {
			return res, fmt.Errorf("%s: files delivered, but restarting k3s.service failed: %w", host, err)
		}
		if strings.TrimSpace(string(out)) == "restarted" {
			res.K3sRestarted = true
			fmt.Fprintf(log, "nix8s: %s: k3s.service restarted to read its token\n", host)
		} else {
			fmt.Fprintf(log, "nix8s: %s: no k3s.service on the node; nothing restarted\n", host)
		}
	}
	if p.Record {
		files, err := base.UserKnownHostsFiles(ctx, host)
		if err == nil {
			err = remote.RecordHostKey(ctx, files[0], host, hostKey)
		}
		if err != nil {
			return res, fmt.Errorf("%s: installed, but its new host key could not be recorded: %w; add `%s %s` to your known_hosts", host, err, host.Addr, hostKey)
		}
		res.RecordedIn = files[0]
		fmt.Fprintf(log, "nix8s: %s: recorded its host key in %s\n", host, files[0])
	}
	return res, nil
}

// waitSSH waits until `true` runs on host over ssh, within timeout.
func waitSSH(ctx context.Context, ssh *remote.SSH, host remote.Host, from string, timeout, interval time.Duration) error {
	last, err := wait.Poll(ctx, timeout, interval, func(ctx context.Context) error {
		_, err := ssh.Run(ctx, host, "true")
		return err
	})
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("%s: waiting for ssh: %w", host, ctx.Err())
	}
	var hint string
	if strings.Contains(last.Error(), "Host key verification failed") || strings.Contains(last.Error(), "IDENTIFICATION HAS CHANGED") {
		hint = "; the machine answers with another host key than its installer reported: if it still runs the installer, it did not reboot; otherwise it is not the machine that was installed"
		if from != "the installer reported" {
			hint = "; the machine answers with another host key than " + from + ": it is not the system that was installed, or that system's services.openssh.hostKeys has no ed25519 key at " + HostKeyPath
		}
	}
	return fmt.Errorf("%s: timed out after %s waiting for ssh with the host key %s; last answer: %v%s; nothing delivered",
		host, timeout, from, last, hint)
}

// writeFile writes f on host as the install path does: missing directories leading to it 0755, its own
// directory 0700 when created (an existing one keeps its mode but must be owned by root), the file 0600 owned
// by root, written through a temporary file beside it and renamed, so the node never sees half a file. The
// value goes over scp from a local 0600 file: it appears on no command line and in no log.
func writeFile(ctx context.Context, ssh *remote.SSH, host remote.Host, tmpDir string, f File) error {
	if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
		return fmt.Errorf("%q is not an absolute, clean file path", f.Path)
	}
	local, err := os.CreateTemp(tmpDir, "file-*")
	if err != nil {
		return err
	}
	_, werr := local.WriteString(f.Value)
	if cerr := local.Close(); werr == nil {
		werr = cerr
	}
	defer os.Remove(local.Name())
	if werr != nil {
		return werr
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	dir := path.Dir(f.Path)
	tmp := path.Join(dir, "."+path.Base(f.Path)+".nix8s-"+hex.EncodeToString(rnd[:]))
	q, qd, qt := remote.Quote(f.Path), remote.Quote(dir), remote.Quote(tmp)
	prepare := fmt.Sprintf(`set -e
umask 022
if [ ! -d %[1]s ]; then mkdir -p %[2]s; mkdir -m 0700 %[1]s; fi
if [ "$(stat -L -c %%u %[1]s)" != 0 ]; then echo "%[1]s is not owned by root; refusing to put a secret there" >&2; exit 1; fi
rm -f %[3]s
(umask 077 && : > %[3]s)`, qd, remote.Quote(path.Dir(dir)), qt)
	if _, err := ssh.Run(ctx, host, prepare); err != nil {
		return err
	}
	if err := ssh.Copy(ctx, host, local.Name(), tmp); err != nil {
		ssh.Run(context.WithoutCancel(ctx), host, "rm -f "+qt)
		return err
	}
	if _, err := ssh.Run(ctx, host, fmt.Sprintf("chown 0:0 %[1]s && chmod 0600 %[1]s && mv -f %[1]s %[2]s", qt, q)); err != nil {
		ssh.Run(context.WithoutCancel(ctx), host, "rm -f "+qt)
		return err
	}
	return nil
}

// Fingerprint is a host key's SHA256 fingerprint as ssh-keygen -l prints it.
func Fingerprint(key string) string {
	typ, b64, _ := strings.Cut(key, " ")
	blob, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return typ
	}
	sum := sha256.Sum256(blob)
	return typ + " SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}
