package lima

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The guest's init program (modules/nixos/nix8s-lima-init.sh), run here against a fake cidata tree laid out as
// Lima v2.2's pkg/cidata writes it (lima.env, user-data, meta-data, provision.data/<8 digits>); the real disk
// needs a Lima VM booting NixOS, which cannot run here.
const initScript = "../../modules/nixos/nix8s-lima-init.sh"

type cidata struct {
	iid      bool // Lima >= 2.1 writes LIMA_CIDATA_IID
	user     string
	uid      string
	keys     []string
	dataPath string // the path of provision data 00000001 (00000000 is the host key)
}

func writeCidata(t *testing.T, c cidata) (mnt string) {
	t.Helper()
	mnt = t.TempDir()
	env := []string{"LIMA_CIDATA_DEBUG=false", "LIMA_CIDATA_NAME=nix8s-dev-server", "LIMA_CIDATA_USER=" + c.user, "LIMA_CIDATA_UID=" + c.uid,
		"LIMA_CIDATA_COMMENT=Lima user with spaces", "LIMA_CIDATA_HOME=/home/lima", "LIMA_CIDATA_SHELL=/bin/bash",
		"LIMA_CIDATA_DATAFILE_00000000_OVERWRITE=true", "LIMA_CIDATA_DATAFILE_00000000_OWNER=root:root",
		"LIMA_CIDATA_DATAFILE_00000000_PATH=/etc/ssh/ssh_host_ed25519_key", "LIMA_CIDATA_DATAFILE_00000000_PERMISSIONS=600",
		"LIMA_CIDATA_DATAFILE_00000001_OVERWRITE=true", "LIMA_CIDATA_DATAFILE_00000001_OWNER=root:root",
		"LIMA_CIDATA_DATAFILE_00000001_PATH=" + c.dataPath, "LIMA_CIDATA_DATAFILE_00000001_PERMISSIONS=644",
		"LIMA_CIDATA_PLAIN=1"}
	if c.iid {
		env = append([]string{"LIMA_CIDATA_IID=iid-1764640000"}, env...)
	}
	userData := "#cloud-config\n# vim:syntax=yaml\n\ngrowpart:\n  mode: auto\n  devices: ['/']\n\nusers:\n  - name: \"" + c.user + "\"\n    uid: \"" + c.uid + "\"\n" +
		"    homedir: \"/home/lima\"\n    shell: /bin/bash\n    sudo: ALL=(ALL) NOPASSWD:ALL\n    lock_passwd: true\n    ssh-authorized-keys:\n"
	for _, k := range c.keys {
		userData += "      - \"" + k + "\"\n"
	}
	userData += "write_files:\n - content: |\n      #!/bin/sh\n      - \"not a key\"\n"
	files := map[string]string{
		"lima.env":                strings.Join(env, "\n") + "\n",
		"user-data":               userData,
		"meta-data":               "instance-id: iid-1764640000\nlocal-hostname: lima-nix8s-dev-server\n",
		"provision.data/00000000": "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----\n",
		"provision.data/00000001": "something else\n",
	}
	for name, content := range files {
		p := filepath.Join(mnt, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return mnt
}

type guestRun struct {
	run, keys, root string
	out             string
	err             error
}

func runInit(t *testing.T, mnt string) guestRun {
	t.Helper()
	dir := t.TempDir()
	g := guestRun{run: filepath.Join(dir, "run"), keys: filepath.Join(dir, "run", "nix8s-lima", "keys"), root: filepath.Join(dir, "root")}
	os.MkdirAll(g.run, 0o755)
	cmd := exec.Command("sh", initScript)
	cmd.Env = append(os.Environ(), "LIMA_CIDATA_MNT="+mnt, "NIX8S_LIMA_RUN="+g.run, "NIX8S_LIMA_KEYS="+g.keys, "NIX8S_LIMA_ROOT="+g.root)
	out, err := cmd.CombinedOutput()
	g.out, g.err = string(out), err
	return g
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestGuestInit(t *testing.T) {
	keys := []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeLimaKey lima", "ssh-rsa AAAAB3Fake second key"}
	for _, tc := range []struct {
		name string
		iid  bool
		want string // the signal files
	}{
		{"Lima 2.1 and later: the instance id", true, "iid-1764640000\n"},
		{"Lima before 2.1: a copy of meta-data", false, "instance-id: iid-1764640000\nlocal-hostname: lima-nix8s-dev-server\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := runInit(t, writeCidata(t, cidata{iid: tc.iid, user: "lima", uid: "2999", keys: keys, dataPath: "/etc/shadow"}))
			if g.err != nil {
				t.Fatalf("%v\n%s", g.err, g.out)
			}
			for _, s := range []string{"lima-ssh-ready", "lima-boot-done"} {
				if got := read(t, filepath.Join(g.run, s)); got != tc.want {
					t.Errorf("%s = %q, want %q", s, got, tc.want)
				}
			}
			for _, u := range []string{"lima", "root"} {
				if got, want := read(t, filepath.Join(g.keys, u)), strings.Join(keys, "\n")+"\n"; got != want {
					t.Errorf("keys of %s = %q, want %q (only the ssh-authorized-keys list)", u, got, want)
				}
			}
			hk := filepath.Join(g.root, "etc/ssh/ssh_host_ed25519_key")
			if info, err := os.Stat(hk); err != nil || info.Mode().Perm() != 0o600 || !strings.Contains(read(t, hk), "PRIVATE KEY") {
				t.Errorf("host key: %v %v", info, err)
			}
			if _, err := os.Stat(filepath.Join(g.root, "etc/shadow")); err == nil {
				t.Errorf("provision data for /etc/shadow was installed; only the host key may be")
			}
			if !strings.Contains(g.out, "ignoring provision data 00000001 for /etc/shadow") {
				t.Errorf("no note of the ignored data file:\n%s", g.out)
			}
		})
	}
}

// A Lima user other than the one the configuration declares, or no keys, fails the boot: no boot-done, so
// `limactl start` fails instead of a VM nobody can log in to.
func TestGuestInitRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    cidata
		want string
	}{
		{"another user", cidata{iid: true, user: "alice", uid: "501", keys: []string{"ssh-ed25519 AAAA k"}},
			"error: Lima's user is alice (uid 501), but this system declares lima (uid 2999)"},
		{"no keys", cidata{iid: true, user: "lima", uid: "2999"}, "error: user-data has no ssh-authorized-keys"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := runInit(t, writeCidata(t, tc.c))
			if g.err == nil || !strings.Contains(g.out, tc.want) {
				t.Errorf("err %v, output %q, want %q", g.err, g.out, tc.want)
			}
			if _, err := os.Stat(filepath.Join(g.run, "lima-boot-done")); err == nil {
				t.Errorf("lima-boot-done written despite the error")
			}
		})
	}
}

// The script passes shellcheck as POSIX sh and as the bash writeShellApplication runs it with.
func TestGuestInitShellcheck(t *testing.T) {
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("shellcheck is not installed (apt-get install shellcheck)")
		}
		t.Skip("shellcheck is not installed")
	}
	for _, shell := range []string{"sh", "bash"} {
		if out, err := exec.Command(sc, "--shell="+shell, initScript).CombinedOutput(); err != nil {
			t.Errorf("shellcheck --shell=%s: %v\n%s", shell, err, out)
		}
	}
}
