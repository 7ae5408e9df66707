# Selects the k3s package for the cluster's k3s.version (v1.31.x -> pkgs.k3s_1_31): the one k3s setting that
# needs pkgs. Everything else about the service comes from the core's data.
{ lib, pkgs, nix8s, ... }:
let
  inherit (nix8s) cluster;
  version = cluster.k3sVersion;
  parts = if version == null then null else builtins.match "v([0-9]+)\\.([0-9]+)\\.[0-9]+\\+k3s[0-9]+" version;
  attr = "k3s_${builtins.elemAt parts 0}_${builtins.elemAt parts 1}";
  available = builtins.filter (n: builtins.match "k3s_[0-9]+_[0-9]+" n != null) (builtins.attrNames pkgs);
  package =
    if version == null then pkgs.k3s
    else pkgs.${attr} or (throw ''
      nix8s: clusters.${cluster.name}.k3s.version: ${version} needs pkgs.${attr}, which this nixpkgs does not have;
      available: ${lib.concatStringsSep ", " available}. Pick one of those versions or update the nixpkgs input.'');
  # The patch release comes from nixpkgs; say so when it differs from the one asked for.
  wanted = lib.removePrefix "v" (builtins.head (lib.splitString "+" version));
in
{
  services.k3s.package = lib.warnIf (version != null && (package.version or wanted) != wanted)
    "nix8s: clusters.${cluster.name}.k3s.version is ${version}; nixpkgs' ${attr} is ${package.version or "?"}"
    package;
}
