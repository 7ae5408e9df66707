package nixexpr

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestQuote(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain", "abc", `"abc"`},
		{"empty", "", `""`},
		{"double quote", `a"b`, `"a\"b"`},
		{"backslash", `a\b`, `"a\\b"`},
		{"interpolation is escaped", "${x}", `"\${x}"`},
		{"lone dollar stays", "a$b$", `"a$b$"`},
		{"double dollar before brace", "$${x}", `"$\${x}"`},
		{"newline tab return", "a\nb\tc\r", `"a\nb\tc\r"`},
		{"unicode is kept", "größe ✓", `"größe ✓"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Quote(tt.in); got != tt.want {
				t.Errorf("Quote(%q) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestAttrName(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"identifier", "server1", "server1"},
		{"dash is allowed after the first char", "nixos-anywhere", "nixos-anywhere"},
		{"apostrophe is allowed", "a'", "a'"},
		{"underscore start", "_x", "_x"},
		{"dot needs quotes", "com.sun:auto-snapshot", `"com.sun:auto-snapshot"`},
		{"leading digit needs quotes", "1a", `"1a"`},
		{"leading dash needs quotes", "-a", `"-a"`},
		{"keyword needs quotes", "in", `"in"`},
		{"or needs quotes", "or", `"or"`},
		{"true is an ordinary name", "true", "true"},
		{"empty", "", `""`},
		{"space", "a b", `"a b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := AttrName(tt.in); got != tt.want {
				t.Errorf("AttrName(%q) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		name string
		in   any
		want string
	}{
		{"null", nil, "null\n"},
		{"empty attrs", map[string]any{}, "{ }\n"},
		{"empty list", []any{}, "[ ]\n"},
		{"keys are sorted", map[string]any{"b": 1, "a": true},
			"{\n  a = true;\n  b = 1;\n}\n"},
		{"single-attribute sets become a dotted path", map[string]any{
			"network": map[string]any{"mac": "aa:bb:cc:dd:ee:01"},
			"install": map[string]any{"disk": "/dev/sda", "swapSize": "16G"},
		}, `{
  install = {
    disk = "/dev/sda";
    swapSize = "16G";
  };
  network.mac = "aa:bb:cc:dd:ee:01";
}
`},
		{"dotted path stops at an empty set", map[string]any{"a": map[string]any{"b": map[string]any{}}},
			"{\n  a.b = { };\n}\n"},
		{"quoted names in a dotted path", map[string]any{"zpool": map[string]any{"com.sun:auto-snapshot": "false"}},
			"{\n  zpool.\"com.sun:auto-snapshot\" = \"false\";\n}\n"},
		{"short scalar list inline", map[string]any{"kernelParams": []any{"a=1", "b"}},
			"{\n  kernelParams = [ \"a=1\" \"b\" ];\n}\n"},
		{"negative numbers in lists are parenthesised", []any{json.Number("1"), json.Number("-1"), -2.5},
			"[ 1 (-1) (-2.5) ]\n"},
		{"long list one per line", []any{strings.Repeat("x", 40), strings.Repeat("y", 40)},
			"[\n  \"" + strings.Repeat("x", 40) + "\"\n  \"" + strings.Repeat("y", 40) + "\"\n]\n"},
		{"list of attrs", []any{map[string]any{"a": 1, "b": 2}, map[string]any{}},
			"[\n  {\n    a = 1;\n    b = 2;\n  }\n  { }\n]\n"},
		{"numbers", []any{json.Number("7"), json.Number("1.0"), json.Number("1e21"), 0.5, 3.0, int64(-4)},
			"[ 7 1.0 1.0e+21 0.5 3.0 (-4) ]\n"},
		{"bools and null", []any{true, false, nil}, "[ true false null ]\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Format(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("Format:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestFormatErrors(t *testing.T) {
	tests := []struct {
		name string
		in   any
		want string
	}{
		{"NaN", map[string]any{"a": []any{math.NaN()}}, `a."0": NaN has no Nix (or JSON) representation`},
		{"huge integer", map[string]any{"n": json.Number("99999999999999999999")}, "n: integer 99999999999999999999 does not fit"},
		{"one past the largest integer", map[string]any{"n": json.Number("9223372036854775808")}, "n: integer 9223372036854775808 does not fit in a Nix integer (64 bits, -9223372036854775807 to 9223372036854775807)"},
		{"the smallest integer has no literal", map[string]any{"a": map[string]any{"b": []any{json.Number("-9223372036854775808")}}},
			`a.b."0": integer -9223372036854775808 has no Nix literal (Nix reads it as the negation of 9223372036854775808, which does not fit in 64 bits); quote it to make it a string`},
		{"the smallest integer as a Go int64", map[string]any{"n": int64(math.MinInt64)}, "n: integer -9223372036854775808 has no Nix literal"},
		{"a subnormal float", map[string]any{"n": json.Number("5e-324")},
			"n: float 5e-324 is too small for Nix, whose float literals stop at 2.2250738585072014e-308; write 0, or quote it to make it a string"},
		{"the largest subnormal float", map[string]any{"n": json.Number("2.225073858507201e-308")}, "n: float 2.225073858507201e-308 is too small for Nix"},
		{"a float beyond the largest", map[string]any{"n": json.Number("1e309")},
			"n: number 1e309 is beyond the largest float Nix holds (about 1.8e308); quote it to make it a string"},
		{"a float with more digits than Nix prints", map[string]any{"x": map[string]any{"ratio": json.Number("0.1234567")}},
			"x.ratio: float 0.1234567 has more significant digits than Nix keeps when it prints a float (6: it would come back as 0.123457); round it, or quote it to make it a string"},
		{"an integral float with more digits than Nix prints", map[string]any{"n": []any{json.Number("1234567.0")}}, `n."0": float 1.234567e+06 has more significant digits`},
		{"a string with a NUL", map[string]any{"nodes": map[string]any{"a": map[string]any{"install": map[string]any{"disk": "/dev/sda\x00b", "swapSize": "1G"}}}},
			`nodes.a.install.disk: "/dev/sda\x00b" contains a NUL character (at byte 8), which Nix strings cannot hold: Nix would cut it there; remove it`},
		{"a list element with a NUL", map[string]any{"l": []any{strings.Repeat("x", 80), "\x00"}}, `l."1": "\x00" contains a NUL character`},
		{"an attribute name with a NUL", map[string]any{"nodes": map[string]any{"a\x00b": map[string]any{}, "c": 1}}, `nodes."a\u0000b": attribute name: "a\x00b" contains a NUL character`},
		{"a NUL name inside a dotted path", map[string]any{"a": map[string]any{"b\x00": 1}}, `a."b\u0000": attribute name:`},
		{"unsupported type", map[string]any{"x y": map[string]any{"z": struct{}{}}}, `"x y".z: cannot represent a value of Go type struct {}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Format(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Format error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestFormatReportsEveryValue(t *testing.T) {
	_, err := Format(map[string]any{"a": "x\x00", "b": []any{json.Number("5e-324"), json.Number("-9223372036854775808")}, "c": 1})
	if err == nil {
		t.Fatal("Format accepted three values Nix cannot hold")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{`a: "x\x00" contains`, `b."0": float 5e-324`, `b."1": integer -9223372036854775808`}
	if len(lines) != len(want) {
		t.Fatalf("Format error has %d lines, want %d:\n%v", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q, want it to start with %q", i, lines[i], w)
		}
	}
}

// TestFormatEvaluates feeds formatter output to the real nix-instantiate and checks that it evaluates to the
// input, for the strings and names most likely to be mis-escaped.
func TestFormatEvaluates(t *testing.T) {
	nix := requireNix(t)
	const input = `{
	  "nodes": {"a": {"network": {"mac": "aa:bb:cc:dd:ee:01"}, "install": {"disk": "/dev/sda"}}},
	  "quote\"d": "she said \"hi\"",
	  "back\\slash": "C:\\dir\\",
	  "interp": ["${x}", "$${x}", "\\${x}", "$", "a$", "$$", "${", "}", "''", "'''", "''${x}"],
	  "multi": "line1\nline2\n\ttabbed\r\n",
	  "${key}": {"in": 1, "or": 2, "let": 3, "true": 4, "null": 5, "": 6, "1x": 7, "a.b": 8, "-x": 9},
	  "com.sun:auto-snapshot": "false",
	  "nixos-anywhere": {"ssh": {"user": "root", "port": 22}},
	  "numbers": [0, -1, 1.5, -0.25, 1e21, 123456789012, 1.0, -7],
	  "limits": [9223372036854775807, -9223372036854775807, 1.79769e308, -1.79769e308, 2.22508e-308, 123457.0, 0.123457, 1e-300],
	  "nested": [[1, [2, []]], {}, [{"a": null}], [true, false]],
	  "unicode": "größe ✓ 日本",
	  "long": ["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", -3]
	}`
	var v any
	dec := json.NewDecoder(strings.NewReader(input))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	expr, err := Format(v)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "x.nix")
	if err := os.WriteFile(file, expr, 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(nix, "--eval", "--strict", "--json", "--store", "dummy://", file)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-instantiate: %v\n%s\nexpression:\n%s", err, stderr.Bytes(), expr)
	}
	var want, got any
	if err := json.Unmarshal([]byte(input), &want); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("nix output %q: %v", out, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("evaluated expression differs from the input\n got: %s\nwant: %s\nexpression:\n%s", out, input, expr)
	}
}

// TestRefusedValuesDoNotSurviveNix shows, with the real nix-instantiate, why Format refuses what it refuses:
// written naively, each value fails to evaluate or comes back changed.
func TestRefusedValuesDoNotSurviveNix(t *testing.T) {
	nix := requireNix(t)
	tests := []struct {
		name    string
		value   any    // what Format must refuse
		literal string // the Nix a formatter without the rule would write
		back    string // what Nix gives back ("" when it fails to evaluate)
	}{
		{"the smallest integer", json.Number("-9223372036854775808"), "-9223372036854775808", ""},
		{"a subnormal float", json.Number("5e-324"), "5.0e-324", ""},
		{"the largest subnormal float", json.Number("2.225073858507201e-308"), "2.225073858507201e-308", ""},
		{"seven significant digits", json.Number("0.1234567"), "0.1234567", "0.123457"},
		{"a string with a NUL", "a\x00b", "\"a\x00b\"", `"a"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if out, err := Format(tt.value); err == nil {
				t.Fatalf("Format accepted it: %s", out)
			}
			file := filepath.Join(t.TempDir(), "x.nix")
			if err := os.WriteFile(file, []byte(tt.literal+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(nix, "--eval", "--strict", "--json", "--store", "dummy://", file)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			switch {
			case tt.back == "" && err == nil:
				t.Errorf("Nix evaluated %s to %s; the rule refuses something Nix can hold", tt.literal, out)
			case tt.back != "" && err != nil:
				t.Errorf("nix-instantiate: %v\n%s", err, stderr.Bytes())
			case tt.back != "" && string(bytes.TrimSpace(out)) != tt.back:
				t.Errorf("Nix gave back %s, want %s (the change the rule guards against)", out, tt.back)
			}
		})
	}
}

// requireNix returns the nix-instantiate to test against. Without it the test is skipped, except on CI
// (CI=true), where a missing Nix must fail the build rather than silently skip the eval tests.
func requireNix(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("nix-instantiate")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("nix-instantiate is not on PATH, and CI=true requires it; install it with: apt-get install nix-bin")
		}
		t.Skip("nix-instantiate is not on PATH (apt-get install nix-bin); skipping")
	}
	return p
}
