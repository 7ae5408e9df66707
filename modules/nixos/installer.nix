# A member's network installer, so nix8sd can install a machine that has no OS: a netboot NixOS (nixpkgs'
# netboot-minimal) whose `nix8s-install` service partitions the disks with the member's disko script, installs
# the member's system, reports each phase to nix8sd and reboots. Exposed as the member's
# config.system.build.nix8sNetboot: a directory with bzImage, initrd and cmdline (docs/pxe.md).
#
# Nothing here could be evaluated or built (no nixpkgs on this project's machines); every option and attribute
# is checked against the nixpkgs/disko file named next to it (docs/nixos-options-research.md).
{ config, lib, pkgs, noUserModules, ... }:
let
  member = config;
  memberPkgs = pkgs;

  # The installer is a separate NixOS system from the same nixpkgs and specialArgs, without the member's
  # modules (its file systems, k3s and services do not belong in an installer): noUserModules is set by
  # nixos/lib/eval-config.nix for exactly this, and nixos/modules/system/activation/specialisation.nix uses
  # noUserModules.extendModules the same way. It refers to the member's toplevel and disko script; the member
  # refers to it only through system.build.nix8sNetboot, which its toplevel never reads (system.build is a
  # lazyAttrsOf, nixos/modules/system/build.nix), so there is no evaluation cycle.
  installer = noUserModules.extendModules {
    modules = [ ./netboot-image.nix installerModule ];
  };

  installerModule = { config, pkgs, ... }:
    let
      # disko's module.nix sets system.build from `devices._scripts` (lib/default.nix): `diskoScript` is the
      # executable itself (a legacy name, not $out/bin), unmounts, wipes (`_legacyDestroy`, asks nothing),
      # creates and mounts under disko.rootMountPoint (module.nix, default /mnt), with its tools on PATH.
      disko = member.system.build.diskoScript;
      root = member.disko.rootMountPoint;
      # nixos/modules/services/networking/ssh/sshd.nix: services.openssh.hostKeys (list of attrs, default an rsa
      # and an ed25519 key under /etc/ssh); sshd's key generation makes only the keys that are missing, so the
      # key made here is the one the member serves. Its public half goes into the done report (`hostKey`,
      # internal/pxe/booter.go: Progress): nix8sd pins it when it delivers the token files over SSH.
      hostKey = lib.findFirst (k: (k.type or "") == "ed25519") null member.services.openssh.hostKeys;
      # The member's toplevel and disko script are named in the script, so the string context puts their
      # closures into this system's closure, hence into netboot.nix's squashfs store (netboot.storeContents =
      # [ toplevel ]); nixos-install copies from there to the disk, no binary cache needed.
      install = pkgs.writeShellApplication {
        name = "nix8s-install";
        # writeShellApplication: pkgs/build-support/trivial-builders/default.nix (runtimeInputs go first on
        # PATH; shellcheck at build time). pkgs/by-name: jq/jq, ut/util-linux, ip/iproute2 (the identity's NIC
        # MACs, netboot-prelude.sh); curl, coreutils and openssh
        # (ssh-keygen) in pkgs/top-level/all-packages.nix. config.system.build.nixos-install:
        # nixos/modules/installer/tools/tools.nix (pkgs/by-name/ni/nixos-install); its script runs nix-env and
        # nix from PATH, hence config.nix.package; systemctl from config.systemd.package.
        runtimeInputs = [
          pkgs.curl pkgs.jq pkgs.coreutils pkgs.util-linux pkgs.iproute2 pkgs.openssh
          config.system.build.nixos-install config.nix.package config.systemd.package
        ];
        # The program is a file of its own (nix8s-install.sh) so the tests run it against the daemon.
        text = ''
          NIX8S_DISKO=${disko}
          NIX8S_SYSTEM=${member.system.build.toplevel}
          NIX8S_SYSTEM_NAME=${lib.escapeShellArg member.system.name}
          NIX8S_ROOT=${lib.escapeShellArg root}
          NIX8S_HOST_KEY=${lib.escapeShellArg (if hostKey == null then "" else hostKey.path)}
        '' + config.nix8s.netboot.prelude + builtins.readFile ./nix8s-install.sh;
      };
    in
    {
      nix8s.netboot = {
        name = "nix8s-installer-${member.system.name}";
        service = "nix8s-install";
        description = "nix8s: install this machine's cluster member";
        program = install;
      };

      # nixos/modules/misc/nixpkgs.nix: the member's platform, as a system string (the member's pkgs: this
      # system's own pkgs depend on this option).
      nixpkgs.hostPlatform = memberPkgs.stdenv.hostPlatform.system;
      # nixos/modules/profiles/base.nix (imported by netboot-base.nix) already supports ZFS (`zfs = mkDefault
      # true` where available) with `networking.hostId = mkDefault "8425e349"`; a pool disko creates here must
      # carry the member's hostId (tasks/network-interfaces.nix), or the member refuses to import it as last used
      # by another system.
      networking.hostId = lib.mkIf (member.networking.hostId != null) member.networking.hostId;
      # The member's public keys, for debugging a failed install over SSH: installation-device.nix (imported by
      # netboot-base.nix) runs sshd with empty passwords that sshd refuses. No secret enters this image.
      users.users.root.openssh.authorizedKeys.keys = member.users.users.root.openssh.authorizedKeys.keys;
      # nixos/modules/misc/version.nix; netboot.nix no longer sets it.
      system.stateVersion = member.system.stateVersion;
    };
in
{
  config.system.build.nix8sNetboot = installer.config.system.build.nix8sNetboot;
}
