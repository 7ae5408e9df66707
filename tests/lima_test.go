package tests

import (
	"encoding/json"
	"reflect"
	"testing"
)

// The provisioning.lima rules and the Lima view (lib/lima.nix), one case per behaviour in lima-cases.nix.
func TestLimaCases(t *testing.T) {
	var cases []struct {
		Name     string          `json:"name"`
		Expected json.RawMessage `json:"expected"`
		Actual   json.RawMessage `json:"actual"`
	}
	if err := json.Unmarshal(nixEval(t, "import ./tests/lima-cases.nix"), &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) < 15 {
		t.Fatalf("only %d cases evaluated", len(cases))
	}
	for _, c := range cases {
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

// Every option modules/nixos/lima-guest.nix sets is in lib/nixos-options.nix. nixpkgs cannot be had here, so the
// module is evaluated with a stand-in of the few lib and pkgs functions it calls (mkIf, mkDefault, getExe,
// writeShellApplication): this checks the paths it sets, not their types; the module is off without a Lima network.
func TestLimaGuestModuleUsesKnownOptions(t *testing.T) {
	opts := loadOptions(t)
	stub := `let
  lib = { mkIf = c: v: { _type = "if"; condition = c; content = v; }; mkDefault = v: v; getExe = d: "/nix/store/stub/bin/${d.name}"; };
  pkgs = { bash = "bash"; coreutils = "coreutils"; gawk = "gawk"; writeShellApplication = a: a // { text = builtins.stringLength a.text; }; };
  m = lima: import ./modules/nixos/lima-guest.nix { inherit lib pkgs; nix8s = { cluster = { inherit lima; }; }; };
  on = m { gateway = "192.168.107.2"; };
in { on = on.config.content; onIf = on.config.condition; off = (m null).config.condition; }`
	var got struct {
		On   map[string]any `json:"on"`
		OnIf bool           `json:"onIf"`
		Off  bool           `json:"off"`
	}
	if err := json.Unmarshal(nixEval(t, stub), &got); err != nil {
		t.Fatal(err)
	}
	if !got.OnIf || got.Off {
		t.Errorf("the module is on with a Lima network: %v, off without one: %v; want true, true", got.OnIf, !got.Off)
	}
	bad := map[string]bool{}
	checkPaths(got.On, nil, opts, bad)
	for p := range bad {
		t.Errorf("lima-guest.nix sets %s, which is not in lib/nixos-options.nix (check nixpkgs and add it with its file)", p)
	}
	if len(got.On) < 8 {
		t.Errorf("the module set only %d top-level options: %v", len(got.On), got.On)
	}
}
