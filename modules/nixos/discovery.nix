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
    text = config.nix8s.netboot.prelude + ''
      server=$(arg server) mac=$(arg mac)
      if [[ ! $server =~ ^https?:// || -z $mac ]]; then
        say "error: no nix8s.server or nix8s.mac on the kernel command line; this image is booted by nix8sd"
        exit 1
      fi

      cpu_model=""
      while IFS=: read -r key value; do
        if [[ $key == "model name"* ]]; then cpu_model=''${value# }; break; fi
      done < /proc/cpuinfo
      mem_kib=0
      while read -r key value _; do
        if [[ $key == MemTotal: ]]; then mem_kib=$value; break; fi
      done < /proc/meminfo
      dmi() { cat "/sys/class/dmi/id/$1" 2>/dev/null || true; }

      # Whole disks only (--nodeps; type disk and not empty: no loop devices, CD drives or unused zram) and
      # Ethernet links only. nix8sd takes any JSON object below 64 KiB whose "mac" is the query's
      # (internal/pxe/http.go).
      facts=$(jq -cn \
        --arg mac "$mac" \
        --arg cpuModel "$cpu_model" \
        --argjson cpus "$(nproc --all)" \
        --argjson memoryBytes "$((mem_kib * 1024))" \
        --arg vendor "$(dmi sys_vendor)" --arg product "$(dmi product_name)" --arg serial "$(dmi product_serial)" \
        --argjson disks "$(lsblk --json --bytes --nodeps -o NAME,SIZE,TYPE,MODEL,SERIAL,ROTA)" \
        --argjson links "$(ip -j link show)" \
        '{mac: $mac, cpuModel: $cpuModel, cpus: $cpus, memoryBytes: $memoryBytes,
          system: {vendor: $vendor, product: $product, serial: $serial},
          disks: [$disks.blockdevices[] | select(.type == "disk" and .size > 0)],
          nics: [$links[] | select(.link_type == "ether") | {name: .ifname, mac: .address, state: .operstate}]}')
      say "facts: $facts"

      until curl --fail --silent --show-error --max-time 30 -H 'Content-Type: application/json' \
        --data-binary "$facts" "$server/machine/v1/discover?mac=$mac"; do
        say "$server did not take the facts; trying again in 10 s"
        sleep 10
      done
      say "facts reported; assign $mac to a member on nix8sd, and it installs on its next network boot. Powering off."
      systemctl poweroff
    '';
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
