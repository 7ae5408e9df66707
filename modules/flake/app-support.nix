# What the flake apps (apps.nix, pxe.nix) share, so they hand nix8s the same config file and package: call it
# with the flake-parts module arguments, then with perSystem's `pkgs`.
{ lib, config, self }:
pkgs:
let
  cfg = config.nix8s;
in
{
  # The Go tools the apps run (`bin/nix8s`, `bin/nix8sd`).
  nix8s = cfg.package pkgs;
  # The config handed to the tools: data only and without secret values (it goes into the world-readable store).
  configFile = pkgs.writeText "nix8s-config.json" (builtins.toJSON cfg.evaluated.exportable);
  # The flake the apps act on: this one, as the path it was evaluated from.
  flakeRef = toString self;
  # An app running a shell script (writeShellApplication: strict mode, shellcheck).
  app = name: text: {
    type = "app";
    program = lib.getExe (pkgs.writeShellApplication { inherit name text; });
  };
}
