# Every NixOS option path that lib/nixos.nix may set, with the file that declares it (nixpkgs, or disko for
# disko.*). tests/core_test.go fails when the rendered data uses a path not listed here: check the source first.
# `<name>` stands for any attribute name (attrsOf submodule).
let
  net = "nixos/modules/tasks/network-interfaces.nix";
  fw = "nixos/modules/services/networking/firewall.nix";
  sshd = "nixos/modules/services/networking/ssh/sshd.nix";
  k3s = "nixos/modules/services/cluster/rancher/default.nix";
  keepalived = "nixos/modules/services/networking/keepalived/default.nix";
  vrrp = "nixos/modules/services/networking/keepalived/vrrp-instance-options.nix";
  nvidia = "nixos/modules/hardware/video/nvidia.nix";
  o = file: paths: map (path: { inherit path file; }) paths;
in
o net [
  "networking.hostName"
  "networking.hostId"
  "networking.useDHCP"
  "networking.interfaces.<name>.ipv4.addresses"
  "networking.defaultGateway"
  "networking.nameservers"
]
++ o fw [
  "networking.firewall.enable"
  "networking.firewall.allowedTCPPorts"
  "networking.firewall.allowedUDPPorts"
  "networking.firewall.allowedTCPPortRanges"
]
++ o sshd [
  "services.openssh.enable"
  "services.openssh.settings.PermitRootLogin"
  "services.openssh.settings.PasswordAuthentication"
  "users.users.<name>.openssh.authorizedKeys.keys"
]
++ o k3s [
  "services.k3s.enable"
  "services.k3s.role"
  "services.k3s.serverAddr"
  "services.k3s.token"
  "services.k3s.tokenFile"
  "services.k3s.agentTokenFile"
  "services.k3s.extraFlags"
]
++ o "nixos/modules/services/cluster/rancher/k3s.nix" [ "services.k3s.clusterInit" ]
++ o "nixos/modules/system/boot/kernel.nix" [ "boot.kernelParams" "boot.kernelModules" ]
++ o "nixos/modules/config/sysctl.nix" [ "boot.kernel.sysctl" ]
++ o "nixos/modules/tasks/filesystems.nix" [ "boot.supportedFilesystems" ]
++ o "nixos/modules/system/boot/loader/systemd-boot/systemd-boot.nix" [ "boot.loader.systemd-boot.enable" ]
++ o "nixos/modules/system/boot/loader/efi.nix" [ "boot.loader.efi.canTouchEfiVariables" ]
++ o "nixos/modules/hardware/cpu/intel-microcode.nix" [ "hardware.cpu.intel.updateMicrocode" ]
++ o "nixos/modules/hardware/cpu/amd-microcode.nix" [ "hardware.cpu.amd.updateMicrocode" ]
++ o "nixos/modules/hardware/all-firmware.nix" [ "hardware.enableRedistributableFirmware" ]
++ o "nixos/modules/misc/version.nix" [ "system.stateVersion" ]
++ o "disko: module.nix (nix-community/disko)" [ "disko.devices" ]
++ o "nixos/modules/services/networking/haproxy.nix" [ "services.haproxy.enable" "services.haproxy.config" ]
++ o keepalived [ "services.keepalived.enable" "services.keepalived.openFirewall" ]
++ o vrrp (map (n: "services.keepalived.vrrpInstances.<name>.${n}") [
  "interface"
  "state"
  "priority"
  "virtualRouterId"
  "virtualIps"
  "unicastSrcIp"
  "unicastPeers"
])
++ o "nixos/modules/services/monitoring/prometheus/exporters.nix" [
  "services.prometheus.exporters.node.enable"
  "services.prometheus.exporters.node.openFirewall"
]
++ o "nixos/modules/services/x11/xserver.nix" [ "services.xserver.videoDrivers" ]
++ o "nixos/modules/hardware/graphics.nix" [ "hardware.graphics.enable" ]
++ o nvidia [ "hardware.nvidia.modesetting.enable" "hardware.nvidia.open" ]
++ o "nixos/modules/services/hardware/nvidia-container-toolkit/default.nix" [ "hardware.nvidia-container-toolkit.enable" ]
++ o "nixos/modules/services/network-filesystems/drbd.nix" [ "services.drbd.enable" ]
# Set by the NixOS glue itself (modules/nixos), because their values need pkgs or config:
++ o k3s [ "services.k3s.package" ]
++ o nvidia [ "hardware.nvidia.package" ]
++ o "nixos/modules/system/boot/systemd.nix" [ "systemd.services.<name>.path" ]
++ o "nixos/modules/system/boot/kernel.nix" [ "boot.extraModulePackages" ]
