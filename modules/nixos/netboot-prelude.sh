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
