# DRBD 9 from the out-of-tree kernel module (linuxPackages.drbd); the in-tree module is the old 8.4, which
# LINSTOR/Piraeus (Cozystack's storage) cannot use. services.drbd (drbd-utils) comes from the core's data.
{ config, lib, nix8s, ... }:
let
  drbd = nix8s.member.config.extensions.drbd or { };
in
{
  config = lib.mkIf (drbd.enable or false) {
    boot.extraModulePackages = [ config.boot.kernelPackages.drbd ];
    # A module in extraModulePackages takes precedence over the in-tree one of the same name.
    boot.kernelModules = [ "drbd" ];
  };
}
