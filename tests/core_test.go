// Package tests runs the eval tests of the pure Nix core (lib/) with plain nix-instantiate: the behaviour cases
// in cases.nix, golden plans of every example, and the check that the NixOS data only sets known option paths.
package tests

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under tests/golden")

// nixEval evaluates a Nix expression (with the repository root as the working directory) to JSON.
func nixEval(t testing.TB, expr string) []byte {
	t.Helper()
	if _, err := exec.LookPath("nix-instantiate"); err != nil {
		t.Fatalf("nix-instantiate not found: install Nix (Debian: apt-get install nix-bin)")
	}
	cmd := exec.Command("nix-instantiate", "--eval", "--strict", "--json", "--expr", expr)
	cmd.Dir = ".."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-instantiate: %v\n%s", err, stderr.String())
	}
	return out
}

func TestCases(t *testing.T) {
	var cases []struct {
		Name     string          `json:"name"`
		Expected json.RawMessage `json:"expected"`
		Actual   json.RawMessage `json:"actual"`
	}
	if err := json.Unmarshal(nixEval(t, "import ./tests/cases.nix"), &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) < 50 {
		t.Fatalf("only %d cases evaluated", len(cases))
	}
	seen := map[string]bool{}
	for _, c := range cases {
		if seen[c.Name] {
			t.Errorf("duplicate case name %q", c.Name)
		}
		seen[c.Name] = true
		t.Run(c.Name, func(t *testing.T) {
			var want, got any
			if err := json.Unmarshal(c.Expected, &want); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(c.Actual, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(want, got) {
				t.Errorf("\nwant %s\n got %s", c.Expected, c.Actual)
			}
		})
	}
}

// examples returns the names of examples/*/config.nix.
func examples(t testing.TB) []string {
	t.Helper()
	matches, err := filepath.Glob("../examples/*/config.nix")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range matches {
		names = append(names, filepath.Base(filepath.Dir(m)))
	}
	sort.Strings(names)
	return names
}

func TestGoldenExamples(t *testing.T) {
	names := examples(t)
	for _, want := range []string{"minimal", "ha", "multi-cluster", "lima", "cozystack"} {
		if !contains(names, want) {
			t.Errorf("examples/%s/config.nix is missing", want)
		}
	}
	for _, name := range names {
		for _, fn := range []string{"validate", "plan", "nixos", "exportable", "pxe"} {
			t.Run(name+"/"+fn, func(t *testing.T) {
				expr := fmt.Sprintf("(import ./lib).%s (import ./examples/%s/config.nix)", fn, name)
				if fn == "pxe" {
					expr += " null" // every cluster, as nix8sd serves them without --pxe-cluster
				}
				out := nixEval(t, expr)
				var v any
				if err := json.Unmarshal(out, &v); err != nil {
					t.Fatal(err)
				}
				got, _ := json.MarshalIndent(v, "", "  ")
				got = append(got, '\n')
				golden := filepath.Join("golden", name+"."+fn+".json")
				if *update {
					if err := os.WriteFile(golden, got, 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run `go test ./tests -update` to create it)", err)
				}
				if !bytes.Equal(want, got) {
					t.Errorf("%s differs from the core's output; if the change is intended, run `go test ./tests -update` and review the diff.\n got:\n%s", golden, got)
				}
			})
		}
	}
}

// The examples are valid: no errors (warnings are allowed and pinned by the goldens).
func TestExamplesHaveNoErrors(t *testing.T) {
	for _, name := range examples(t) {
		var r struct{ Errors []map[string]string }
		if err := json.Unmarshal(nixEval(t, fmt.Sprintf("(import ./lib).validate (import ./examples/%s/config.nix)", name)), &r); err != nil {
			t.Fatal(err)
		}
		if len(r.Errors) > 0 {
			t.Errorf("examples/%s: %v", name, r.Errors)
		}
	}
}

// optionPattern turns "networking.interfaces.<name>.ipv4.addresses" into segments; "<name>" matches any name.
type optionPattern []string

func (p optionPattern) match(path []string) (exact, prefix bool) {
	if len(path) > len(p) {
		return false, false
	}
	for i, s := range path {
		if p[i] != "<name>" && p[i] != s {
			return false, false
		}
	}
	return len(path) == len(p), len(path) < len(p)
}

// checkPaths walks rendered NixOS data and reports every attribute path that is neither a declared option nor on
// the way to one.
func checkPaths(v any, path []string, opts []optionPattern, bad map[string]bool) {
	m, ok := v.(map[string]any)
	if !ok {
		bad[strings.Join(path, ".")] = true
		return
	}
	for k, child := range m {
		p := append(append([]string{}, path...), k)
		exact, prefix := false, false
		for _, o := range opts {
			e, pr := o.match(p)
			exact, prefix = exact || e, prefix || pr
		}
		switch {
		case exact:
			// The value belongs to the option.
		case prefix:
			checkPaths(child, p, opts, bad)
		default:
			bad[strings.Join(p, ".")] = true
		}
	}
}

func loadOptions(t *testing.T) []optionPattern {
	var list []struct{ Path, File string }
	if err := json.Unmarshal(nixEval(t, "(import ./lib).nixosOptionPaths"), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) == 0 {
		t.Fatal("lib/nixos-options.nix lists no option paths")
	}
	var opts []optionPattern
	for _, o := range list {
		if o.File == "" {
			t.Errorf("option %s names no declaring file", o.Path)
		}
		opts = append(opts, optionPattern(splitOptionPath(o.Path)))
	}
	return opts
}

// splitOptionPath splits on dots outside quotes: boot.kernel.sysctl."net.ipv4.ip_forward" has four segments.
func splitOptionPath(s string) []string {
	var segs []string
	for _, m := range regexp.MustCompile(`"[^"]*"|[^.]+`).FindAllString(s, -1) {
		segs = append(segs, strings.Trim(m, `"`))
	}
	return segs
}

func TestNixOSDataUsesKnownOptions(t *testing.T) {
	opts := loadOptions(t)
	// Every example plus the test configs that switch on each extension and HA.
	exprs := map[string]string{}
	for _, name := range examples(t) {
		exprs[name] = fmt.Sprintf("(import ./lib).nixos (import ./examples/%s/config.nix)", name)
	}
	exprs["all-features"] = `(import ./lib).nixos (import ./tests/all-features.nix)`
	for name, expr := range exprs {
		t.Run(name, func(t *testing.T) {
			var data map[string]map[string]any
			if err := json.Unmarshal(nixEval(t, expr), &data); err != nil {
				t.Fatal(err)
			}
			bad := map[string]bool{}
			for host, d := range data {
				for _, part := range []string{"settings", "defaults"} {
					checkPaths(d[part], nil, opts, bad)
				}
				_ = host
			}
			for p := range bad {
				t.Errorf("NixOS data sets %s, which is not in lib/nixos-options.nix (check nixpkgs and add it with its file)", p)
			}
		})
	}
}

// The checker itself must catch a made-up option, or the test above proves nothing.
func TestOptionCheckerCatchesUnknownPaths(t *testing.T) {
	opts := []optionPattern{splitOptionPath("services.k3s.enable"), splitOptionPath("networking.interfaces.<name>.ipv4.addresses")}
	bad := map[string]bool{}
	checkPaths(map[string]any{
		"services":   map[string]any{"k3s": map[string]any{"enable": true, "enabel": true}},
		"networking": map[string]any{"interfaces": map[string]any{"eth0": map[string]any{"ipv4": map[string]any{"addresses": []any{}}}}},
	}, nil, opts, bad)
	if !bad["services.k3s.enabel"] || len(bad) != 1 {
		t.Errorf("want only services.k3s.enabel reported, got %v", bad)
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
