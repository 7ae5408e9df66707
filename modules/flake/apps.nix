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
      `rebuild-<c>-all`, `ssh-<c>-<m>`, `kubeconfig-<c>`, `gen-secrets`), for clusters with Cozystack
      `cozystack-bootstrap-<c>` and `cozystack-status-<c>`, and, with `provisioning.pxe` set, the network boot
      servers (`pxe-server-<c>`) to `apps.<system>`.
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
        }
        // cozystack c (cp.cozystack or null);
      # Cozystack's manifests are fixed outputs: Nix downloads each once and refuses it unless it has the pinned
      # hash (nix8s checks it again). One without a pinned hash is not fetched: bootstrap then says what to set.
      cozystack = c: cz: if cz == null then { } else (
        let pinned = flag: p: if p.hash == null then [ ] else [ flag "${pkgs.fetchurl { inherit (p) url hash; }}" ]; in {
          "cozystack-bootstrap-${c}" = app "cozystack-bootstrap-${c}" ([ "cozystack" "--config" "${configFile}" ]
            ++ pinned "--crds" cz.manifests.crds ++ pinned "--operator" cz.manifests.operator ++ [ "bootstrap" c ]);
          "cozystack-status-${c}" = app "cozystack-status-${c}" [ "cozystack" "--config" "${configFile}" "status" c ];
        });
    in
    lib.mkIf cfg.apps.enable {
      apps = lib.mkMerge ((lib.mapAttrsToList perCluster plan) ++ [
        { gen-secrets = app "gen-secrets" [ "gen-secrets" ]; }
      ]);
    };
}
