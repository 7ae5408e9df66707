package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

var update = flag.Bool("update", false, "rewrite examples/*/config.nix and docs/nix8s.schema.json from the current code")

const repoRoot = "../.."

// runNix8s runs the command in-process from the repository root and returns its stdout.
func runNix8s(t *testing.T, args ...string) []byte {
	t.Helper()
	var stdout, stderr bytes.Buffer
	wd, _ := os.Getwd()
	if err := os.Chdir(repoRoot); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(wd)
	if code := run(context.Background(), args, &stdout, &stderr, os.Getenv); code != 0 {
		t.Fatalf("nix8s %v: exit %d\n%s", args, code, stderr.Bytes())
	}
	return stdout.Bytes()
}

func examples(t *testing.T) []string {
	dirs, err := filepath.Glob(filepath.Join(repoRoot, "examples", "*", "config.yaml"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no examples/*/config.yaml (%v)", err)
	}
	for i, d := range dirs {
		dirs[i] = filepath.Base(filepath.Dir(d))
	}
	return dirs
}

// golden compares got with the committed file, or rewrites it with -update.
func golden(t *testing.T, rel string, got []byte) {
	t.Helper()
	path := filepath.Join(repoRoot, rel)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v; run go test ./cmd/nix8s -run %s -update", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is out of date; run go test ./cmd/nix8s -run %s -update\n--- got:\n%s", rel, t.Name(), got)
	}
}

// Each example's config.nix is exactly `nix8s import config.yaml`, so the two never drift.
func TestExamplesImport(t *testing.T) {
	for _, ex := range examples(t) {
		t.Run(ex, func(t *testing.T) {
			got := runNix8s(t, "import", filepath.Join("examples", ex, "config.yaml"))
			golden(t, filepath.Join("examples", ex, "config.nix"), got)
		})
	}
}

// docs/nix8s.schema.json, which the examples point yaml-language-server at, is exactly `nix8s schema`.
func TestSchemaFile(t *testing.T) {
	requireNix(t)
	golden(t, filepath.Join("docs", "nix8s.schema.json"), runNix8s(t, "schema"))
}

// The examples are fixtures too: each is valid without warnings, conforms to the published schema, and its
// config.nix evaluates to the same data as its YAML.
func TestExamplesAreClean(t *testing.T) {
	nix := requireNix(t)
	sch := compileSchema(t)
	ev, err := (&app{getenv: os.Getenv}).evaluator()
	if err != nil {
		t.Fatal(err)
	}
	for _, ex := range examples(t) {
		t.Run(ex, func(t *testing.T) {
			dir := filepath.Join(repoRoot, "examples", ex)
			cfg, err := core.LoadFile(filepath.Join(dir, "config.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			r, err := ev.Validate(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Errors)+len(r.Warnings) != 0 {
				t.Errorf("validate: %+v", r)
			}

			data, _ := json.Marshal(cfg)
			inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if err := sch.Validate(inst); err != nil {
				t.Errorf("config.yaml does not conform to docs/nix8s.schema.json: %v", err)
			}

			out, err := exec.Command(nix, "--eval", "--strict", "--json", "--store", "dummy://", filepath.Join(dir, "config.nix")).Output()
			if err != nil {
				t.Fatalf("evaluating config.nix: %v", err)
			}
			var fromNix, fromYAML any
			json.Unmarshal(out, &fromNix)
			json.Unmarshal(data, &fromYAML)
			if !reflect.DeepEqual(fromNix, fromYAML) {
				t.Errorf("config.nix evaluates to\n%s\nbut config.yaml is\n%s", out, data)
			}
		})
	}
}

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "docs", "nix8s.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("nix8s.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("nix8s.schema.json")
	if err != nil {
		t.Fatalf("compiling docs/nix8s.schema.json: %v", err)
	}
	return s
}

// The CLI reference is generated from the command table, so it never says what the commands do not do. Flag
// defaults read from the environment are rendered as they are with an empty environment.
func TestCLIReference(t *testing.T) {
	a := &app{getenv: func(string) string { return "" }}
	golden(t, "docs/cli.md", []byte(reference(a, commands(a))))
}
