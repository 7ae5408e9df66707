# A config that switches on every feature the NixOS data can render, so the option-path check sees them all.
{
  nodes = {
    full = {
      network = { mac = "aa:bb:cc:dd:ee:01"; interface = "enp1s0"; };
      install = { disk = "/dev/sda"; swapSize = "8G"; };
      boot = { kernelParams = [ "quiet" ]; kernelModules = [ "kvm-intel" ]; };
      hardware.cpu.vendor = "intel";
      extensions = { nvidia.enable = true; drbd = { enable = true; devices = [ "/dev/sdb" ]; }; zfs.enable = true; monitoring.enable = true; };
    };
    custom.disko.devices.disk.main = { type = "disk"; device = "/dev/vda"; };
  };
  clusters.all = {
    k3s = { version = "v1.34.2+k3s1"; extraArgs.server = [ "--flannel-backend=wireguard-native" ]; };
    ha = { enable = true; vip = "10.5.0.100"; };
    network = { prefixLength = 24; gateway = "10.5.0.1"; nameservers = [ "10.5.0.1" ]; };
    secrets.token = "only-in-this-test";
    members = {
      s1 = { node = "full"; role = "server"; ip = "10.5.0.11"; network.mac = "aa:bb:cc:dd:ee:11"; };
      s2 = { node = "full"; role = "server"; ip = "10.5.0.12"; network.mac = "aa:bb:cc:dd:ee:12"; };
      a1 = { node = "custom"; role = "agent"; ip = "10.5.0.21"; hardware.cpu.vendor = "amd"; };
    };
  };
  provisioning.ssh.authorizedKeys = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample test@nix8s" ];
}
