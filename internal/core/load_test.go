package core

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
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
