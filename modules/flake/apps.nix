# The flake apps of design 4.2: thin wrappers that run one `nix8s` operation on this flake's config, so the
# CLI, the daemon's jobs and `nix run .#…` share one implementation.
{ lib, config, self, ... }:
let
  cfg = config.nix8s;
  support = import ./app-support.nix { inherit lib config self; };
  plan = cfg.evaluated.plan.clusters;
in
{
  options.nix8s.apps.enable = lib.mkOption {
    type = lib.types.bool;
    default = true;
    description = ''
      Whether to add the operation apps (`nixos-anywhere-<c>-<m>`, `nixos-anywhere-<c>-all`, `rebuild-<c>-<m>`,
      `rebuild-<c>-all`, `ssh-<c>-<m>`, `kubeconfig-<c>`, `gen-secrets`) and, with `provisioning.pxe` set, the
      network boot servers (`pxe-server-<c>`) to `apps.<system>`.
    '';
  };

  config.perSystem = { pkgs, ... }:
    let
      shared = support pkgs;
      inherit (shared) nix8s configFile flakeRef;
      app = name: args: shared.app name ''exec ${lib.getExe nix8s} ${lib.escapeShellArgs args} "$@"'';
      common = [ "--config" "${configFile}" "--flake" flakeRef ];
      perCluster = c: cp:
        lib.listToAttrs (lib.concatMap (m: [
          (lib.nameValuePair "nixos-anywhere-${c}-${m}" (app "nixos-anywhere-${c}-${m}" ([ "install" ] ++ common ++ [ c m ])))
          (lib.nameValuePair "rebuild-${c}-${m}" (app "rebuild-${c}-${m}" ([ "rollout" ] ++ common ++ [ c m ])))
          (lib.nameValuePair "ssh-${c}-${m}" (app "ssh-${c}-${m}" ([ "ssh" "--config" "${configFile}" c m ])))
        ]) (lib.attrNames cp.members))
        // {
          "nixos-anywhere-${c}-all" = app "nixos-anywhere-${c}-all" ([ "install" ] ++ common ++ [ c "--all" ]);
          "rebuild-${c}-all" = app "rebuild-${c}-all" ([ "rollout" ] ++ common ++ [ c "--all" ]);
          "kubeconfig-${c}" = app "kubeconfig-${c}" [ "kubeconfig" "--config" "${configFile}" c ];
        };
    in
    lib.mkIf cfg.apps.enable {
      apps = lib.mkMerge ((lib.mapAttrsToList perCluster plan) ++ [
        { gen-secrets = app "gen-secrets" [ "gen-secrets" ]; }
      ]);
    };
}
