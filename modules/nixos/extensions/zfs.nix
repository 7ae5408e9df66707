# ZFS data pools next to an ext4 root: the core turns ZFS on and derives networking.hostId; here the defaults a
# node with data pools wants. (nixpkgs' k3s module already puts zfs on k3s's PATH when ZFS is enabled.)
{ config, lib, nix8s, ... }:
let
  data = nix8s.member.config.extensions.zfs or { };
in
{
  options.nix8s.extensions.zfs.enable = lib.mkOption {
    type = lib.types.bool;
    default = (data.enable or false) == true;
    defaultText = lib.literalMD "`extensions.zfs.enable` of the member's node config";
    readOnly = true;
    description = "Whether this member uses ZFS; set it in the nix8s config, other modules may read it.";
  };

  config = lib.mkIf config.nix8s.extensions.zfs.enable {
    # The root is not on ZFS, so forced imports would only bypass the hostId check that protects shared pools.
    boot.zfs.forceImportRoot = lib.mkDefault false;
    services.zfs.autoScrub.enable = lib.mkDefault true;
    services.zfs.trim.enable = lib.mkDefault true;
  };
}
