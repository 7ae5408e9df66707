# Applies the option values the pure core rendered for this member (lib/nixos.nix): `settings` as they are,
# `defaults` with mkDefault so the user's nixosModules can override them.
{ lib, nix8s, ... }:
let
  mkDefaults = v: if lib.isAttrs v then lib.mapAttrs (_: mkDefaults) v else lib.mkDefault v;
in
{
  config = lib.mkMerge [
    nix8s.nixos.settings
    (mkDefaults nix8s.nixos.defaults)
  ];
}
