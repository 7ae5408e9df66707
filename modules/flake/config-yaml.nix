# packages.<system>.config-yaml: the config as YAML (JSON is YAML), secret values and Nix-only values left out,
# for tools and people who do not read Nix (design section 11).
{ config, ... }:
let
  exported = config.nix8s.evaluated.exportable;
in
{
  config.perSystem = { pkgs, ... }: {
    packages.config-yaml = pkgs.writeTextDir "config.yaml" (builtins.toJSON exported + "\n");
  };
}
