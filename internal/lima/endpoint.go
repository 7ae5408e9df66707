package lima

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sort"

	"github.com/nix8s/nix8s/internal/core"
)

// ResolveEndpoints completes cluster's plan for the operations that reach members from the host (ssh, rebuild,
// status, kubeconfig) when it runs in Lima: each member's SSH port, when the config fixes none, from its
// instance (`limactl list --json`, asked once and only then), Lima's own key when the config names none, and
// the API endpoint the host reaches (the first server's forwarded 6443). Other clusters are left as they are.
// home gives Lima's directory (Home), asked only for a Lima cluster.
// A member whose port cannot be had (no VM yet, no limactl) keeps none, with a note to log: commands that only
// read the plan (gen-secrets) still work, and one that connects fails on it after the note.
func ResolveEndpoints(ctx context.Context, l *Limactl, home func() (string, error), c *core.Cluster, log io.Writer) error {
	if c.Lima == nil {
		return nil
	}
	if c.Lima.APIEndpoint != nil {
		c.APIEndpoint = *c.Lima.APIEndpoint
	}
	dir, err := home()
	if err != nil {
		return err
	}
	key := filepath.Join(dir, "_config", "user")
	var instances map[string]Instance
	var listErr error
	for _, name := range sortedKeys(c.Members) {
		m := c.Members[name]
		inst := m.SSH.Lima
		if inst == "" {
			continue
		}
		if m.SSH.Port == 0 {
			if instances == nil && listErr == nil {
				if instances, listErr = l.List(ctx); listErr != nil {
					fmt.Fprintf(log, "nix8s: note: cluster %s runs in Lima, but its VMs' SSH ports are unknown: %v\n", c.Name, listErr)
				}
			}
			if in, ok := instances[inst]; ok && in.Port() > 0 {
				m.SSH.Port = in.Port()
			} else if listErr == nil {
				fmt.Fprintf(log, "nix8s: note: %s has no Lima VM %s yet, so no SSH port; start the cluster first: nix8s lima up %s\n", m.HostName, inst, c.Name)
			}
		}
		if m.SSH.KeyFile == nil {
			m.SSH.KeyFile = &key
		}
		c.Members[name] = m
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
