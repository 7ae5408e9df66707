# DRBD 9 for LINSTOR/Piraeus (Cozystack's storage): the out-of-tree kernel module, since the in-tree one is 8.4.
# Both are named drbd, so nothing is blacklisted: a module from extraModulePackages takes precedence.
{ config, lib, nix8s, ... }:
let
  inherit (lib) mkOption types;
  data = nix8s.member.config.extensions.drbd or { };
  cfg = config.nix8s.extensions.drbd;
in
{
  options.nix8s.extensions.drbd = {
    enable = mkOption {
      type = types.bool;
      # Cozystack needs DRBD on every member: LINSTOR's satellites run on all nodes (lib/cozystack.nix).
      default = (data.enable or false) == true || (nix8s.cluster.cozystack or null) != null;
      defaultText = lib.literalMD "`extensions.drbd.enable` of the member's node config, or true in a cluster with Cozystack";
      readOnly = true;
      description = "Whether this member serves DRBD storage; set it in the nix8s config, other modules may read it.";
    };
    package = mkOption {
      type = types.package;
      default = config.boot.kernelPackages.drbd;
      defaultText = lib.literalExpression "config.boot.kernelPackages.drbd";
      description = "The DRBD 9 kernel module package; it must match `boot.kernelPackages`.";
    };
  };

  config = lib.mkIf cfg.enable (lib.mkMerge [
    {
      boot.extraModulePackages = [ cfg.package ];
      boot.kernelModules = [ "drbd" "drbd_transport_tcp" ];
    }
    # LINSTOR's satellite drives DRBD itself and wants no user-mode helper; services.drbd (host drbd-utils) sets
    # its own helper, so leave that combination to it.
    (lib.mkIf (!config.services.drbd.enable) {
      boot.extraModprobeConfig = ''
        options drbd usermode_helper=disabled
      '';
    })
  ]);
}
