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
	if err := requirePinned(p, what, path); err != nil {
		return nil, err
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

// requirePinned refuses a manifest without a hash: nothing is applied unpinned.
func requirePinned(p core.Pinned, what, path string) error {
	if p.Hash == nil {
		return fmt.Errorf("no hash is pinned for %s (%s), so it is not applied: check the file and set %s = { url = %q; hash = \"sha256-...\"; } (nix hash file --sri FILE)", what, p.URL, path, p.URL)
	}
	return nil
}

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
