# flakeModules.default: everything a flake needs to describe nix8s clusters and get their systems and apps.
{
  imports = [
    ./core.nix
    ./outputs.nix
    ./config-yaml.nix
    ./package.nix
    ./apps.nix
    ./pxe.nix
    ./lima.nix
    # Next: cozystack.nix.
  ];
}
