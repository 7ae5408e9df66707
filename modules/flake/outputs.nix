# nixosConfigurations.<cluster>-<member> for every member of every cluster: the core's plan and NixOS data,
# our NixOS modules, disko, the user's nixosModules and what extensions put in nixosModulesFor.
{ lib, config, inputs, ... }:
let
  cfg = config.nix8s;
  core = import ../../lib;
  plan = core.plan cfg.resolved;
  data = core.nixos cfg.resolved;

  # The flake's own nixpkgs and disko when it has them (its lock decides), else the ones nix8s was locked with.
  nixpkgs = inputs.nixpkgs or cfg.defaultInputs.nixpkgs;
  disko = inputs.disko or cfg.defaultInputs.disko;

  # Nix-only modules travel outside the core: from the template (by name or by value) and the member.
  userModules = c: m:
    let
      member = cfg.resolved.clusters.${c}.members.${m};
      template = if builtins.isAttrs member.node then member.node else cfg.resolved.nodes.${member.node} or { };
    in
    (template.nixosModules or [ ]) ++ (member.nixosModules or [ ]);

  system = c: m:
    let host = "${c}-${m}"; in
    nixpkgs.lib.nixosSystem {
      # specialArgs, not _module.args: base.nix builds `config` from this data, and a _module.args value cannot
      # decide which options a module defines (the module system needs `config` to find _module.args).
      specialArgs.nix8s = {
        cluster = plan.clusters.${c};
        member = plan.clusters.${c}.members.${m};
        nixos = data.${host};
      };
      modules = [
        disko.nixosModules.disko
        ../nixos
      ]
      ++ userModules c m
      ++ (cfg.nixosModulesFor.${host} or [ ]);
    };
in
{
  options.nix8s.defaultInputs = lib.mkOption {
    type = lib.types.lazyAttrsOf lib.types.raw;
    default = { };
    internal = true;
    description = "`nixpkgs` and `disko` for flakes that lack those inputs; set by nix8s' flakeModules.default.";
  };

  config.flake.nixosConfigurations = lib.mkMerge (lib.mapAttrsToList
    (c: cp: lib.mapAttrs' (m: _: lib.nameValuePair "${c}-${m}" (system c m)) cp.members)
    plan.clusters);
}
