// Package secrets generates and reads a cluster's k3s tokens: secrets/<cluster>.yaml with `token` and
// `agentToken`, encrypted with sops/age when secrets/.sops.yaml names age recipients. The tokens reach the
// nodes as files at install time (the core's tokenFile flow), never through the Nix store.
package secrets

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/nix8s/nix8s/internal/atomicfile"
	"github.com/nix8s/nix8s/internal/core"
)

// Tokens are a cluster's k3s secrets.
type Tokens struct {
	// Token is the cluster token: servers hold it.
	Token string `yaml:"token"`
	// AgentToken is what agents join with; they never see Token.
	AgentToken string `yaml:"agentToken"`
}

// Options of Generate.
type Options struct {
	// Dir is the secrets directory; default "secrets".
	Dir string
	// Cluster names the file: <Dir>/<Cluster>.yaml.
	Cluster string
	// Force replaces an existing file (nodes installed with the old tokens then no longer join).
	Force bool
	// AgeRecipients go into a new .sops.yaml; an existing .sops.yaml is never changed.
	AgeRecipients []string
	// Sops is the sops binary; default "sops" on PATH.
	Sops string
	// Rand is the randomness; default crypto/rand.
	Rand io.Reader
}

// Result says what Generate wrote.
type Result struct {
	Path      string
	Encrypted bool
	Created   []string // layout files created now (.gitignore, .sops.yaml, README.md)
}

var label = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Path is the secrets file of cluster in dir.
func Path(dir, cluster string) string { return filepath.Join(dir, cluster+".yaml") }

// Generate makes new tokens for a cluster and writes them, creating the directory layout when missing. The
// file appears complete or not at all: it is written to a temporary file next to it and renamed.
func Generate(ctx context.Context, o Options) (*Result, error) {
	if o.Dir == "" {
		o.Dir = "secrets"
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if !label.MatchString(o.Cluster) {
		return nil, fmt.Errorf("%q is not a cluster name (lowercase letters, digits and '-')", o.Cluster)
	}
	path := Path(o.Dir, o.Cluster)
	if _, err := os.Lstat(path); err == nil && !o.Force {
		return nil, &core.HintError{
			Err:  fmt.Errorf("%s already exists; not overwriting the tokens of cluster %q", path, o.Cluster),
			Hint: "pass --force to replace them; members installed with the old tokens will no longer join",
		}
	}
	var t Tokens
	var err error
	if t.Token, err = token(o.Rand); err != nil {
		return nil, fmt.Errorf("generating the token: %w", err)
	}
	if t.AgentToken, err = token(o.Rand); err != nil {
		return nil, fmt.Errorf("generating the agent token: %w", err)
	}
	res := &Result{Path: path}
	if res.Created, err = Layout(o.Dir, o.AgeRecipients); err != nil {
		return nil, err
	}
	recipients, err := Recipients(filepath.Join(o.Dir, ".sops.yaml"))
	if err != nil {
		return nil, err
	}
	plain := fmt.Sprintf("# k3s tokens of cluster %s (nix8s gen-secrets). Servers get token, agents only agentToken.\ntoken: %s\nagentToken: %s\n", o.Cluster, t.Token, t.AgentToken)
	data := []byte(plain)
	if len(recipients) > 0 {
		sops, err := findSops(o.Sops)
		if err != nil {
			return nil, err
		}
		data, err = runSops(ctx, sops, []byte(plain), "--config", filepath.Join(o.Dir, ".sops.yaml"), "encrypt",
			"--input-type", "yaml", "--output-type", "yaml", "--filename-override", path)
		if err != nil {
			return nil, fmt.Errorf("encrypting %s: %w", path, err)
		}
		res.Encrypted = true
	}
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return nil, err
	}
	return res, nil
}

