// Package kubeconfig fetches a cluster's admin kubeconfig from a ready server over ssh, points it at the
// plan's API endpoint and names it after the cluster, for writing on its own or merging into ~/.kube/config.
package kubeconfig

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/nix8s/nix8s/internal/atomicfile"
	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/provision"
	"github.com/nix8s/nix8s/internal/remote"
)

// K3sPath is where k3s writes the admin kubeconfig on a server.
const K3sPath = "/etc/rancher/k3s/k3s.yaml"

// Fetch reads K3sPath from the first server whose API answers /readyz, trying the first server, then the
// others, and returns it rewritten by Rewrite. from is the server it came from.
func Fetch(ctx context.Context, r remote.Runner, ready provision.Readiness, c core.Cluster) (data []byte, from string, err error) {
	order := c.ServerOrder()
	var errs []error
	for _, m := range order {
		mem := c.Members[m]
		host := remote.HostOf(mem)
		if err := ready.APIReady(ctx, host); err != nil {
			errs = append(errs, fmt.Errorf("%s: not ready: %w", mem.HostName, err))
			continue
		}
		raw, err := r.Run(ctx, host, "cat "+K3sPath)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: reading %s: %w", mem.HostName, K3sPath, err))
			continue
		}
		out, err := Rewrite(raw, c.Name, c.APIEndpoint)
		if err != nil {
			return nil, "", fmt.Errorf("%s: %s: %w", mem.HostName, K3sPath, err)
		}
		return out, mem.HostName, nil
	}
	return nil, "", fmt.Errorf("no server of cluster %q gave its kubeconfig:\n%w", c.Name, errors.Join(errs...))
}

type config = map[string]any

// Rewrite takes a k3s kubeconfig (one cluster, context and user, all called "default", server
// https://127.0.0.1:6443), points the cluster at endpoint and names cluster, context and user name.
func Rewrite(data []byte, name, endpoint string) ([]byte, error) {
	var cfg config
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("not a kubeconfig: %w", err)
	}
	one := func(key string) (map[string]any, error) {
		list, _ := cfg[key].([]any)
		if len(list) != 1 {
			return nil, fmt.Errorf("want exactly one entry in %s, found %d", key, len(list))
		}
		e, ok := list[0].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s[0] is not a mapping", key)
		}
		return e, nil
	}
	cl, err := one("clusters")
	if err != nil {
		return nil, err
	}
	ctx, err := one("contexts")
	if err != nil {
		return nil, err
	}
	user, err := one("users")
	if err != nil {
		return nil, err
	}
	inner, ok := cl["cluster"].(map[string]any)
	if !ok {
		return nil, errors.New("clusters[0].cluster is missing")
	}
	inner["server"] = endpoint
	cl["name"], user["name"], ctx["name"] = name, name, name
	cctx, ok := ctx["context"].(map[string]any)
	if !ok {
		return nil, errors.New("contexts[0].context is missing")
	}
	cctx["cluster"], cctx["user"] = name, name
	cfg["current-context"] = name
	return yaml.Marshal(cfg)
}

// Merge puts the cluster, context and user of add (one each, from Rewrite) into existing (a kubeconfig, or
// empty), replacing entries of the same names and keeping every other, and makes add's context current.
func Merge(existing, add []byte) ([]byte, error) {
	var base, extra config
	if err := yaml.Unmarshal(existing, &base); err != nil {
		return nil, fmt.Errorf("not a kubeconfig: %w", err)
	}
	if err := yaml.Unmarshal(add, &extra); err != nil {
		return nil, err
	}
	if base == nil {
		base = config{"apiVersion": "v1", "kind": "Config", "preferences": map[string]any{}}
	}
	for _, key := range []string{"clusters", "contexts", "users"} {
		list, _ := base[key].([]any)
		for _, e := range extra[key].([]any) {
			name := e.(map[string]any)["name"]
			kept := list[:0:0]
			for _, old := range list {
				if m, ok := old.(map[string]any); ok && m["name"] == name {
					continue
				}
				kept = append(kept, old)
			}
			list = append(kept, e)
		}
		base[key] = list
	}
	base["current-context"] = extra["current-context"]
	return yaml.Marshal(base)
}

// DefaultPath is the kubeconfig kubectl writes to: with KUBECONFIG a list, its first existing file, else its
// last; without, ~/.kube/config.
func DefaultPath(getenv func(string) string) (string, error) {
	if env := getenv("KUBECONFIG"); env != "" {
		var files []string
		for _, f := range filepath.SplitList(env) {
			if f != "" {
				files = append(files, f)
			}
		}
		for _, f := range files {
			if _, err := os.Stat(f); err == nil {
				return f, nil
			}
		}
		if len(files) > 0 {
			return files[len(files)-1], nil
		}
	}
	home := getenv("HOME")
	if home == "" {
		return "", errors.New("neither KUBECONFIG nor HOME is set; pass -o FILE")
	}
	return filepath.Join(home, ".kube", "config"), nil
}

// MergeInto merges add into the kubeconfig at path (created when missing), atomically, mode 0600.
func MergeInto(path string, add []byte) error {
	existing, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	merged, err := Merge(existing, add)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return Write(path, merged)
}

// Write writes a kubeconfig atomically with mode 0600: it holds the cluster's admin credentials.
func Write(path string, data []byte) error {
	if strings.TrimSpace(path) == "" {
		return errors.New("empty kubeconfig path")
	}
	return atomicfile.Write(path, data, 0o600)
}
