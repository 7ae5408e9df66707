# The discovery image, so a machine nix8sd does not know shows up with its hardware: a netboot NixOS (nixpkgs'
# netboot-minimal) whose `nix8s-discover` service posts the machine's facts to nix8sd until they are taken, then
# powers off. It never touches a disk. config.system.build.nix8sNetboot is a directory with bzImage, initrd and
# cmdline, exposed as packages.<system>.nix8s-discovery-netboot (modules/flake/outputs.nix; docs/pxe.md).
#
# Nothing here could be evaluated or built (no nixpkgs on this project's machines); every option and attribute
# is checked against the nixpkgs file named next to it (docs/nixos-options-research.md).
{ config, lib, pkgs, ... }:
let
  # pkgs/by-name: jq/jq, ut/util-linux (lsblk), ip/iproute2 (ip); curl and coreutils (nproc, cat) in
  # pkgs/top-level/all-packages.nix. writeShellApplication: pkgs/build-support/trivial-builders/default.nix
  # (name, runtimeInputs, text; shellcheck at build time).
  discover = pkgs.writeShellApplication {
    name = "nix8s-discover";
    runtimeInputs = [ pkgs.curl pkgs.jq pkgs.util-linux pkgs.iproute2 pkgs.coreutils config.systemd.package ];
    # The program is a file of its own (nix8s-discover.sh) so the tests run it against the daemon.
    text = config.nix8s.netboot.prelude + builtins.readFile ./nix8s-discover.sh;
  };
in
{
  imports = [ ./netboot-image.nix ];

  nix8s.netboot = {
    name = "nix8s-discovery-netboot";
    service = "nix8s-discover";
    description = "nix8s: report this machine's hardware to nix8sd";
    program = discover;
  };

  # nixos/modules/misc/version.nix; netboot.nix no longer sets it. Nothing here keeps state.
  system.stateVersion = lib.mkDefault lib.trivial.release;
}
