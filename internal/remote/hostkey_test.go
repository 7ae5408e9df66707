package remote

import (
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
