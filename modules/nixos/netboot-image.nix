# What the installer (installer.nix) and the discovery image (discovery.nix) share: a netboot NixOS (nixpkgs'
# netboot-minimal) that runs one oneshot service on boot, with its output on the console, and
# config.system.build.nix8sNetboot, the directory nix8sd serves (bzImage, initrd, cmdline; internal/pxe/images.go).
#
# Nothing here could be evaluated or built (no nixpkgs on this project's machines); every option and attribute
# is checked against the nixpkgs file named next to it (docs/nixos-options-research.md).
{ config, lib, pkgs, modulesPath, ... }:
let
  cfg = config.nix8s.netboot;
  # Kernel arguments nix8sd accepts from an image's cmdline file (internal/pxe/booter.go, cmdlineArgRe).
  plainArg = a: builtins.match "[a-zA-Z0-9_.-]+(=[a-zA-Z0-9_.,:/@+-]*)?" a != null;
  # netboot.nix's own iPXE script boots `init=${toplevel}/init ${toString boot.kernelParams}`.
  args = [ "init=${config.system.build.toplevel}/init" ] ++ config.boot.kernelParams;
  bad = lib.filter (a: !plainArg a) args;
in
{
  imports = [ (modulesPath + "/installer/netboot/netboot-minimal.nix") ];

  options.nix8s.netboot = {
    name = lib.mkOption {
      type = lib.types.str;
      description = "Name of the image's store path (nix8sd serves it under the path's hash).";
    };
    service = lib.mkOption {
      type = lib.types.str;
      description = "Name of the systemd service the image runs once on boot.";
    };
    description = lib.mkOption {
      type = lib.types.str;
      description = "What the service does (its unit description).";
    };
    program = lib.mkOption {
      type = lib.types.package;
      description = "The service's program: a package with bin/<service>.";
    };
    prelude = lib.mkOption {
      type = lib.types.lines;
      readOnly = true;
      description = "Shell lines the programs start with: `say` and `arg NAME` (the value of nix8s.NAME= on the kernel command line).";
      default = builtins.readFile ./netboot-prelude.sh;
    };
  };

  config = {
    # nixos/lib/systemd-unit-options.nix: description, wants, after, wantedBy, serviceConfig.
    systemd.services.${cfg.service} = {
      inherit (cfg) description;
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${cfg.program}/bin/${cfg.service}";
        StandardOutput = "journal+console";
        StandardError = "journal+console";
      };
    };

    # nixos/modules/system/build.nix: a freeform lazyAttrsOf, new keys allowed.
    # nixos/modules/installer/netboot/netboot.nix: system.build.netbootRamdisk (its `initrd` file holds the
    # squashfs store); system.build.kernel (kernel.nix); system.boot.loader.kernelFile (top-level.nix: bzImage
    # on x86).
    system.build.nix8sNetboot =
      if bad != [ ] then
        throw "nix8s: the kernel arguments ${builtins.toJSON bad} of ${cfg.name} have characters nix8sd refuses (allowed: letters, digits, _.- and =value of _.,:/@+-)"
      else
        pkgs.runCommand cfg.name { } ''
          mkdir $out
          ln -s ${config.system.build.kernel}/${config.system.boot.loader.kernelFile} $out/bzImage
          ln -s ${config.system.build.netbootRamdisk}/initrd $out/initrd
          echo ${lib.escapeShellArg (toString args)} > $out/cmdline
        '';
  };
}
