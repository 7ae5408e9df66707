# Every NixOS option path the core's data (lib/nixos.nix) or the glue (modules/nixos, the netboot installer and
# discovery systems included) may set, with the file that declares it and its type, read from nixpkgs master
# (disko: module.nix): tests/core_test.go fails on any other path.
# `<name>` stands for any attribute name (attrsOf submodule). Findings and caveats: docs/nixos-options-research.md.
let
  net = "nixos/modules/tasks/network-interfaces.nix";
  fw = "nixos/modules/services/networking/firewall.nix";
  sshd = "nixos/modules/services/networking/ssh/sshd.nix";
  # All services.k3s options but clusterInit/disableAgent are written once in mkRancherModule (default.nix) and
  # instantiated for k3s by k3s.nix.
  rancher = "nixos/modules/services/cluster/rancher/default.nix";
  k3s = "nixos/modules/services/cluster/rancher/k3s.nix";
  keepalived = "nixos/modules/services/networking/keepalived/default.nix";
  vrrp = "nixos/modules/services/networking/keepalived/vrrp-instance-options.nix";
  vrrpScript = "nixos/modules/services/networking/keepalived/vrrp-script-options.nix";
  kernel = "nixos/modules/system/boot/kernel.nix";
  grub = "nixos/modules/system/boot/loader/grub/grub.nix";
  exporters = "nixos/modules/services/monitoring/prometheus/exporters.nix";
  nvidia = "nixos/modules/hardware/video/nvidia.nix";
  o = file: entries: map (e: { path = builtins.elemAt e 0; type = builtins.elemAt e 1; inherit file; }) entries;
