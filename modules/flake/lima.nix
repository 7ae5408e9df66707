# apps.<system>.lima-up-<c>, lima-down-<c>, lima-status-<c> for every cluster that runs in Lima
# (provisioning.lima, docs/lima.md): `nix run .#lima-up-dev` starts one VM per member, each booting its own
# nixosConfigurations.<c>-<m> (image built from this flake), in join order. Extra arguments go to nix8s
# (`nix run .#lima-down-dev -- --delete`).
{ lib, config, self, ... }:
let
  cfg = config.nix8s;
  support = import ./app-support.nix { inherit lib config self; };
  # The plan names each Lima cluster's network (null for the others).
  limaClusters = lib.filter (c: (cfg.evaluated.plan.clusters.${c}.lima or null) != null) (lib.attrNames cfg.evaluated.plan.clusters);
in
{
  config.perSystem = { pkgs, ... }:
    let
      inherit (support pkgs) nix8s configFile flakeRef app;
      # Lima runs as the user, without root; limactl comes from the user's PATH (Homebrew, nixpkgs' lima, ...),
      # so the Lima version is the user's.
      lima = c: action: app "lima-${action}-${c}" ''
        exec ${lib.getExe nix8s} lima ${action} ${lib.escapeShellArgs [ "--config" "${configFile}" "--flake" flakeRef ]} "$@" ${lib.escapeShellArg c}
      '';
    in
    lib.mkIf (cfg.apps.enable && limaClusters != [ ]) {
      apps = lib.listToAttrs (lib.concatMap (c: map (a: lib.nameValuePair "lima-${a}-${c}" (lima c a)) [ "up" "down" "status" ]) limaClusters);
    };
}
