package core

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // JSON of the decoded value
	}{
		{"yaml mapping", "a: 1\nb: [x, 2.5, true, null]\n", `{"a":1,"b":["x",2.5,true,null]}`},
		{"json object", `  {"a": 1, "b": {"c": 1.0}}`, `{"a":1,"b":{"c":1.0}}`},
		{"yaml float stays a float", "f: 1.0\ng: 2\n", `{"f":1.0,"g":2}`},
		{"yaml quoted number is a string", "v: \"1.31\"\n", `{"v":"1.31"}`},
		{"yaml anchors and merge keys", "base: &b {x: 1}\nnode:\n  <<: *b\n  y: 2\n", `{"base":{"x":1},"node":{"x":1,"y":2}}`},
		{"yaml keys that look like other types but are quoted", "\"1\": a\n\"true\": b\n", `{"1":"a","true":"b"}`},
		{"yaml comment line first", "# yaml-language-server: $schema=x\n{a: 1}\n", `{"a":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := Decode([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(v)
			if string(got) != tt.want {
				t.Errorf("Decode(%q) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"integer key", "clusters:\n  prod:\n    members:\n      1: {role: server}\n",
			`4:7: clusters.prod.members: key 1 (int) is not a string; quote it ("1")`},
		{"bool key at top", "true: 1\n", `1:1: (top level): key true (bool) is not a string; quote it ("true")`},
		{"null key", "nodes:\n  ~: {}\n", `2:3: nodes: key ~ (null) is not a string; quote it ("~")`},
		{"key in a list item", "a:\n  - 2: x\n", `2:5: a."0": key 2 (int) is not a string; quote it ("2")`},
		{"malformed yaml", "a: b\n  c: d\n", "2: invalid YAML: mapping values are not allowed in this context"},
		{"tab indentation", "a:\n\tb: 1\n", "2: invalid YAML: found character that cannot start any token"},
		{"empty file", "  \n", "the file is empty; a config is a mapping with nodes, clusters and provisioning"},
		{"two documents", "a: 1\n---\nb: 2\n", "2: a second YAML document; a config is a single document"},
		{"malformed json", "{\n  \"a\": 1,\n}\n", "3:1: invalid JSON: invalid character '}' looking for beginning of object key string"},
		{"truncated json", "{\"a\": [1,", "1:10: invalid JSON: unexpected end of input"},
		{"json trailing data", "{} {}", "1:4: invalid JSON: more than one value"},
		{"yaml infinity", "x: .inf\n", "x: +Inf is not a number JSON or Nix can hold"},
		{"yaml parser error names the line of the problem", "nodes:\n  a: 1\n b: 2\n", "3: invalid YAML: did not find expected key"},
		{"duplicate key", "a: 1\nb: 2\na: 3\n", `3: invalid YAML: mapping key "a" already defined at line 1`},
		{"unknown alias", "a: &x 1\nb: *y\n", "invalid YAML: unknown anchor 'y' referenced"},
		{"timestamp", "a:\n  since: 2001-12-14\n", "a.since: 2001-12-14T00:00:00Z is a YAML timestamp, which has no JSON form; quote it to make it a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.in))
			if err == nil {
				t.Fatal("no error")
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got: %s\nwant: %s", err, tt.want)
			}
		})
	}
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("a: b\n  c: d\n"), 0o644)
	_, err := LoadFile(bad)
	if want := bad + ":2: invalid YAML: mapping values are not allowed in this context"; err == nil || err.Error() != want {
		t.Errorf("LoadFile(bad) = %v, want %s", err, want)
	}
	_, err = LoadFile(filepath.Join(dir, "missing.yaml"))
	if want := filepath.Join(dir, "missing.yaml") + ": no such file"; err == nil || err.Error() != want {
		t.Errorf("LoadFile(missing) = %v, want %s", err, want)
	}
	good := filepath.Join(dir, "good.json")
	os.WriteFile(good, []byte(`{"nodes": {}}`), 0o644)
	v, err := LoadFile(good)
	if err != nil || !reflect.DeepEqual(v, map[string]any{"nodes": map[string]any{}}) {
		t.Errorf("LoadFile(good) = %v, %v", v, err)
	}
}

func TestShowPath(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want string
	}{
		{"empty", nil, "(top level)"},
		{"identifiers", []string{"clusters", "prod", "members", "agent-1"}, "clusters.prod.members.agent-1"},
		{"quoted segments", []string{"nodes", "my.node", "0"}, `nodes."my.node"."0"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ShowPath(tt.in); got != tt.want {
				t.Errorf("ShowPath(%q) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

// nest is `open` n times, then leaf, then `close` n times: a value nested n levels.
func nest(open, leaf, close string, n int) string {
	return strings.Repeat(open, n) + leaf + strings.Repeat(close, n)
}

func TestDecodeLimits(t *testing.T) {
	deep61 := "nodes" + strings.Repeat(".a", 64) // the path of the first value past MaxDepth (65 segments)
	list62 := "nodes.x.a" + strings.Repeat(`."0"`, 62)
	tests := []struct {
		name string
		at   []string
		in   string
		want string
		path string // DecodeError.Path
	}{
		{"yaml nested as deep as allowed", nil, "nodes: " + nest("{a: ", "1", "}", 63) + "\n", "", ""},
		{"yaml mappings nested one level too deep", nil, "nodes: " + nest("{a: ", "1", "}", 64) + "\n",
			"1:" + fmt.Sprint(8+4*64) + ": " + deep61 + ": nested deeper than 64 levels; a config needs only a few, flatten this value", deep61},
		{"yaml sequences 9,000 deep stop at the limit", nil, "nodes:\n  x:\n    a: " + nest("[", "", "]", 9000) + "\n",
			"3:" + fmt.Sprint(8+62) + ": " + list62 + ": nested deeper than 64 levels; a config needs only a few, flatten this value", list62},
		{"json nested too deep", nil, `{"nodes": ` + nest(`{"a": `, "1", "}", 64) + "}", deep61 + ": nested deeper than 64 levels; a config needs only a few, flatten this value", deep61},
		{"an object counts from the config's top", []string{"nodes", "x"}, "a: " + nest("{a: ", "1", "}", 62) + "\n",
			"1:" + fmt.Sprint(4+4*62) + ": nodes.x" + strings.Repeat(".a", 63) + ": nested deeper than 64 levels; a config needs only a few, flatten this value",
			"nodes.x" + strings.Repeat(".a", 63)},
		{"a self-referencing alias stops at the depth limit", nil, "a: &x [*x]\n", "", "a" + strings.Repeat(`."0"`, 64)},
		{"an alias bomb stops at the value limit", nil, aliasBomb(), "", `l5."0"."6"."8"."8"."8"."8"`},
		{"too many values", nil, "a: [" + strings.Repeat("0,", MaxValues) + "0]\n", "", `a."199998"`},
		{"too big", nil, "a: " + strings.Repeat("x", MaxBytes) + "\n", "(top level): 1048580 bytes is more than the 1048576 a config may have; split it up or shorten it", "(top level)"},
		{"long string", nil, "a:\n  b: " + strings.Repeat("x", MaxString+1) + "\n", "a.b: a string of 65537 bytes is more than the 65536 a config value may have", "a.b"},
		{"long key", nil, `{"a": {"` + strings.Repeat("k", MaxKey+1) + `": 1}}`, `a: a key of 1025 bytes ("kkkkkkkkkkkkkkkkkkkk"...); keys are names, at most 1024 bytes`, "a"},
		{"yaml NUL in a string", nil, "nodes:\n  x:\n    hostName: \"a\\0b\"\n", `nodes.x.hostName: "a\x00b" contains a NUL character, which neither Nix strings nor the store hold; remove it`, "nodes.x.hostName"},
		{"json NUL in a string", nil, `{"nodes": {"x": {"hostName": "a\u0000b"}}}`, `nodes.x.hostName: "a\x00b" contains a NUL character, which neither Nix strings nor the store hold; remove it`, "nodes.x.hostName"},
		{"json NUL in a key", nil, `{"nodes": {"a\u0000b": {}}}`, `nodes: key "a\x00b" contains a NUL character; keys are names, remove it`, "nodes"},
		{"yaml NUL in a key", nil, "nodes:\n  \"a\\0b\": {}\n", `nodes: key "a\x00b" contains a NUL character; keys are names, remove it`, "nodes"},
		{"yaml binary that is not text", nil, "a: !!binary /w==\n", `a: "\xff" is not valid UTF-8; write it as text (YAML !!binary is not for configs)`, "a"},
		{"json invalid UTF-8", nil, "{\"a\":\n \"x\xffy\"}", "2:4: invalid JSON: a byte sequence that is not UTF-8; save the file as UTF-8", ""},
		{"yaml invalid UTF-8", nil, "a: x\xffy\n", "invalid YAML: invalid leading UTF-8 octet", ""},
		{"yaml integer past 64 bits", nil, "nodes:\n  x:\n    n: 9223372036854775808\n", "3:8: nodes.x.n: 9223372036854775808 is beyond the 64-bit integers Nix holds; quote it to make it a string", "nodes.x.n"},
		{"yaml integer past 64 bits, negative", nil, "n: -9223372036854775809\n", "1:4: n: -9223372036854775809 is beyond the 64-bit integers Nix holds; quote it to make it a string", "n"},
		{"yaml integer past uint64", nil, "n: [18446744073709551616]\n", `1:5: n."0": 18446744073709551616 is beyond the 64-bit integers Nix holds; quote it to make it a string`, `n."0"`},
		{"yaml largest integer", nil, "n: 9223372036854775807\n", "", ""},
		{"json integer past 64 bits", nil, `{"nodes": {"x": {"n": 9223372036854775808}}}`, "nodes.x.n: 9223372036854775808 is beyond the 64-bit integers Nix holds; quote it to make it a string", "nodes.x.n"},
		{"json largest negative integer", nil, `{"n": -9223372036854775808}`, "", ""},
		{"json float past float64", nil, `{"f": [1e400]}`, `f."0": 1e400 is beyond the floating-point numbers Nix holds`, `f."0"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeAt([]byte(tt.in), tt.at)
			if tt.want == "" && tt.path == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			if tt.want != "" && err.Error() != tt.want {
				t.Errorf("error\n got: %s\nwant: %s", err, tt.want)
			}
			var de *DecodeError
			if !errors.As(err, &de) || de.Path != tt.path {
				t.Errorf("path %q, want %q (%v)", de.Path, tt.path, err)
			}
		})
	}
}

// aliasBomb is the "billion laughs" in YAML: each level uses the one before ten times.
func aliasBomb() string {
	var b strings.Builder
	b.WriteString("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(&b, "l%d: &l%d [", i, i)
		for j := 0; j < 10; j++ {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*l%d", i-1)
		}
		b.WriteString("]\n")
	}
	return b.String()
}
