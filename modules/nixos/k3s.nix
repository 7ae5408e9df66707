# services.k3s.package from the cluster's k3s.version (v1.34.x -> pkgs.k3s_1_34), the one k3s setting that needs
# pkgs; everything else about the service comes from the core's data (base.nix).
{ lib, pkgs, nix8s, ... }:
let
  inherit (nix8s) cluster;
  version = cluster.k3sVersion;
  where = "nix8s: clusters.${cluster.name}.k3s.version";
  minor = if version == null then null else builtins.match "v?([0-9]+)\\.([0-9]+)([.+].*)?" version;
  attr = "k3s_${builtins.elemAt minor 0}_${builtins.elemAt minor 1}";

  # Releases past their end of life stay in nixpkgs as aliases that throw: only attributes that evaluate count.
  evaluates = n: (builtins.tryEval pkgs.${n}).success;
  available = lib.filter (n: builtins.match "k3s_[0-9]+_[0-9]+" n != null && evaluates n) (lib.attrNames pkgs);

  package =
    if version == null then pkgs.k3s
    else if minor == null then throw "${where}: ${version} is not a k3s version; write it as k3s names releases, e.g. v1.34.2+k3s1"
    else if pkgs ? ${attr} && evaluates attr then pkgs.${attr}
    else throw ''
      ${where}: ${version} needs pkgs.${attr}, which ${if pkgs ? ${attr} then "this nixpkgs has removed (end of life)" else "this nixpkgs does not have"};
      available: ${lib.concatStringsSep ", " available}. Pick one of those minor versions or change the nixpkgs input.'';

  # nixpkgs decides the patch release of a minor version; say so when it differs from the one asked for.
  wanted = lib.removePrefix "v" version;
  differs = version != null && minor != null && builtins.elemAt minor 2 != null
    && (package.version or wanted) != wanted;
in
{
  # mkDefault: a user's nixosModules can still pin their own k3s build.
  services.k3s.package = lib.mkDefault (lib.warnIf differs
    "${where} is ${version}; nixpkgs' ${attr} is ${package.version or "?"}, which is what gets installed"
    package);
}
