# A member of a Lima cluster (provisioning.lima, docs/lima.md) as a Lima guest: what cloud-init and Lima's boot
# scripts do for other guests, for a NixOS system that runs no cloud-init. Lima's hostagent needs only SSH in
# plain mode: its key for the Lima user, /bin/bash and passwordless sudo, and /run/lima-boot-done with the
# instance id. The member keeps its own address on eth0: Lima's switch knows it as the DHCP reservation
# `nix8s lima up` wrote, so no DHCP client runs. Part of the member's own configuration (not only its image), so
# `nix8s rebuild` keeps it.
{ lib, pkgs, nix8s, ... }:
let
  net = nix8s.cluster.lima or null;
  # The fixed user of the instance YAML (lib/lima.nix limaUser): declared here, so users.mutableUsers = false
  # cannot remove it, and checked against lima.env by the init script.
  user = { name = "lima"; uid = 2999; home = "/home/lima"; };
  keysDir = "/run/nix8s-lima/keys";
  cidata = "/mnt/lima-cidata";
  init = pkgs.writeShellApplication {
    name = "nix8s-lima-init";
    runtimeInputs = [ pkgs.coreutils pkgs.gawk ];
    text = builtins.readFile ./nix8s-lima-init.sh;
  };
in
{
  config = lib.mkIf (net != null) {
    # Lima's cloud-init disk: an ISO 9660 volume labelled cidata (scsi-cd on qemu, virtio-blk on vz),
    # regenerated with a new instance id at every start. nofail: a system booted outside Lima still boots.
    fileSystems.${cidata} = {
      device = "/dev/disk/by-label/cidata";
      fsType = "iso9660";
      options = [ "ro" "mode=0700" "dmode=0700" "overriderockperm" "exec" "uid=0" "nofail" "x-systemd.device-timeout=10s" ];
    };
    # virtio-scsi for the cidata drive on qemu; virtio-net and -blk are in the default initrd modules.
    boot.initrd.availableKernelModules = [ "virtio_scsi" "sr_mod" ];

    # Lima resizes the image to provisioning.lima's disk; the root partition and file system follow at boot.
    boot.growPartition = lib.mkDefault true;
    fileSystems."/".autoResize = lib.mkDefault true;

    users.users.${user.name} = {
      isNormalUser = true;
      inherit (user) uid home;
      extraGroups = [ "wheel" ];
    };
    # The hostagent runs every check through `sudo` and `/bin/bash` (pkg/hostagent/requirements.go).
    security.sudo.extraRules = [ { users = [ user.name ]; commands = [ { command = "ALL"; options = [ "NOPASSWD" ]; } ]; } ];
    environment.systemPackages = [ pkgs.bash ];
    systemd.tmpfiles.rules = [ "L+ /bin/bash - - - - /run/current-system/sw/bin/bash" ];

    # Lima's key ($LIMA_HOME/_config/user.pub, from user-data) for the lima user and root, in a runtime
    # directory the init script fills at every boot: the plan's SSH endpoint logs in as root with it.
    services.openssh.authorizedKeysFiles = [ "${keysDir}/%u" ];

    systemd.services.nix8s-lima-init = {
      description = "Lima guest setup from the cidata disk (keys, host key, boot-done)";
      wantedBy = [ "multi-user.target" ];
      # Before sshd, so sshd starts with the host key nix8s pinned (and generates none of its own).
      before = [ "sshd.service" ];
      requires = [ "mnt-lima\\x2dcidata.mount" ];
      after = [ "mnt-lima\\x2dcidata.mount" ];
      unitConfig.ConditionPathExists = "${cidata}/lima.env";
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = lib.getExe init;
      };
      environment = {
        LIMA_CIDATA_MNT = cidata;
        NIX8S_LIMA_KEYS = keysDir;
        NIX8S_LIMA_USER = user.name;
        NIX8S_LIMA_UID = toString user.uid;
      };
    };

    # The Lima network's gateway and DNS server is always its second address (lib/lima.nix).
    networking.defaultGateway = lib.mkDefault { address = net.gateway; interface = "eth0"; };
    networking.nameservers = lib.mkDefault [ net.gateway ];
    # eth0 is the only NIC and carries only the member's address; named anyway, as flannel otherwise takes the
    # default-route interface.
    services.k3s.extraFlags = [ "--flannel-iface=eth0" ];

    # The image Lima boots: disko's image of the member's own layout (system.build.diskoImages), so the image
    # and `nix8s rebuild` agree on the file systems. qcow2 for Lima; the size is the image's, Lima grows it.
    disko.imageBuilder.imageFormat = lib.mkDefault "qcow2";
  };
}
