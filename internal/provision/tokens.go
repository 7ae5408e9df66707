package provision

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/secrets"
)

// Tokens are the k3s cluster token and agent token of a cluster: the secrets file's (nix8s gen-secrets,
// secrets.Load), the one tokens type.
type Tokens = secrets.Tokens

// File is one file written on a member: with the install (nixos-anywhere --extra-files: the host key, the
// extra files) or over ssh after its first boot (the token files).
type File struct {
	// Path is where the file lands on the node (the plan's k3s.tokenFile or agentTokenFile).
	Path string `json:"path"`
	// Name is which secret it holds: "token" or "agentToken", "extra" for a file of Options.ExtraFiles,
	// "hostKey" or "hostKey.pub" for the installed system's ssh host key.
	Name string `json:"name"`
	// Value is the content.
	Value string `json:"-"`
	// Mode is the file's mode; 0 means 0600.
	Mode os.FileMode `json:"-"`
}

// mode is the file's mode, 0600 unless Mode says otherwise.
func (f File) mode() os.FileMode {
	if f.Mode == 0 {
		return 0o600
	}
	return f.Mode
}

// TokenFiles are the token files member m gets. Servers get the cluster token at k3s.tokenFile and the agent
// token at k3s.agentTokenFile. Agents get only the agent token, at their k3s.tokenFile; only when the plan has
// no agent token (the user brought a cluster token file and no agent token file) do they join with the cluster
// token, as k3s then requires.
func TokenFiles(c core.Cluster, m string, t Tokens) ([]File, error) {
	mem := c.Members[m]
	agentPath := ""
	for _, s := range c.Servers {
		if p := c.Members[s].K3s.AgentTokenFile; p != nil {
			agentPath = *p
			break
		}
	}
	var files []File
	add := func(p, name, value string) error {
		if p == "" {
			return nil
		}
		if !path.IsAbs(p) || path.Clean(p) != p {
			return fmt.Errorf("clusters.%s.members.%s: token file %q must be an absolute, clean path", c.Name, m, p)
		}
		if value == "" {
			return fmt.Errorf("clusters.%s.members.%s: no %s to deliver to %s", c.Name, m, name, p)
		}
		files = append(files, File{Path: p, Name: name, Value: value})
		return nil
	}
	if mem.Role == "server" {
		if err := add(mem.K3s.TokenFile, "token", t.Token); err != nil {
			return nil, err
		}
		if mem.K3s.AgentTokenFile != nil {
			if err := add(*mem.K3s.AgentTokenFile, "agentToken", t.AgentToken); err != nil {
				return nil, err
			}
		}
		return files, nil
	}
	if agentPath != "" && mem.K3s.TokenFile == agentPath {
		return files, add(mem.K3s.TokenFile, "agentToken", t.AgentToken)
	}
	if agentPath != "" {
		return nil, fmt.Errorf("clusters.%s.members.%s: agent token file %q is not the servers' agent token file %q; refusing to guess which token it holds", c.Name, m, mem.K3s.TokenFile, agentPath)
	}
	return files, add(mem.K3s.TokenFile, "token", t.Token)
}

// MemberExtraFiles are the files under dir/<hostName>/, laid out as the member's root (an age key at
// dir/prod-server1/var/lib/sops-nix/key.txt lands at /var/lib/sops-nix/key.txt on prod-server1 only). A
// missing directory means none; symlinks and other non-regular files are refused.
func MemberExtraFiles(dir, hostName string) ([]File, error) {
	if dir == "" {
		return nil, nil
	}
	root := filepath.Join(dir, hostName)
	if _, err := os.Stat(root); os.IsNotExist(err) {
		return nil, nil
	}
	var files []File
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file; extra files are copied as plain files", p)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		files = append(files, File{Path: "/" + filepath.ToSlash(rel), Name: "extra", Value: string(data)})
		return nil
	})
	return files, err
}
