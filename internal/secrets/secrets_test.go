package secrets

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nix8s/nix8s/internal/core"
)

func TestGenerateLayout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	res, err := Generate(context.Background(), Options{Dir: dir, Cluster: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Encrypted || res.Path != filepath.Join(dir, "prod.yaml") || len(res.Created) != 3 {
		t.Errorf("result %+v", res)
	}
	for name, mode := range map[string]os.FileMode{"": 0o700, ".gitignore": 0o644, ".sops.yaml": 0o644, "README.md": 0o644, "prod.yaml": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, err %v; want %o", name, fi.Mode().Perm(), err, mode)
		}
	}
	gi, _ := os.ReadFile(filepath.Join(dir, ".gitignore"))
	if !strings.Contains(string(gi), "\n*\n!.gitignore\n!.sops.yaml\n!README.md\n") {
		t.Errorf(".gitignore:\n%s", gi)
	}
	tok, err := Load(context.Background(), dir, "prod", "")
	if err != nil {
		t.Fatal(err)
	}
	hex64 := regexp.MustCompile(`^[0-9a-f]{64}$`)
	if !hex64.MatchString(tok.Token) || !hex64.MatchString(tok.AgentToken) || tok.Token == tok.AgentToken {
		t.Errorf("tokens %+v", tok)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 4 {
		t.Errorf("files in %s: %v", dir, entries)
	}

	t.Run("never overwrites without --force", func(t *testing.T) {
		_, err := Generate(context.Background(), Options{Dir: dir, Cluster: "prod"})
		var h *core.HintError
		want := dir + `/prod.yaml already exists; not overwriting the tokens of cluster "prod"`
		if err == nil || err.Error() != want || !errors.As(err, &h) {
			t.Fatalf("error %v, want %s", err, want)
		}
		if again, _ := Load(context.Background(), dir, "prod", ""); again != tok {
			t.Errorf("tokens changed")
		}
	})
	t.Run("--force replaces the tokens, not the layout", func(t *testing.T) {
		os.WriteFile(filepath.Join(dir, "README.md"), []byte("mine\n"), 0o644)
		res, err := Generate(context.Background(), Options{Dir: dir, Cluster: "prod", Force: true})
		if err != nil || len(res.Created) != 0 {
			t.Fatalf("%+v %v", res, err)
		}
		if again, _ := Load(context.Background(), dir, "prod", ""); again == tok {
			t.Errorf("tokens unchanged")
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "README.md")); string(b) != "mine\n" {
			t.Errorf("README overwritten")
		}
	})
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("entropy ran out")
	}
	n := min(len(p), r.n)
	r.n -= n
	return n, nil
}