in
o net [
  [ "networking.hostName" "string matching a DNS label (no dots, at most 63 characters)" ]
  [ "networking.hostId" "null or string (8 hex characters, asserted)" ]
  [ "networking.useDHCP" "boolean" ]
  [ "networking.interfaces.<name>.ipv4.addresses" "list of submodule { address: string; prefixLength: int 0..32; }" ]
  [ "networking.interfaces.<name>.useDHCP" "null or boolean" ]
  [ "networking.defaultGateway" "null or (string coerced to) submodule { address; interface; metric; source; }" ]
  [ "networking.nameservers" "list of string" ]
]
++ o fw [
  [ "networking.firewall.enable" "boolean" ]
  [ "networking.firewall.allowedTCPPorts" "list of port" ]
  [ "networking.firewall.allowedUDPPorts" "list of port" ]
  [ "networking.firewall.allowedTCPPortRanges" "list of attrs of port ({ from; to; })" ]
  [ "networking.firewall.trustedInterfaces" "list of string" ]
  [ "networking.firewall.checkReversePath" "boolean or one of \"strict\", \"loose\" (default true)" ]
]
++ o sshd [
  [ "services.openssh.enable" "boolean" ]
  [ "services.openssh.settings.PermitRootLogin" "null or one of yes, without-password, prohibit-password, forced-commands-only, no" ]
  [ "services.openssh.settings.PasswordAuthentication" "null or boolean" ]
  [ "users.users.<name>.openssh.authorizedKeys.keys" "list of single-line string" ]
]
++ o rancher [
  [ "services.k3s.enable" "boolean" ]
  [ "services.k3s.package" "package (default pkgs.k3s)" ]
  [ "services.k3s.role" "one of server, agent" ]
  [ "services.k3s.serverAddr" "string (\"\" = none)" ]
  [ "services.k3s.token" "string (lands in the Nix store)" ]
  [ "services.k3s.tokenFile" "null or path" ]
  [ "services.k3s.agentToken" "string (servers only; lands in the Nix store)" ]
  [ "services.k3s.agentTokenFile" "null or path (servers only: warned on agents)" ]
  [ "services.k3s.extraFlags" "string or list of string (flattened into ExecStart)" ]
  [ "services.k3s.disable" "list of string (--disable=)" ]
  [ "services.k3s.nodeName" "null or string" ]
  [ "services.k3s.nodeIP" "null or string" ]
  [ "services.k3s.nodeExternalIP" "null or string" ]
  [ "services.k3s.nodeLabel" "list of string" ]
  [ "services.k3s.nodeTaint" "list of string" ]
  [ "services.k3s.environmentFile" "null or path" ]
  [ "services.k3s.configPath" "null or path" ]
  [ "services.k3s.containerdConfigTemplate" "null or string" ]
  [ "services.k3s.gracefulNodeShutdown.enable" "boolean" ]
  [ "services.k3s.extraKubeletConfig" "attrs of anything" ]
]
++ o k3s [
  [ "services.k3s.clusterInit" "boolean" ]
  [ "services.k3s.disableAgent" "boolean" ]
]
++ o kernel [
  [ "boot.kernelParams" "list of kernel parameter string" ]
  [ "boot.kernelModules" "list of string" ]
  [ "boot.extraModulePackages" "list of package" ]
  [ "boot.initrd.availableKernelModules" "list of string" ]
]
++ o "nixos/modules/system/boot/modprobe.nix" [
  [ "boot.blacklistedKernelModules" "list of string" ]
  [ "boot.extraModprobeConfig" "lines" ]
]
++ o "nixos/modules/config/sysctl.nix" [ [ "boot.kernel.sysctl" "attrs of (null or bool, string or int)" ] ]
++ o "nixos/modules/tasks/filesystems.nix" [
  [ "boot.supportedFilesystems" "attrs of boolean (a list of names is coerced)" ]
  [ "boot.supportedFilesystems.<name>" "boolean" ]
]
++ o "nixos/modules/tasks/filesystems/zfs.nix" [
  [ "boot.zfs.forceImportRoot" "boolean (default true)" ]
  [ "services.zfs.autoScrub.enable" "boolean" ]
  [ "services.zfs.trim.enable" "boolean" ]
]
++ o "nixos/modules/system/boot/loader/systemd-boot/systemd-boot.nix" [ [ "boot.loader.systemd-boot.enable" "boolean" ] ]
++ o "nixos/modules/system/boot/loader/efi.nix" [ [ "boot.loader.efi.canTouchEfiVariables" "boolean" ] ]
++ o grub [
  [ "boot.loader.grub.enable" "boolean (default true)" ]
  [ "boot.loader.grub.devices" "list of string" ]
  [ "boot.loader.grub.efiSupport" "boolean" ]
  [ "boot.loader.grub.efiInstallAsRemovable" "boolean" ]
]
++ o "nixos/modules/hardware/cpu/intel-microcode.nix" [ [ "hardware.cpu.intel.updateMicrocode" "boolean" ] ]
++ o "nixos/modules/hardware/cpu/amd-microcode.nix" [ [ "hardware.cpu.amd.updateMicrocode" "boolean" ] ]
++ o "nixos/modules/hardware/all-firmware.nix" [ [ "hardware.enableRedistributableFirmware" "boolean" ] ]
++ o "nixos/modules/misc/version.nix" [ [ "system.stateVersion" "string" ] ]
++ o "module.nix (nix-community/disko)" [ [ "disko.devices" "disko toplevel (disk, mdadm, zpool, lvm_vg, nodev); sets fileSystems, boot and swapDevices itself" ] ]
++ o "nixos/modules/services/networking/haproxy.nix" [
  [ "services.haproxy.enable" "boolean" ]
  [ "services.haproxy.config" "null or lines (appended after the module's own global section)" ]
]
++ o keepalived [
  [ "services.keepalived.enable" "boolean" ]
  [ "services.keepalived.openFirewall" "boolean (VRRP and AH: iptables extraCommands, or nftables extraInputRules in newer revisions)" ]
  [ "services.keepalived.enableScriptSecurity" "boolean (enable_script_security in global_defs)" ]
]
++ o vrrp (map (e: [ "services.keepalived.vrrpInstances.<name>.${builtins.elemAt e 0}" (builtins.elemAt e 1) ]) [
  [ "interface" "string" ]
  [ "state" "one of MASTER, BACKUP" ]
  [ "priority" "int (0..255, asserted)" ]
  [ "virtualRouterId" "int 1..255" ]
  [ "virtualIps" "list of submodule { addr (\"ip[/prefix]\"); brd; dev; scope; label; }" ]
  [ "unicastSrcIp" "null or string" ]
  [ "unicastPeers" "list of string" ]
  [ "extraConfig" "lines (appended inside the vrrp_instance block; carries nix8s' track_script)" ]
])
++ o vrrpScript (map (e: [ "services.keepalived.vrrpScripts.<name>.${builtins.elemAt e 0}" (builtins.elemAt e 1) ]) [
  [ "script" "string" ]
  [ "interval" "int" ]
  [ "user" "string (default keepalived_script)" ]
])
++ o exporters [
  [ "services.prometheus.exporters.node.enable" "boolean" ]
  [ "services.prometheus.exporters.node.openFirewall" "boolean" ]
  [ "services.prometheus.exporters.node.port" "port (default 9100)" ]
]
++ o "nixos/modules/services/monitoring/prometheus/exporters/node.nix" [
  [ "services.prometheus.exporters.node.enabledCollectors" "list of string" ]
]
++ o "nixos/modules/services/x11/xserver.nix" [ [ "services.xserver.videoDrivers" "list of string (\"nvidia\" switches the NVIDIA module on, no X server needed)" ] ]
++ o "nixos/modules/hardware/graphics.nix" [ [ "hardware.graphics.enable" "boolean" ] ]
++ o nvidia [
  [ "hardware.nvidia.package" "unchecked (default config.boot.kernelPackages.nvidiaPackages.stable)" ]
  [ "hardware.nvidia.open" "null or boolean (must be set for drivers >= 560: asserted)" ]
  [ "hardware.nvidia.modesetting.enable" "boolean" ]
]
++ o "nixos/modules/services/hardware/nvidia-container-toolkit/default.nix" [ [ "hardware.nvidia-container-toolkit.enable" "boolean (generates the CDI spec)" ] ]
++ o "nixos/modules/services/network-filesystems/drbd.nix" [
  [ "services.drbd.enable" "boolean" ]
  [ "services.drbd.config" "lines" ]
]
++ o "nixos/modules/misc/nixpkgs.nix" [
  [ "nixpkgs.config" "nixpkgs config (allowUnfreePredicate for the NVIDIA driver)" ]
  [ "nixpkgs.hostPlatform" "platform (string such as \"x86_64-linux\" or attrs); nixosSystem needs it or `system`" ]
]
# Cozystack's node preparation (lib/cozystack.nix); read at the commits named in docs/research/cozystack.md
# (initiator.nix @08bbcb97 and multipath.nix @04ea8d4e are old revisions: recheck at the pinned nixpkgs).
++ o "nixos/modules/services/networking/iscsi/initiator.nix" [
  [ "services.openiscsi.enable" "boolean (starts iscsid, adds iscsi_tcp to boot.kernelModules)" ]
  [ "services.openiscsi.name" "string (the initiator IQN; no default)" ]
]
++ o "nixos/modules/services/networking/multipath.nix" [
  [ "services.multipath.enable" "boolean" ]
  [ "services.multipath.blacklist" "null or string (wrapped in blacklist { ... } by the module)" ]
]
++ o "nixos/modules/tasks/lvm.nix" [
  [ "services.lvm.boot.thin.enable" "boolean (thin-provisioning-tools, lvm.conf's thin_check paths)" ]
]
++ o "nixos/modules/system/boot/systemd/tmpfiles.nix" [ [ "systemd.tmpfiles.rules" "list of string" ] ]
++ o "nixos/modules/system/etc/etc.nix" [ [ "environment.etc.<name>.text" "null or lines (the file goes to the store, linked at /etc/<name>)" ] ]
++ o "nixos/modules/system/boot/systemd.nix" [ [ "systemd.services.<name>.path" "list of package or string" ] ]
# The installer and discovery services (modules/nixos/installer.nix, discovery.nix). systemd.nix declares
# systemd.services with the unit options written in this file.
++ o "nixos/lib/systemd-unit-options.nix" [
  [ "systemd.services.<name>.description" "single-line string" ]
  [ "systemd.services.<name>.wantedBy" "list of unit name" ]
  [ "systemd.services.<name>.wants" "list of unit name" ]
  [ "systemd.services.<name>.after" "list of unit name" ]
  [ "systemd.services.<name>.serviceConfig" "attrs of systemd option (Type and Restart checked against systemd's values)" ]
]
++ o "nixos/modules/system/build.nix" [
  [ "system.build.nix8sNetboot" "system.build is a submodule with freeformType lazyAttrsOf (uniq unspecified): any new key, evaluated lazily" ]
]
# The Lima guest module (modules/nixos/lima-guest.nix); the systemd unit options it sets besides the ones above
# are in nixos/lib/systemd-unit-options.nix too (commonUnitOptions, serviceOptions).
++ o "nixos/lib/systemd-unit-options.nix" [
  [ "systemd.services.<name>.before" "list of unit name" ]
  [ "systemd.services.<name>.requires" "list of unit name" ]
  [ "systemd.services.<name>.unitConfig" "attrs of systemd option" ]
  [ "systemd.services.<name>.environment" "attrs of (null or str, path or package)" ]
]
++ o "nixos/modules/tasks/filesystems.nix" [
  [ "fileSystems.<name>.device" "null or non-empty string" ]
  [ "fileSystems.<name>.fsType" "non-empty string (default \"auto\")" ]
  [ "fileSystems.<name>.options" "non-empty list of non-empty string" ]
  [ "fileSystems.<name>.autoResize" "boolean (ext2/3/4: grown before it is mounted)" ]
]
++ o "nixos/modules/system/boot/grow-partition.nix" [ [ "boot.growPartition" "boolean (scripted initrd only: asserts boot.initrd.systemd.enable is off)" ] ]
++ o "nixos/modules/config/users-groups.nix" [
  [ "users.users.<name>.isNormalUser" "boolean" ]
  [ "users.users.<name>.uid" "null or int" ]
  [ "users.users.<name>.home" "path (string)" ]
  [ "users.users.<name>.extraGroups" "list of string" ]
]
++ o "nixos/modules/security/sudo.nix" [ [ "security.sudo.extraRules" "list of submodule { users; groups; host; runAs; commands = [ { command; options; } ]; }" ] ]
++ o "nixos/modules/config/system-path.nix" [ [ "environment.systemPackages" "list of package" ] ]
++ o sshd [ [ "services.openssh.authorizedKeysFiles" "list of string (AuthorizedKeysFile, after %h/.ssh/authorized_keys and /etc/ssh/authorized_keys.d/%u)" ] ]
++ o "module.nix (nix-community/disko)" [ [ "disko.imageBuilder.imageFormat" "one of raw, qcow2 (default raw)" ] ]
