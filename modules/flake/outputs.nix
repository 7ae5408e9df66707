# nixosConfigurations.<cluster>-<member> for every member of every cluster: the core's plan and NixOS data,
# our NixOS modules, disko, the user's nixosModules and what extensions put in nixosModulesFor.
{ lib, config, inputs, ... }:
let
  cfg = config.nix8s;
  core = import ../../lib;
  plan = core.plan cfg.resolved;
  data = core.nixos cfg.resolved;

  # Nix-only modules travel outside the core: from the template (by name or by value) and the member.
  userModules = c: m:
    let
      member = cfg.resolved.clusters.${c}.members.${m};
      template = if builtins.isAttrs member.node then member.node else cfg.resolved.nodes.${member.node} or { };
    in
    (template.nixosModules or [ ]) ++ (member.nixosModules or [ ]);

  system = c: m:
    let host = "${c}-${m}"; in
    inputs.nixpkgs.lib.nixosSystem {
      modules = [
        inputs.disko.nixosModules.disko
        ../nixos
        {
          _module.args.nix8s = {
            cluster = plan.clusters.${c};
            member = plan.clusters.${c}.members.${m};
            nixos = data.${host};
          };
        }
      ]
      ++ userModules c m
      ++ (cfg.nixosModulesFor.${host} or [ ]);
    };
in
{
  config.flake.nixosConfigurations = lib.mkMerge (lib.mapAttrsToList
    (c: cp: lib.mapAttrs' (m: _: lib.nameValuePair "${c}-${m}" (system c m)) cp.members)
    plan.clusters);
}
