package nixgen

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestRenderGeneratedWorkspace(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ws")
	cfg := map[string]any{"nodes": map[string]any{"a": map[string]any{"install": map[string]any{"disk": "/dev/sda"}}}}
	if err := (Workspace{Dir: dir}).Render(cfg); err != nil {
		t.Fatal(err)
	}
	flake, err := os.ReadFile(filepath.Join(dir, "flake.nix"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`nix8s.flakeModules.default`, `nix8s.inventoryFile = ./inventory.json;`, `"github:nix8s/nix8s"`} {
		if !strings.Contains(string(flake), want) {
			t.Errorf("flake.nix lacks %s", want)
		}
	}
	var got map[string]any
	data, _ := os.ReadFile(filepath.Join(dir, InventoryFile))
	if err := json.Unmarshal(data, &got); err != nil || got["nodes"] == nil {
		t.Fatalf("inventory.json: %s %v", data, err)
	}
}

func TestRenderUserFlake(t *testing.T) {
	dir := t.TempDir()
	if err := (Workspace{Dir: dir, UserFlake: true}).Render(map[string]any{}); err == nil {
		t.Fatal("rendered into a directory without flake.nix")
	}
	own := "{ outputs = _: { }; }\n"
	os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(own), 0o644)
	if err := (Workspace{Dir: dir, UserFlake: true}).Render(map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "flake.nix")); string(b) != own {
		t.Error("the user's flake.nix was overwritten")
	}
	if _, err := os.Stat(filepath.Join(dir, InventoryFile)); err != nil {
		t.Error(err)
	}
}

func TestFlakeNixParses(t *testing.T) {
	nix, err := exec.LookPath("nix-instantiate")
	if err != nil {
		t.Skip("nix-instantiate not installed")
	}
	f := filepath.Join(t.TempDir(), "flake.nix")
	os.WriteFile(f, []byte(FlakeNix(`github:nix8s/nix8s?ref="main"`)), 0o644)
	// stderr is Nix's messages (a fresh machine's nixbld warning among them), stdout the parsed expression.
	var stderr bytes.Buffer
	cmd := exec.Command(nix, "--parse", f)
	cmd.Stderr = &stderr
	if _, err := cmd.Output(); err != nil {
		t.Fatalf("generated flake.nix does not parse: %v\n%s", err, stderr.Bytes())
	}
}
