package main

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// docs/options.md is generated from the JSON Schema (lib/schema.nix), the one source of field descriptions: the
// flake module's option docs come from it too (tests/glue_test.go checks that), and editors show the same
// text. Every field needs a description; the test fails when one has none or the committed file is stale.
func TestOptionsReference(t *testing.T) {
	requireNix(t)
	var schema map[string]any
	if err := json.Unmarshal(runNix8s(t, "schema"), &schema); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("# Configuration reference\n\n")
	b.WriteString("Generated from `lib/schema.nix` (what `nix8s schema` prints and editors show); `go test ./cmd/nix8s -run\n")
	b.WriteString("TestOptionsReference -update` rewrites it, and the test fails when it is out of date. The flake module's\n")
	b.WriteString("options (`nix8s.nodes`, `nix8s.clusters`, `nix8s.provisioning`) carry the same descriptions. `<name>` is any\n")
	b.WriteString("name: a node template, a cluster, a member. Every section also accepts fields of its own (they reach the\n")
	b.WriteString("core, which warns of none and plans with what it knows); the rules that span fields (references, HA,\n")
	b.WriteString("addresses) are the core's, in `docs/core.md`. Nix-only options (`nixosModules`, `nix8s.inventoryFile`,\n")
	b.WriteString("`nix8s.nixosModulesFor`) are documented in `modules/flake/core.nix`.\n")
	props, _ := schema["properties"].(map[string]any)
	// A member takes every field of a node template (as an override): listed once, under nodes.
	template := props["nodes"].(map[string]any)["additionalProperties"].(map[string]any)["properties"].(map[string]any)
	for _, top := range sortedKeys(props) {
		fmt.Fprintf(&b, "\n## `%s`\n\n| field | type | description |\n|---|---|---|\n", top)
		optionRows(t, &b, top, props[top].(map[string]any), template)
	}
	golden(t, "docs/options.md", []byte(b.String()))
}

func optionRows(t *testing.T, b *strings.Builder, path string, f map[string]any, template map[string]any) {
	desc, _ := f["description"].(string)
	if desc == "" {
		t.Errorf("lib/schema.nix: %s has no description", path)
	}
	if ex, ok := f["examples"].([]any); ok && len(ex) > 0 {
		e, _ := json.Marshal(ex[0])
		desc += fmt.Sprintf(" Example: `%s`.", e)
	}
	if d, ok := f["default"]; ok {
		e, _ := json.Marshal(d)
		desc += fmt.Sprintf(" Default: `%s`.", e)
	}
	if f["deprecated"] == true {
		desc = "**Deprecated.** " + desc
	}
	props, _ := f["properties"].(map[string]any)
	isMember := path == "clusters.<name>.members.<name>"
	if isMember {
		desc += " Besides the fields below, every field of `nodes.<name>`."
	}
	fmt.Fprintf(b, "| `%s` | %s | %s |\n", path, schemaType(f), strings.ReplaceAll(desc, "|", `\|`))
	for _, k := range sortedKeys(props) {
		if isMember && reflect.DeepEqual(props[k], template[k]) {
			continue
		}
		optionRows(t, b, path+"."+k, props[k].(map[string]any), template)
	}
	if item, ok := f["additionalProperties"].(map[string]any); ok {
		optionRows(t, b, path+".<name>", item, template)
	}
}

func schemaType(f map[string]any) string {
	typ, _ := f["type"].(string)
	switch {
	case f["enum"] != nil:
		var vs []string
		for _, v := range f["enum"].([]any) {
			vs = append(vs, fmt.Sprintf("`%v`", v))
		}
		return strings.Join(vs, " \\| ")
	case typ == "array":
		item, _ := f["items"].(map[string]any)
		return "list of " + schemaType(item)
	case typ == "object":
		if f["additionalProperties"] != nil && f["additionalProperties"] != true && f["properties"] == nil {
			return "attribute set by name"
		}
		return "attribute set"
	case typ == "integer":
		if lo, ok := f["minimum"].(float64); ok {
			if hi, ok := f["maximum"].(float64); ok {
				return fmt.Sprintf("integer %g-%g", lo, hi)
			}
			return fmt.Sprintf("integer ≥ %g", lo)
		}
		return "integer"
	case typ == "string" && f["pattern"] != nil:
		return "string (pattern)"
	case typ == "":
		return "any"
	}
	return typ
}

func sortedKeys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
