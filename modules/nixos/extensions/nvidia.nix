# NVIDIA GPUs: the driver from the requested channel and the container runtime k3s's containerd picks up.
# The option values that need no pkgs (videoDrivers, modesetting, open, container toolkit) come from the core.
{ config, lib, pkgs, nix8s, ... }:
let
  nv = nix8s.member.config.extensions.nvidia or { };
in
{
  config = lib.mkIf (nv.enable or false) (lib.mkMerge [
    { hardware.nvidia.package = config.boot.kernelPackages.nvidiaPackages.${nv.package or "stable"}; }
    # k3s registers an "nvidia" containerd runtime when it finds nvidia-container-runtime on its PATH.
    (lib.mkIf (nv.containerRuntime or true) {
      systemd.services.k3s.path = [ pkgs.nvidia-container-toolkit.tools ];
    })
  ]);
}
