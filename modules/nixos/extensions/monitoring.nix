# Node metrics: the core enables node-exporter and opens its port; here the systemd collector, so failed units
# (k3s, keepalived, haproxy) show up next to the hardware metrics.
{ config, lib, nix8s, ... }:
let
  data = nix8s.member.config.extensions.monitoring or { };
in
{
  options.nix8s.extensions.monitoring.enable = lib.mkOption {
    type = lib.types.bool;
    default = (data.enable or false) == true;
    defaultText = lib.literalMD "`extensions.monitoring.enable` of the member's node config";
    readOnly = true;
    description = "Whether this member exports node metrics; set it in the nix8s config, other modules may read it.";
  };

  config = lib.mkIf config.nix8s.extensions.monitoring.enable {
    services.prometheus.exporters.node.enabledCollectors = lib.mkDefault [ "systemd" ];
  };
}
