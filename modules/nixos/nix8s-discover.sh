# nix8s-discover: the discovery image's program (discovery.nix runs it as the nix8s-discover service, after
# netboot-prelude.sh). It posts this machine's facts to nix8sd until they are taken, then powers off; it never
# touches a disk. Tested against the daemon by internal/pxe/storeboot (installer_test.go).
server=$(arg server) mac=$(arg mac)
if [[ ! $server =~ ^https?:// || -z $mac ]]; then
  say "error: no nix8s.server or nix8s.mac on the kernel command line; this image is booted by nix8sd"
  exit 1
fi

cpu_model=""
while IFS=: read -r key value; do
  if [[ $key == "model name"* ]]; then cpu_model=${value# }; break; fi
done < /proc/cpuinfo
mem_kib=0
while read -r key value _; do
  if [[ $key == MemTotal: ]]; then mem_kib=$value; break; fi
done < /proc/meminfo

# Whole disks only (--nodeps; type disk and not empty: no loop devices, CD drives or unused zram) and
# Ethernet links only. nix8sd takes any JSON object below 64 KiB whose "mac" is the query's
# (internal/pxe/http.go); "identity" (netboot-prelude.sh) is what the installer must report again.
facts=$(jq -cn \
  --arg mac "$mac" \
  --arg cpuModel "$cpu_model" \
  --argjson cpus "$(nproc --all)" \
  --argjson memoryBytes "$((mem_kib * 1024))" \
  --arg vendor "$(dmi sys_vendor)" --arg product "$(dmi product_name)" --arg serial "$(dmi product_serial)" \
  --argjson disks "$(lsblk --json --bytes --nodeps -o NAME,SIZE,TYPE,MODEL,SERIAL,ROTA)" \
  --argjson links "$(ip -j link show)" \
  --argjson identity "$(identity)" \
  '{mac: $mac, cpuModel: $cpuModel, cpus: $cpus, memoryBytes: $memoryBytes, identity: $identity,
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
