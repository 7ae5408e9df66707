# Every nix8s NixOS module; a member's system imports this and passes `nix8s` in nixosSystem's specialArgs
# (`{ cluster; member; nixos; }`: the pure core's plan cluster, plan member and NixOS data).
{
  imports = [
    ./base.nix
    ./k3s.nix
    ./ha.nix
    # Members of Lima clusters only (nix8s.cluster.lima set by the plan).
    ./lima-guest.nix
    ./extensions/nvidia.nix
    ./extensions/drbd.nix
    ./extensions/zfs.nix
    ./extensions/monitoring.nix
  ];
}