func token(r io.Reader) (string, error) {
	b := make([]byte, 32)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// Layout creates the secrets directory with .gitignore, .sops.yaml and README.md, each only when missing,
// and returns the files it created.
func Layout(dir string, ageRecipients []string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	sopsYAML := sopsTemplate
	if len(ageRecipients) > 0 {
		sopsYAML = strings.Replace(sopsTemplate, "    # age: age1...\n", "    age: "+strings.Join(ageRecipients, ",")+"\n", 1)
	}
	var created []string
	for _, f := range []struct{ name, content string }{
		{".gitignore", gitignore}, {".sops.yaml", sopsYAML}, {"README.md", readme},
	} {
		p := filepath.Join(dir, f.name)
		if _, err := os.Lstat(p); err == nil {
			continue
		}
		if err := atomicfile.Write(p, []byte(f.content), 0o644); err != nil {
			return created, err
		}
		created = append(created, p)
	}
	return created, nil
}

// Recipients are the age recipients of a .sops.yaml (creation_rules[].age and their key_groups); none when
// the file does not exist.
func Recipients(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var cfg struct {
		CreationRules []struct {
			Age       any `yaml:"age"`
			KeyGroups []struct {
				Age []string `yaml:"age"`
			} `yaml:"key_groups"`
		} `yaml:"creation_rules"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []string
	add := func(s string) {
		for _, r := range strings.Split(s, ",") {
			if r = strings.TrimSpace(r); r != "" {
				out = append(out, r)
			}
		}
	}
	for _, r := range cfg.CreationRules {
		switch a := r.Age.(type) {
		case string:
			add(a)
		case []any:
			for _, x := range a {
				if s, ok := x.(string); ok {
					add(s)
				}
			}
		}
		for _, g := range r.KeyGroups {
			for _, s := range g.Age {
				add(s)
			}
		}
	}
	return out, nil
}

// Load reads the tokens of cluster from dir, decrypting with sops when the file is encrypted (sops finds the
// age key through SOPS_AGE_KEY_FILE or its default location).
func Load(ctx context.Context, dir, cluster, sopsBin string) (Tokens, error) {
	path := Path(dir, cluster)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Tokens{}, &core.HintError{
			Err:  fmt.Errorf("%s: no such file: cluster %q has no secrets", path, cluster),
			Hint: fmt.Sprintf("run 'nix8s gen-secrets %s' first, or --no-secrets when the token files reach the nodes another way", cluster),
		}
	}
	if err != nil {
		return Tokens{}, err
	}
	var probe map[string]any
	if err := yaml.Unmarshal(data, &probe); err != nil {
		return Tokens{}, fmt.Errorf("%s: not YAML: %w", path, err)
	}
	if _, encrypted := probe["sops"]; encrypted {
		sops, err := findSops(sopsBin)
		if err != nil {
			return Tokens{}, err
		}
		args := []string{"decrypt", path}
		if _, err := os.Stat(filepath.Join(dir, ".sops.yaml")); err == nil {
			args = append([]string{"--config", filepath.Join(dir, ".sops.yaml")}, args...)
		}
		data, err = runSops(ctx, sops, nil, args...)
		if err != nil {
			return Tokens{}, &core.HintError{
				Err:  fmt.Errorf("decrypting %s: %w", path, err),
				Hint: "sops needs the age key of a recipient in " + filepath.Join(dir, ".sops.yaml") + ": set SOPS_AGE_KEY_FILE",
			}
		}
	}
	var t Tokens
	if err := yaml.Unmarshal(data, &t); err != nil {
		return Tokens{}, fmt.Errorf("%s: %w", path, err)
	}
	var missing []string
	if t.Token == "" {
		missing = append(missing, "token")
	}
	if t.AgentToken == "" {
		missing = append(missing, "agentToken")
	}
	if len(missing) > 0 {
		return Tokens{}, fmt.Errorf("%s: no %s", path, strings.Join(missing, " and no "))
	}
	return t, nil
}

func findSops(bin string) (string, error) {
	if bin == "" {
		bin = "sops"
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		return "", &core.HintError{
			Err:  fmt.Errorf("sops not found on PATH, and the secrets are (to be) encrypted with sops/age"),
			Hint: "install sops (nix shell nixpkgs#sops, or go install github.com/getsops/sops/v3/cmd/sops@latest)",
		}
	}
	return p, nil
}

func runSops(ctx context.Context, sops string, stdin []byte, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, sops, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("sops timed out after 1m0s")
		}
		// sops explains at length; its first line says what failed.
		msg, _, _ := strings.Cut(strings.TrimSpace(stderr.String()), "\n")
		if msg == "" {
			msg = err.Error()
		}
		return nil, fmt.Errorf("sops: %s", msg)
	}
	return stdout.Bytes(), nil
}

const gitignore = `# SECURITY: ignore everything by default; only encrypted files may be committed, and only by force:
#   git add --force secrets/<cluster>.yaml   (after checking it is encrypted: grep -q '^sops:' it)
*
!.gitignore
!.sops.yaml
!README.md
`

const sopsTemplate = `# sops configuration of the nix8s secrets (see README.md). With age recipients here, nix8s gen-secrets
# encrypts secrets/<cluster>.yaml; list the public keys of everyone (and every CI) that installs clusters.
creation_rules:
  - path_regex: '[^/]+\.yaml$'
    # age: age1...
`

const readme = `# Cluster secrets

` + "`nix8s gen-secrets CLUSTER`" + ` writes ` + "`CLUSTER.yaml`" + ` here: the k3s cluster ` + "`token`" + ` (servers only) and
` + "`agentToken`" + ` (what agents join with), 32 random bytes each, mode 0600.

- **Encryption.** Put age recipients in ` + "`.sops.yaml`" + ` (` + "`age-keygen -y key.txt`" + ` prints yours) and the file is
  encrypted with sops. Re-encrypt an existing plain file with ` + "`sops --encrypt --in-place CLUSTER.yaml`" + `.
  ` + "`nix8s install`" + ` decrypts it with sops (set ` + "`SOPS_AGE_KEY_FILE`" + `).
- **Git.** ` + "`.gitignore`" + ` blocks everything but this README, ` + "`.gitignore`" + ` and ` + "`.sops.yaml`" + `. Commit an
  encrypted file with ` + "`git add --force`" + `, never a plain one.
- **Delivery.** ` + "`nix8s install`" + ` hands the tokens to nixos-anywhere as files (` + "`--extra-files`" + `) at the plan's
  ` + "`k3s.tokenFile`" + `/` + "`agentTokenFile`" + ` paths (mode 0600). They never enter the Nix store: do not ` + "`import`" + `
  this file into Nix, and do not set ` + "`secrets.token`" + `.
- **Rotation.** ` + "`nix8s gen-secrets CLUSTER --force`" + ` replaces the tokens; installed members keep the old ones.
`
