package lima

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nix8s/nix8s/internal/provision"
)

// limactlBin is the real limactl (.ci/tools-lima.sh builds v1.2.2, the newest the Go module proxy here serves).
func limactlBin(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("limactl"); err == nil {
		return p
	}
	gopath, _ := exec.Command("go", "env", "GOPATH").Output()
	p := filepath.Join(strings.TrimSpace(string(gopath)), "bin", "limactl")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("limactl is not installed: run .ci/tools-lima.sh")
	}
	t.Skip("limactl is not installed (.ci/tools-lima.sh)")
	return ""
}

// asUser runs limactl as an unprivileged user with its own HOME and LIMA_HOME under dir: limactl refuses to
// run as root. As root that is nobody (setpriv), with dir and the binary made reachable for it.
func asUser(t *testing.T, dir, bin string, args ...string) (string, error) {
	t.Helper()
	env := []string{"HOME=" + dir, "LIMA_HOME=" + filepath.Join(dir, "lima"), "PATH=/usr/bin:/bin"}
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		cmd = exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "env"}, append(env, append([]string{bin}, args...)...)...)...)
	} else {
		cmd = exec.Command(bin, args...)
		cmd.Env = env
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Every member's instance file, as up writes it, passes Lima's own validation (`limactl validate`, which runs
// limayaml.Load and Validate) in a Lima home where the cluster's network exists, as up makes it.
func TestInstanceFilesPassLimactlValidate(t *testing.T) {
	bin := limactlBin(t)
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o711) // the test's own temporary root is 0700
	os.Chmod(dir, 0o777)
	own := filepath.Join(dir, "limactl")
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(own, b, 0o755); err != nil {
		t.Fatal(err)
	}
	s := newStandIn(t, devConfig(60100))
	if out, err := asUser(t, dir, own, "network", "create", s.View.Network.Name, "--gateway", s.View.Network.GatewayArg); err != nil {
		t.Fatalf("limactl network create: %v\n%s", err, out)
	}
	key := []provision.File{
		{Path: provision.HostKeyPath, Name: "hostKey", Value: "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n"},
		{Path: provision.HostKeyPath + ".pub", Name: "hostKey.pub", Value: "ssh-ed25519 AAAA x\n", Mode: 0o644},
	}
	// v1.2.2 predates portForwards' `static` (Lima 2.0), which plain mode needs to keep the API forward: that
	// field, and only that one, may be unknown to it.
	static := regexp.MustCompile(`unknown field \\"static\\"`)
	for _, m := range s.View.Members {
		m.Config = cloneWithPort(m.Config, *m.SSHPort)
		data, err := Render(m, "/nix/store/00000000000000000000000000000000-image/nixos.qcow2", key)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, m.Instance+".yaml")
		os.WriteFile(f, data, 0o644)
		out, err := asUser(t, dir, own, "validate", f)
		if err != nil || !strings.Contains(out, "OK") {
			t.Errorf("%s: limactl validate: %v\n%s\n%s", m.Instance, err, out, data)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "level=warning") && !static.MatchString(line) {
				t.Errorf("%s: limactl validate warns: %s", m.Instance, line)
			}
		}
	}

	// The check itself refuses what Lima refuses: a network that does not exist, a size it cannot parse.
	m := s.View.Members[0]
	for name, edit := range map[string]func(map[string]any){
		"unknown network": func(c map[string]any) { c["networks"] = []any{map[string]any{"lima": "nix8s-nope"}} },
		"bad memory":      func(c map[string]any) { c["memory"] = "4 gigs" },
	} {
		m.Config = cloneWithPort(s.View.Members[0].Config, 60100)
		edit(m.Config)
		data, _ := Render(m, "/nix/store/x/nixos.qcow2", nil)
		f := filepath.Join(dir, "bad.yaml")
		os.WriteFile(f, data, 0o644)
		if out, err := asUser(t, dir, own, "validate", f); err == nil {
			t.Errorf("%s: limactl validate passed it:\n%s", name, out)
		}
	}
}
