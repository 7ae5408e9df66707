# A user's own NixOS module, added to every member made from the server-nvme template (Nix only).
{ ... }:
{
  boot.kernel.sysctl."vm.swappiness" = 10;
  services.fstrim.enable = true;
}
