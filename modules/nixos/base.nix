# Applies the option values the pure core rendered for this member (lib/nixos.nix): `settings` as they are,
# `defaults` with mkDefault so the user's nixosModules can override them. Also the platform, which nixosSystem
# needs and the core does not model beyond the node's `system` field.
{ lib, nix8s, ... }:
let
  mkDefaults = v: if lib.isAttrs v then lib.mapAttrs (_: mkDefaults) v else lib.mkDefault v;
in
{
  config = lib.mkMerge [
    nix8s.nixos.settings
    (mkDefaults nix8s.nixos.defaults)
    { nixpkgs.hostPlatform = lib.mkDefault (nix8s.member.config.system or "x86_64-linux"); }
  ];
}
