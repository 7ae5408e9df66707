package tests

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
)

// glue is what tests/flake-glue.nix reports of the flake-parts modules: the systems, apps and packages a flake
// gets. The modules are evaluated with a miniature of lib, of the module system and of nixpkgs (the real ones
// cannot be had here): this checks the glue's wiring, not option types.
type glue struct {
	Systems map[string]struct {
		HostName     string `json:"hostName"`
		Role         string `json:"role"`
		ExtraModules int    `json:"extraModules"`
		HasNixOSData bool   `json:"hasNixOSData"`
	} `json:"systems"`
	Apps     map[string]string `json:"apps"`
	Packages []string          `json:"packages"`
}

func evalGlue(t *testing.T, nix8s string) glue {
	t.Helper()
	var g glue
	if err := json.Unmarshal(nixEval(t, "import ./tests/flake-glue.nix { nix8s = "+nix8s+"; }"), &g); err != nil {
		t.Fatal(err)
	}
	return g
}

// Every example's flake gets nixosConfigurations.<cluster>-<member> for each member of its plan, each with its
// member's specialArgs and NixOS data; the operation apps per member and per cluster (pxe-server-<c> only with
// provisioning.pxe); the config-yaml, nix8s and discovery image packages.
func TestFlakeGlueOutputs(t *testing.T) {
	for _, ex := range []string{"minimal", "ha", "multi-cluster", "lima", "cozystack"} {
		t.Run(ex, func(t *testing.T) {
			var plan struct {
				Clusters map[string]struct {
					Members map[string]struct {
						Role string `json:"role"`
					} `json:"members"`
					Cozystack *struct{} `json:"cozystack"`
					Lima      *struct{} `json:"lima"`
				} `json:"clusters"`
			}
			raw, err := os.ReadFile(filepath.Join("golden", ex+".plan.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(raw, &plan); err != nil {
				t.Fatal(err)
			}
			cfg, _ := os.ReadFile(filepath.Join("..", "examples", ex, "config.nix"))
			pxe := bytes.Contains(cfg, []byte("pxe"))
			g := evalGlue(t, "import ./examples/"+ex+"/config.nix")

			wantApps := []string{"gen-secrets"}
			var wantSystems []string
			for c, cp := range plan.Clusters {
				wantApps = append(wantApps, "nixos-anywhere-"+c+"-all", "rebuild-"+c+"-all", "kubeconfig-"+c)
				if pxe {
					wantApps = append(wantApps, "pxe-server-"+c)
				}
				if cp.Lima != nil {
					wantApps = append(wantApps, "lima-up-"+c, "lima-down-"+c, "lima-status-"+c)
				}
				if cp.Cozystack != nil {
					wantApps = append(wantApps, "cozystack-bootstrap-"+c, "cozystack-status-"+c)
				}
				for m, mp := range cp.Members {
					host := c + "-" + m
					wantSystems = append(wantSystems, host)
					wantApps = append(wantApps, "nixos-anywhere-"+host, "rebuild-"+host, "ssh-"+host)
					s, ok := g.Systems[host]
					if !ok {
						continue
					}
					if s.HostName != host || s.Role != mp.Role || !s.HasNixOSData || s.ExtraModules != 0 {
						t.Errorf("system %s: %+v; want its own member (%s) with NixOS data and no extra modules", host, s, mp.Role)
					}
				}
			}
			if got := keys(g.Systems); !slices.Equal(got, sorted(wantSystems)) {
				t.Errorf("nixosConfigurations: %v\nwant %v", got, sorted(wantSystems))
			}
			if got := keys(g.Apps); !slices.Equal(got, sorted(wantApps)) {
				t.Errorf("apps: %v\nwant %v", got, sorted(wantApps))
			}
			for name, typ := range g.Apps {
				if typ != "app" {
					t.Errorf("apps.%s has type %q, want app", name, typ)
				}
			}
			if want := []string{"config-yaml", "nix8s", "nix8s-discovery-netboot"}; !slices.Equal(g.Packages, want) {
				t.Errorf("packages: %v, want %v", g.Packages, want)
			}
		})
	}
}

// Nix-only modules reach exactly the systems they are for: a template's to every member made from it, a
// member's to that member, nixosModulesFor.<host> to that host.
func TestFlakeGlueNixOnlyModules(t *testing.T) {
	g := evalGlue(t, `(import ./examples/minimal/config.nix) // {
		nodes.standard = { install.disk = "/dev/sda"; nixosModules = [ { } ]; };
		clusters.dev = (import ./examples/minimal/config.nix).clusters.dev // {
			members = (import ./examples/minimal/config.nix).clusters.dev.members // {
				agent = (import ./examples/minimal/config.nix).clusters.dev.members.agent // { nixosModules = [ ({ ... }: { }) ]; };
			};
		};
		nixosModulesFor.dev-server = [ { } { } ];
	}`)
	for host, want := range map[string]int{"dev-server": 1 + 2, "dev-agent": 1 + 1} {
		if got := g.Systems[host].ExtraModules; got != want {
			t.Errorf("%s has %d extra modules, want %d", host, got, want)
		}
	}
}

// A config with errors fails the flake's evaluation with every error at once, each with its path.
func TestFlakeGlueRefusesInvalidConfig(t *testing.T) {
	cmd := exec.Command("nix-instantiate", "--eval", "--strict", "--json", "--expr",
		`import ./tests/flake-glue.nix { nix8s = (import ./examples/minimal/config.nix) // {
			clusters.dev.members.server = { node = "nope"; role = "boss"; ip = "10.0.0.300"; }; }; }`)
	cmd.Dir = ".."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil {
		t.Fatal("an invalid config evaluated")
	}
	for _, want := range []string{"nix8s: the config has 4 errors:",
		`clusters.dev.members.server.node: no node named "nope"`,
		`clusters.dev.members.server.role: "boss" is not a role`,
		`clusters.dev.members.server.ip: "10.0.0.300" is not an IPv4 address`} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("error output lacks %q:\n%s", want, stderr.String())
		}
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sorted(xs []string) []string {
	out := slices.Clone(xs)
	sort.Strings(out)
	return out
}

// The flake module's option docs are lib/schema.nix's: every nix8s.nodes/clusters/provisioning option the module
// declares has the description and example of the schema field at the same path, so the two cannot drift (and a
// field the module documents that the schema lacks fails the evaluation). Only the Nix-only options are the
// module's own.
func TestFlakeGlueOptionDocsAreTheSchemas(t *testing.T) {
	type doc struct {
		Description string `json:"description"`
		Example     any    `json:"example"`
	}
	var docs map[string]doc
	if err := json.Unmarshal(nixEval(t, "(import ./tests/flake-glue.nix { nix8s = import ./examples/minimal/config.nix; }).optionDocs"), &docs); err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(nixEval(t, "(import ./lib).schema"), &schema); err != nil {
		t.Fatal(err)
	}
	nixOnly := map[string]bool{"nixosModules": true, "_nix8sName": true}
	checked := 0
	for path, d := range docs {
		parts := strings.Split(strings.TrimPrefix(path, "nix8s."), ".")
		if !slices.Contains([]string{"nodes", "clusters", "provisioning"}, parts[0]) || nixOnly[parts[len(parts)-1]] {
			continue
		}
		node := any(schema)
		for _, p := range parts {
			m, _ := node.(map[string]any)
			if p == "<name>" {
				node = m["additionalProperties"]
			} else {
				props, _ := m["properties"].(map[string]any)
				node = props[p]
			}
		}
		field, ok := node.(map[string]any)
		if !ok {
			t.Errorf("%s: the module declares it, lib/schema.nix has no such field", path)
			continue
		}
		if field["description"] != d.Description {
			t.Errorf("%s: the module says %q, lib/schema.nix %q", path, d.Description, field["description"])
		}
		var example any
		if ex, ok := field["examples"].([]any); ok {
			example = ex[0]
		}
		if !reflect.DeepEqual(example, d.Example) {
			t.Errorf("%s: the module's example is %v, lib/schema.nix's %v", path, d.Example, example)
		}
		checked++
	}
	if checked < 20 {
		t.Errorf("only %d options checked; the walk over the module's options missed some: %v", checked, keys(docs))
	}
}
