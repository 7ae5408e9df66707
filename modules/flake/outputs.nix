# nixosConfigurations.<cluster>-<member> for every member of every cluster: the core's plan and NixOS data,
# our NixOS modules, disko, the user's nixosModules and what extensions put in nixosModulesFor; and the
# network-boot images: each member's installer (system.build.nix8sNetboot) and the discovery image.
{ lib, config, inputs, ... }:
let
  cfg = config.nix8s;
  # The core's one evaluation of the config (core.nix), shared with the apps.
  inherit (cfg.evaluated) plan;
  data = cfg.evaluated.nixos;

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
        # config.system.build.nix8sNetboot, the member's network installer (nix8sd builds and serves it).
        ../nixos/installer.nix
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

  # The discovery image nix8sd boots unknown machines into (`nix build .#nix8s-discovery-netboot`,
  # internal/pxe/images.go: DiscoveryInstallable). For x86-64 whatever the building system, like the iPXE
  # binaries of pxe.nix: those are the only machines nix8sd boots; elsewhere it needs an x86_64-linux builder.
  config.perSystem = { system, ... }: {
    packages = lib.mkIf (lib.hasSuffix "-linux" system) {
      nix8s-discovery-netboot = (nixpkgs.lib.nixosSystem {
        modules = [ ../nixos/discovery.nix { nixpkgs.hostPlatform = "x86_64-linux"; } ];
      }).config.system.build.nix8sNetboot;
    };
  };
}
