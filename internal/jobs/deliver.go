package jobs

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/provision"
	"github.com/nix8s/nix8s/internal/remote"
	"github.com/nix8s/nix8s/internal/secrets"
	"github.com/nix8s/nix8s/internal/store"
)

// KindDeliverSecrets is the kind of the jobs that deliver a network-installed member's token files and extra
// files over ssh: the netboot installer carries no secrets, so they reach the node after its install, the way
// nixos-anywhere --extra-files delivers them to a node installed over ssh.
const KindDeliverSecrets = "deliver-secrets"

// DeliverParams are a deliver-secrets job's parameters; the job's cluster and member name the member.
type DeliverParams struct {
	// MAC is the machine that reported its install done.
	MAC string `json:"mac"`
	// HostKey is the installed system's public ssh host key as the installer reported it (`<type> <base64>`);
	// the only key the job's ssh connection accepts.
	HostKey string `json:"hostKey,omitempty"`
}

// DeliverResult is what a deliver-secrets job records.
type DeliverResult struct {
	Cluster  string `json:"cluster"`
	Member   string `json:"member"`
	HostName string `json:"hostName"`
	// Files are the delivered files (paths and which secret, never the values).
	Files []provision.File `json:"files"`
	// K3sRestarted says whether k3s.service existed and was restarted.
	K3sRestarted bool `json:"k3sRestarted"`
}

// QueueDeliverSecrets queues the delivery of member's files over ssh after the machine mac reported its
// network install done with hostKey (storeboot.Adapter.OnInstalled), and wakes the runner.
func (r *Runner) QueueDeliverSecrets(ctx context.Context, cluster, member, mac, hostKey string) (*store.Job, error) {
	params, err := json.Marshal(DeliverParams{MAC: mac, HostKey: hostKey})
	if err != nil {
		return nil, err
	}
	j, err := r.Store.NewJob(ctx, KindDeliverSecrets, &cluster, &member, params)
	if err != nil {
		return nil, err
	}
	r.Wake()
	return j, nil
}

