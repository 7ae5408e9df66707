# What the netboot images' programs start with (netboot-image.nix): `say`, and `arg NAME`, the value of
# nix8s.NAME= on the kernel command line (NIX8S_CMDLINE names another file, for tests).
say() { echo "nix8s: $*"; }
# nix8sd's iPXE script appends nix8s.server, nix8s.mac and, for an install, nix8s.generation and (in the
# first script of an install generation only) nix8s.token (internal/pxe/http.go).
read -r -a words < "${NIX8S_CMDLINE:-/proc/cmdline}"
arg() {
  local w
  for w in "${words[@]}"; do
    if [[ $w == "nix8s.$1="* ]]; then printf '%s' "${w#*=}"; return; fi
  done
}
# `identity`: who this machine is beyond its MAC, as JSON in the shape nix8sd compares (pxe.Identity): the DMI
# system UUID and serial, the serials of its whole disks, the permanent MACs (ip's permaddr when the address
# was changed) of its physical NICs (those with a device; no bridges, veths or VLANs). Lists are sorted, so the
# discovery image and the installer give the same JSON on the same hardware. NIX8S_DMI and NIX8S_NET name
# other directories than /sys/class/dmi/id and /sys/class/net, for tests.
dmi() { cat "${NIX8S_DMI:-/sys/class/dmi/id}/$1" 2>/dev/null || true; }
identity() {
  local dev nics=()
  for dev in "${NIX8S_NET:-/sys/class/net}"/*; do
    if [[ -e $dev/device ]]; then nics+=("${dev##*/}"); fi
  done
  jq -cn --arg uuid "$(dmi product_uuid)" --arg serial "$(dmi product_serial)" \
    --argjson disks "$(lsblk --json --bytes --nodeps -o TYPE,SIZE,SERIAL)" \
    --argjson links "$(ip -j link show)" \
    '{systemUUID: ($uuid | ascii_downcase), systemSerial: $serial,
      diskSerials: [$disks.blockdevices[] | select(.type == "disk" and .size > 0 and (.serial // "") != "") | .serial] | unique,
      nicMACs: [$links[] | select(.ifname as $n | $ARGS.positional | index([$n])) | (.permaddr // .address) | ascii_downcase] | unique}' \
    --args "${nics[@]}"
}
