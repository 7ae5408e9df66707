# NVIDIA GPUs: the driver package of the requested channel, permission for its unfree license, and the container
# runtimes k3s registers when it finds them on its PATH. Option values that need no pkgs (videoDrivers, open,
# modesetting, container toolkit) come from the core's data.
{ config, lib, pkgs, nix8s, ... }:
let
  inherit (lib) mkOption types;
  data = nix8s.member.config.extensions.nvidia or { };
  cfg = config.nix8s.extensions.nvidia;
  channel = data.package or "stable";
  channels = config.boot.kernelPackages.nvidiaPackages;
  where = "nix8s: clusters.${nix8s.cluster.name}.members.${nix8s.member.name}: extensions.nvidia.package";
in
{
  options.nix8s.extensions.nvidia = {
    enable = mkOption {
      type = types.bool;
      default = (data.enable or false) == true;
      defaultText = lib.literalMD "`extensions.nvidia.enable` of the member's node config";
      readOnly = true;
      description = "Whether this member has NVIDIA GPUs; set it in the nix8s config, other modules may read it.";
    };
    package = mkOption {
      type = types.package;
      default =
        if lib.isAttrs (channels.${channel} or null) then channels.${channel}
        else throw "${where}: no driver channel \"${channel}\"; known: ${lib.concatStringsSep ", " (lib.attrNames channels)}";
      defaultText = lib.literalExpression "config.boot.kernelPackages.nvidiaPackages.<extensions.nvidia.package, default \"stable\">";
      description = "The NVIDIA driver. Override it for a driver nixpkgs does not package (`nvidiaPackages.mkDriver`).";
    };
    allowUnfree = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Allow the driver's unfree packages through `nixpkgs.config.allowUnfreePredicate`. Turn it off when your own
        modules configure unfree packages or pass an external `pkgs`.
      '';
    };
  };

  config = lib.mkIf cfg.enable (lib.mkMerge [
    { hardware.nvidia.package = cfg.package; }
    (lib.mkIf cfg.allowUnfree {
      nixpkgs.config.allowUnfreePredicate = p:
        builtins.elem (lib.getName p) [ "nvidia-x11" "nvidia-settings" "nvidia-persistenced" "nvidia-fabricmanager" ];
    })
    # k3s looks nvidia-container-runtime (handler "nvidia") and nvidia-container-runtime.cdi ("nvidia-cdi") up in
    # its PATH and adds them to containerd; on NixOS the CDI one works, with the spec the container toolkit writes.
    (lib.mkIf ((data.containerRuntime or true) == true) {
      systemd.services.k3s.path = [ pkgs.nvidia-container-toolkit.tools ];
    })
  ]);
}
