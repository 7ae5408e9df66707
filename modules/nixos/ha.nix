# The API VIP follows a working haproxy: the core renders keepalived and haproxy as data, but the health check
# needs a store path. Without it keepalived keeps the VIP on a server whose haproxy has died.
{ lib, pkgs, nix8s, ... }:
let
  inherit (nix8s) cluster member;
  onServer = (cluster.ha.loadBalancer or null) == "keepalived" && member.role == "server";
in
{
  config = lib.mkIf onServer {
    services.keepalived.vrrpScripts.nix8s-haproxy = {
      script = "${pkgs.procps}/bin/pgrep --exact haproxy";
      interval = 2;
      # keepalived's default script user (keepalived_script) does not exist on NixOS.
      user = "root";
    };
    # lib/nixos.nix tracks this script by name in the instance's extraConfig (not trackScripts: see there) and
    # turns on script security, which accepts this root script because no part of its store path is writable by
    # anyone but root (/nix/store is sticky).
  };
}
