package lima

import (
	"fmt"
	"maps"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/nix8s/nix8s/internal/provision"
)

// Render is member's Lima instance file: the core's instance data, the image Lima copies into the instance
// (the member's own configuration as qcow2) and, as provision data Lima puts on the cidata disk, the host key
// files the guest module installs before sshd starts, so nix8s can pin the key Lima does not check. The file
// then holds a private key: it is written 0600 and Lima keeps its copy in the 0700 instance directory.
func Render(m Member, image string, files []provision.File) ([]byte, error) {
	doc := maps.Clone(m.Config)
	arch, _ := doc["arch"].(string)
	img := map[string]any{"location": image}
	if arch != "" {
		img["arch"] = arch
	}
	doc["images"] = []any{img}
	var prov []any
	for _, f := range files {
		if f.Path != provision.HostKeyPath && f.Path != provision.HostKeyPath+".pub" {
			return nil, fmt.Errorf("%s: %s cannot go into a Lima instance: the guest installs only the host key from cidata", m.HostName, f.Path)
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o600
		}
		prov = append(prov, map[string]any{
			"mode": "data", "path": f.Path, "owner": "root:root",
			"permissions": fmt.Sprintf("%o", mode), "overwrite": true, "content": f.Value,
		})
	}
	if len(prov) > 0 {
		doc["provision"] = prov
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# %s: written by nix8s lima up from the cluster config (lib/lima.nix); changes here are lost.\n", m.Instance)
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return []byte(b.String()), nil
}
