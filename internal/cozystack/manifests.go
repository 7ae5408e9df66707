package cozystack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/nix8s/nix8s/internal/core"
)

// maxManifest bounds a downloaded manifest (the v1.6.2 CRDs are some 20 KB, the operator manifest less).
const maxManifest = 16 << 20

// Source says where a manifest's bytes come from: File when set (a `nix build` of the flake's fixed output,
// or a copy the operator checked), else the plan's URL. Either way the bytes must have the plan's hash.
type Source struct {
	File string
}

// load reads a pinned manifest from src or its URL and checks it against its hash; what names the file in
// errors, and path the config setting that pins it.
func load(ctx context.Context, client *http.Client, p core.Pinned, src Source, what, path string) ([]byte, error) {
	if p.Hash == nil {
		return nil, fmt.Errorf("no hash is pinned for %s: set %s", what, path) // CheckPinned said how
	}
	var data []byte
	var from string
	if src.File != "" {
		b, err := os.ReadFile(src.File)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", what, err)
		}
		data, from = b, src.File
	} else {
		b, err := download(ctx, client, p.URL)
		if err != nil {
			return nil, fmt.Errorf("downloading %s: %w", what, err)
		}
		data, from = b, p.URL
	}
	if got := SRI(data); got != *p.Hash {
		return nil, fmt.Errorf("%s from %s has hash %s, but %s pins %s: nothing was applied; use the pinned file, or pin this one after checking it", what, from, got, path, *p.Hash)
	}
	return data, nil
}

// CheckPinned is nil when both of c's manifests have a pinned hash, else bootstrap's refusal (before anything is
// downloaded or applied), which says how to pin it: what nix8sd also answers before it queues a bootstrap.
func CheckPinned(c core.Cluster) error {
	cz := c.Cozystack
	if cz == nil {
		return fmt.Errorf("cluster %q has no Cozystack: set clusters.%s.cozystack.enable = true", c.Name, c.Name)
	}
	for _, part := range []string{"crds", "operator"} {
		if err := requirePinned(c.Name, cz, part); err != nil {
			return err
		}
	}
	return nil
}

// requirePinned refuses manifest part ("crds" or "operator") of cz without a hash: nothing is applied unpinned.
// The hash cannot be known offline (the v1.6.2 operator manifest is a helm render no source file holds), so
// the message says how to take it from the file and where it goes; the manifests are overridden both or
// neither, so it also gives the other one's current pin to copy.
func requirePinned(cluster string, cz *core.Cozystack, part string) error {
	p, other, otherPart := cz.Manifests.Operator, cz.Manifests.CRDs, "crds"
	if part == "crds" {
		p, other, otherPart = cz.Manifests.CRDs, cz.Manifests.Operator, "operator"
	}
	if p.Hash != nil {
		return nil
	}
	path := "clusters." + cluster + ".cozystack.manifests"
	otherHash := `"sha256-..."`
	if other.Hash != nil {
		otherHash = strconv.Quote(*other.Hash)
	}
	return fmt.Errorf("no hash is pinned for %s %s (%s), so it is not applied: download it and check it, then take its hash with "+
		"`nix store prefetch-file --json %s` (the \"hash\" it prints; Nix before 2.19: nix --extra-experimental-features nix-command store prefetch-file) "+
		"or `nix hash to-sri --type sha256 $(nix-prefetch-url %s)`, and set %s.%s = { url = %q; hash = \"sha256-...\"; } with %s.%s = { url = %q; hash = %s; } beside it "+
		"(YAML: manifests: { %s: { url: ..., hash: ... }, %s: { ... } }; both manifests or neither, docs/cozystack.md)",
		manifestFile[part], cz.Version, p.URL, p.URL, p.URL, path, part, p.URL, path, otherPart, other.URL, otherHash, part, otherPart)
}

// manifestFile is each part's release asset.
var manifestFile = map[string]string{"crds": "cozystack-crds.yaml", "operator": "cozystack-operator-generic.yaml"}

func download(ctx context.Context, client *http.Client, url string) ([]byte, error) {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxManifest+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxManifest {
		return nil, fmt.Errorf("GET %s: more than %d bytes", url, maxManifest)
	}
	return b, nil
}

// SRI is the SRI sha256 hash of data ("sha256-<base64>"), the form Nix's fetchurl takes.
func SRI(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256-" + base64.StdEncoding.EncodeToString(sum[:])
}

// replaceHost puts the API host into the operator manifest: the quoted placeholder must occur exactly once
// (`value: "REPLACE_ME"` of KUBERNETES_SERVICE_HOST in cozystack-operator-generic.yaml).
func replaceHost(manifest []byte, placeholder, host string) ([]byte, error) {
	q := []byte(strconv.Quote(placeholder))
	if n := bytes.Count(manifest, q); n != 1 {
		return nil, fmt.Errorf("the operator manifest holds %s %d times, want exactly once (the API host placeholder of cozystack-operator-generic.yaml): is it the generic variant?", q, n)
	}
	return bytes.Replace(manifest, q, []byte(strconv.Quote(host)), 1), nil
}

// objects splits a multi-document YAML (or JSON) manifest into objects, skipping empty documents.
func objects(manifest []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	var out []*unstructured.Unstructured
	for i := 0; ; i++ {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetKind() == "" || u.GetAPIVersion() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("document %d has no apiVersion, kind or metadata.name", i+1)
		}
		out = append(out, u)
	}
}
