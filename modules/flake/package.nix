# Exposes the Go tools as packages.<system>.nix8s and lets the apps pick the build they run.
{ lib, ... }:
{
  options.nix8s.package = lib.mkOption {
    type = lib.types.functionTo lib.types.package;
    default = pkgs: pkgs.callPackage ./nix8s-package.nix { };
    defaultText = lib.literalMD "nix8s built from the nix8s flake's source";
    description = "Function from `pkgs` to the nix8s package the apps run (`bin/nix8s`, `bin/nix8sd`).";
  };

  config.perSystem = { pkgs, ... }: {
    packages.nix8s = pkgs.callPackage ./nix8s-package.nix { };
  };
}
