# apps.<system>.pxe-server-<cluster>: nix8sd serving network boot for one cluster from this flake, so
# `nix run .#pxe-server-prod` on a machine of the boot network installs prod's members by MAC.
{ lib, config, self, ... }:
let
  cfg = config.nix8s;
  support = import ./app-support.nix { inherit lib config self; };
  # Pruned away when empty, like every section of the resolved config.
  enable = cfg.apps.enable && (cfg.resolved.provisioning or { }) ? pxe;
in
{
  config.perSystem = { pkgs, ... }:
    let
      inherit (support pkgs) nix8s configFile flakeRef app;
      # iPXE for the machines being booted, which are x86-64 (BIOS: undionly.kpxe, UEFI: snp.efi, else ipxe.efi;
      # nix8sd picks them by name, internal/pxe DefaultBootFiles), whatever the server runs on. nixpkgs' pkgs/by-name/ip/ipxe/package.nix builds `bin-x86_64-efi/ipxe.efi` when its host
      # platform is x86_64 and `bin/undionly.kpxe` when it is x86, and copies each to the top of $out
      # (`cp -v bin/undionly.kpxe $out`): the default build has both on x86_64-linux, no override needed. Built
      # for aarch64 it has only the arm64 ipxe.efi, so there it is cross-built for x86-64.
      ipxe = if pkgs.stdenv.hostPlatform.isx86_64 then pkgs.ipxe else pkgs.pkgsCross.gnu64.ipxe;
      # nix8sd keeps its inventory in an embedded PostgreSQL (pkgs.postgresql's initdb and postgres, found
      # through NIX8S_PG_BINDIR) and builds installer images with the nix on PATH. DHCP and TFTP need root.
      server = c: app "pxe-server-${c}" ''
        export NIX8S_PG_BINDIR=${lib.getBin pkgs.postgresql}/bin
        exec ${lib.getExe' nix8s "nix8sd"} serve ${lib.escapeShellArgs [
          "--config" "${configFile}" "--pxe-cluster" c "--flake" flakeRef "--ipxe-dir" "${ipxe}" ]} \
          --state-dir "''${XDG_STATE_HOME:-$HOME/.local/state}/nix8s/pxe-${c}" "$@"
      '';
    in
    lib.mkIf enable {
      # Interface, address and DHCP mode default to provisioning.pxe.server; nix8sd checks the core's PXE view
      # (members without a MAC, addresses outside the subnet, ...) before it serves anything.
      apps = lib.listToAttrs (map (c: lib.nameValuePair "pxe-server-${c}" (server c)) (lib.attrNames cfg.resolved.clusters));
    };
}
