# Every nix8s NixOS module; a member's system imports this and gets the `nix8s` module argument
# (`{ cluster; member; nixos; }` from the pure core's plan and NixOS data).
{
  imports = [
    ./base.nix
    ./k3s.nix
    ./extensions/nvidia.nix
    ./extensions/drbd.nix
  ];
}
