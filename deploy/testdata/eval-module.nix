# Evaluates nixos-module.nix without nixpkgs: a miniature of lib (just what the module uses) and of the module
# system (option defaults merged under the settings given). Enough to check what the module sets; the real
# NixOS evaluation needs nixpkgs, which the tests here do not have.
settings:
let
  lib = {
    mkEnableOption = _: { default = false; };
    mkOption = o: o;
    mkIf = cond: v: if cond then v else { };
    optional = c: x: if c then [ x ] else [ ];
    optionals = c: xs: if c then xs else [ ];
    optionalAttrs = c: a: if c then a else { };
    concatMap = f: xs: builtins.concatLists (map f xs);
    literalExpression = s: s;
    escapeShellArgs = xs: builtins.concatStringsSep " " (map (x: "'" + x + "'") xs);
    types = {
      package = "package"; str = "str"; port = "port"; bool = "bool"; path = "path";
      nullOr = _: "nullOr"; enum = _: "enum"; listOf = _: "listOf"; ints.positive = "int";
    };
  };
  module = import ../nixos-module.nix;
  isOption = o: builtins.isAttrs o && o ? default || (builtins.isAttrs o && o ? type && o ? description);
  defaults = opts: builtins.mapAttrs (_: o: if isOption o then o.default or null else defaults o) opts;
  merge = a: b: a // builtins.mapAttrs (k: v: if builtins.isAttrs v && builtins.isAttrs (a.${k} or null) then merge a.${k} v else v) b;
  # Stand-ins for the packages the module takes from nixpkgs.
  pkgs = { nixos-anywhere = "/nix/store/x-nixos-anywhere"; nixos-rebuild = "/nix/store/x-nixos-rebuild"; openssh = "/nix/store/x-openssh"; ipxe = "/nix/store/x-ipxe";
    stdenv.hostPlatform.isx86_64 = true; pkgsCross.gnu64.ipxe = "/nix/store/x-ipxe-cross"; };
  options = (module { config = throw "options must not read config"; inherit lib pkgs; }).options.services.nix8sd;
  cfg = merge (defaults options) settings;
  evaluated = module { config = { services.nix8sd = cfg; nix.package = "/nix/store/nix"; }; inherit lib pkgs; };
in
evaluated.config