// deliverSecrets is the handler of deliver-secrets jobs: the member's token files (from Config.SecretsDir) and
// extra files (Config.ExtraFiles) written on the node over ssh, each with mode 0600 in a root-owned
// directory, with the host key pinned to the one the installer reported; then k3s.service restarted.
func (r *Runner) deliverSecrets(ctx context.Context, j *store.Job, log io.Writer) (any, error) {
	var p DeliverParams
	if err := json.Unmarshal(j.Params, &p); err != nil {
		return nil, fmt.Errorf("reading the job's parameters: %w", err)
	}
	if j.Cluster == nil || j.Member == nil {
		return nil, errors.New("a deliver-secrets job needs a cluster and a member")
	}
	c, settings, err := r.Planner.ClusterPlan(ctx, *j.Cluster)
	if err != nil {
		return nil, err
	}
	mem, ok := c.Members[*j.Member]
	if !ok {
		return nil, fmt.Errorf("cluster %q has no member %q any more; nothing delivered", c.Name, *j.Member)
	}
	name := mem.HostName
	if p.MAC != "" {
		if err := r.checkMachine(ctx, p.MAC, c.Name, mem.Name); err != nil {
			return nil, err
		}
	}
	res := &DeliverResult{Cluster: c.Name, Member: mem.Name, HostName: name}

	cfg := r.Config
	var files []provision.File
	if cfg.SecretsDir == "" {
		fmt.Fprintf(log, "nix8s: %s: no secrets directory: no token files (they reach the node another way)\n", name)
	} else {
		t, err := secrets.Load(ctx, cfg.SecretsDir, c.Name, cfg.Sops)
		if err != nil {
			return nil, err
		}
		tf, err := provision.TokenFiles(c, mem.Name, provision.Tokens{Token: t.Token, AgentToken: t.AgentToken})
		if err != nil {
			return nil, err
		}
		files = append(files, tf...)
	}
	extra, err := provision.MemberExtraFiles(cfg.ExtraFiles, name)
	if err != nil {
		return nil, err
	}
	files = append(files, extra...)
	if len(files) == 0 {
		fmt.Fprintf(log, "nix8s: %s: nothing to deliver (no token files, no extra files)\n", name)
		return res, nil
	}

	if p.HostKey == "" {
		var paths []string
		for _, f := range files {
			paths = append(paths, f.Path)
		}
		return res, &core.HintError{
			Err: fmt.Errorf("%s: the installer reported no ssh host key, so the installed system cannot be told from an impostor and nix8sd does not trust a key on first use; nothing delivered", name),
			Hint: fmt.Sprintf("deliver %s by hand (mode 0600, owned by root), or reinstall with an installer that reports its host key",
				strings.Join(paths, ", ")),
		}
	}
	if err := remote.CheckHostKey(p.HostKey); err != nil {
		return res, fmt.Errorf("%s: the reported %w; nothing delivered", name, err)
	}
	if mem.IP == "" {
		return res, fmt.Errorf("%s: the member has no ip in the plan, so nix8sd cannot reach it to deliver its files; deliver them by hand", name)
	}
	host := settings.Host(name, mem.IP)
	if host.User != "" && host.User != "root" {
		return res, fmt.Errorf("%s: delivering token files needs root over ssh, and provisioning.nixos-anywhere.ssh.user is %q; deliver them by hand", name, host.User)
	}

	// A known_hosts file holding the reported key alone: ssh accepts nothing else (StrictHostKeyChecking=yes),
	// neither the global known_hosts nor the daemon's own.
	tmp, err := os.MkdirTemp("", "nix8s-deliver-*")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(tmp)
	known := filepath.Join(tmp, "known_hosts")
	if err := os.WriteFile(known, []byte(mem.IP+" "+p.HostKey+"\n"), 0o600); err != nil {
		return res, err
	}
	ssh := &remote.SSH{KnownHostsFile: known, OnlyKnownHostsFile: true, ConfigFile: cfg.SSHConfigFile, ConnectTimeout: cfg.ConnectTimeout}

	fmt.Fprintf(log, "nix8s: %s: waiting for ssh on %s with the host key the installer reported (%s)\n", name, mem.IP, fingerprint(p.HostKey))
	if err := waitSSH(ctx, ssh, host, cfg.waitTimeout(), cfg.waitInterval()); err != nil {
		return res, err
	}
	fmt.Fprintf(log, "nix8s: %s: ssh answers with the reported host key\n", name)
	for _, f := range files {
		if err := writeFile(ctx, ssh, host, tmp, f); err != nil {
			return res, fmt.Errorf("%s: delivering %s (%s): %w", name, f.Path, f.Name, err)
		}
		res.Files = append(res.Files, f)
		fmt.Fprintf(log, "nix8s: %s: delivered %s (%s) with mode 0600\n", name, f.Path, f.Name)
	}

	// k3s started with the installed system, before its token file existed, and failed. Its NixOS unit
	// (nixos/modules/services/cluster/rancher/default.nix) has Restart=always and RestartSec=5s, so it would
	// come back on its own within seconds; the restart makes it pick the token up now, and reset-failed
	// clears a start limit it may have run into. --no-block: a server's unit is Type=notify with
	// TimeoutStartSec=0, so waiting for the start could take as long as joining takes.
	out, err := ssh.Run(ctx, host, `if command -v systemctl >/dev/null 2>&1 && systemctl cat k3s.service >/dev/null 2>&1; then
  systemctl reset-failed k3s.service 2>/dev/null || true
  systemctl --no-block restart k3s.service && echo restarted
else echo absent; fi`)
	if err != nil {
		return res, fmt.Errorf("%s: files delivered, but restarting k3s.service failed: %w", name, err)
	}
	if strings.TrimSpace(string(out)) == "restarted" {
		res.K3sRestarted = true
		fmt.Fprintf(log, "nix8s: %s: k3s.service restarted to read its token\n", name)
	} else {
		fmt.Fprintf(log, "nix8s: %s: no k3s.service on the node; nothing restarted\n", name)
	}
	return res, nil
}

// checkMachine refuses a delivery for a machine that is no longer the member's.
func (r *Runner) checkMachine(ctx context.Context, mac, cluster, member string) error {
	m, err := r.Store.Machine(ctx, mac)
	if err != nil {
		return fmt.Errorf("machine %s: %w", mac, err)
	}
	if m.Cluster == nil || m.Member == nil || *m.Cluster != cluster || *m.Member != member {
		return fmt.Errorf("machine %s is no longer assigned to %s.%s; nothing delivered (queue the delivery for the member's new machine)", mac, cluster, member)
	}
	return nil
}

// waitSSH waits until `true` runs on host over ssh, within timeout.
func waitSSH(ctx context.Context, ssh *remote.SSH, host remote.Host, timeout, interval time.Duration) error {
	last, err := provision.Poll(ctx, timeout, interval, func(ctx context.Context) error {
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
	}
	return fmt.Errorf("%s: timed out after %s waiting for ssh with the reported host key; last answer: %v%s; nothing delivered",
		host, timeout, last, hint)
}

// writeFile writes f on host as the install path does: missing directories leading to it 0755, its own
// directory 0700 when created (an existing one keeps its mode but must be owned by root), the file 0600 owned
// by root, written through a temporary file beside it and renamed, so the node never sees half a file. The
// value goes over scp from a local 0600 file: it appears on no command line and in no log.
func writeFile(ctx context.Context, ssh *remote.SSH, host remote.Host, tmpDir string, f provision.File) error {
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

// fingerprint is a host key's SHA256 fingerprint as ssh-keygen -l prints it.
func fingerprint(key string) string {
	typ, b64, _ := strings.Cut(key, " ")
	blob, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return typ
	}
	sum := sha256.Sum256(blob)
	return typ + " SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}