func TestNothingHalfWritten(t *testing.T) {
	t.Run("randomness fails after the first token", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "s")
		_, err := Generate(context.Background(), Options{Dir: dir, Cluster: "prod", Rand: &failingReader{n: 40}})
		if err == nil || err.Error() != "generating the agent token: entropy ran out" {
			t.Errorf("error %v", err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s was created", dir)
		}
	})
	t.Run("sops fails", func(t *testing.T) {
		dir := t.TempDir()
		bin := t.TempDir()
		// A sops that fails halfway: prints part of a document, then exits 1.
		os.WriteFile(filepath.Join(bin, "sops"), []byte("#!/bin/sh\necho 'token: ENC['\necho 'failed to encrypt: no key' >&2\nexit 1\n"), 0o755)
		old := []byte("token: old\nagentToken: old\n")
		os.WriteFile(filepath.Join(dir, "prod.yaml"), old, 0o600)
		_, err := Generate(context.Background(), Options{Dir: dir, Cluster: "prod", Force: true, AgeRecipients: []string{"age1xyz"}, Sops: filepath.Join(bin, "sops")})
		want := "encrypting " + dir + "/prod.yaml: sops: failed to encrypt: no key"
		if err == nil || err.Error() != want {
			t.Errorf("error %v, want %s", err, want)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "prod.yaml")); string(b) != string(old) {
			t.Errorf("prod.yaml changed to %q", b)
		}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.Contains(e.Name(), "tmp") {
				t.Errorf("left behind %s", e.Name())
			}
		}
	})
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name  string
		setup func()
		run   func() error
		want  string
		hint  string
	}{
		{name: "cluster name with a path in it", run: func() error {
			_, err := Generate(context.Background(), Options{Dir: dir, Cluster: "../prod"})
			return err
		}, want: `"../prod" is not a cluster name (lowercase letters, digits and '-')`},
		{name: "missing secrets", run: func() error {
			_, err := Load(context.Background(), dir, "prod", "")
			return err
		}, want: dir + `/prod.yaml: no such file: cluster "prod" has no secrets`, hint: "run 'nix8s gen-secrets prod' first, or --no-secrets when the token files reach the nodes another way"},
		{name: "malformed secrets", setup: func() { os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("token: [\n"), 0o600) }, run: func() error {
			_, err := Load(context.Background(), dir, "bad", "")
			return err
		}, want: dir + "/bad.yaml: not YAML: yaml: line 1: did not find expected node content"},
		{name: "secrets without agentToken", setup: func() { os.WriteFile(filepath.Join(dir, "half.yaml"), []byte("token: x\n"), 0o600) }, run: func() error {
			_, err := Load(context.Background(), dir, "half", "")
			return err
		}, want: dir + "/half.yaml: no agentToken"},
		{name: "recipients but no sops", run: func() error {
			_, err := Generate(context.Background(), Options{Dir: filepath.Join(dir, "r"), Cluster: "prod", AgeRecipients: []string{"age1xyz"}, Sops: "no-such-sops"})
			return err
		}, want: "sops not found on PATH, and the secrets are (to be) encrypted with sops/age", hint: "install sops (nix shell nixpkgs#sops, or go install github.com/getsops/sops/v3/cmd/sops@latest)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup()
			}
			err := tt.run()
			if err == nil || err.Error() != tt.want {
				t.Fatalf("error %v\nwant %s", err, tt.want)
			}
			var h *core.HintError
			if tt.hint != "" && (!errors.As(err, &h) || h.Hint != tt.hint) {
				t.Errorf("hint %v, want %s", h, tt.hint)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "r", "prod.yaml")); !os.IsNotExist(err) {
		t.Errorf("a plain file was written although encryption was asked for")
	}
}

// TestSopsAge encrypts with the real sops and age: needs sops and age-keygen on PATH.
func TestSopsAge(t *testing.T) {
	sops := requireTool(t, "sops", "go install github.com/getsops/sops/v3/cmd/sops@latest")
	keygen := requireTool(t, "age-keygen", "apt-get install age")
	dir := t.TempDir()
	key := filepath.Join(dir, "key.txt")
	if out, err := exec.Command(keygen, "-o", key).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	pub, err := exec.Command(keygen, "-y", key).Output()
	if err != nil {
		t.Fatal(err)
	}
	sdir := filepath.Join(dir, "secrets")
	res, err := Generate(context.Background(), Options{Dir: sdir, Cluster: "prod", AgeRecipients: []string{strings.TrimSpace(string(pub))}, Sops: sops})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(res.Path)
	if !res.Encrypted || !strings.Contains(string(data), "\nsops:\n") || !strings.Contains(string(data), "token: ENC[AES256_GCM,") {
		t.Fatalf("not encrypted:\n%s", data)
	}
	t.Setenv("SOPS_AGE_KEY_FILE", key)
	tok, err := Load(context.Background(), sdir, "prod", sops)
	if err != nil {
		t.Fatal(err)
	}
	if len(tok.Token) != 64 || strings.Contains(string(data), tok.Token) {
		t.Errorf("token %q (in the file in plain: %v)", tok.Token, strings.Contains(string(data), tok.Token))
	}
	t.Setenv("SOPS_AGE_KEY_FILE", filepath.Join(dir, "nokey"))
	if _, err := Load(context.Background(), sdir, "prod", sops); err == nil || err.Error() != "decrypting "+res.Path+": sops: Failed to get the data key required to decrypt the SOPS file." {
		t.Errorf("decrypting without the key: %v", err)
	}
}

func requireTool(t *testing.T, name, install string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		if home, _ := os.UserHomeDir(); home != "" {
			if _, err := os.Stat(filepath.Join(home, "go", "bin", name)); err == nil {
				return filepath.Join(home, "go", "bin", name)
			}
		}
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not on PATH and CI=true requires it: %s", name, install)
		}
		t.Skipf("%s is not on PATH (%s); skipping", name, install)
	}
	return p
}
