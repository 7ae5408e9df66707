#!/usr/bin/env bash
# The kernel the PXE end-to-end tests boot under QEMU in place of a NixOS netboot kernel (which cannot be built
# on a test machine): the newest Debian linux-image-6.1.0-<n>-amd64, fetched with `apt-get download` and unpacked
# once into a cache under $HOME, with its e1000 module (the NIC QEMU boots from; the test initramfs loads it to
# phone home). Prints the path of the vmlinuz on stdout. Fails, never skips, when it cannot.
# Called by .ci/install; the tests find the kernel through $NIX8S_PXE_KERNEL or this cache.
set -euo pipefail
dir="${NIX8S_PXE_ASSETS_DIR:-$HOME/.cache/nix8s/pxe-kernel}"
if [ -s "$dir/vmlinuz" ] && [ -s "$dir/e1000.ko" ]; then
  echo "$dir/vmlinuz"
  exit 0
fi
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if [ -s "$dir/vmlinuz" ] && [ -s "$dir/e1000.ko" ]; then
  echo "$dir/vmlinuz"
  exit 0
fi
pkg=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | cut -d' ' -f1 | sort -V | tail -1)
[ -n "$pkg" ] || { echo "nix8s: error: no linux-image-6.1.0-*-amd64 in the apt lists (run apt-get update)" >&2; exit 1; }
tmp=$(mktemp -d "$dir/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -q "$pkg" >&2) ||
  { echo "nix8s: error: apt-get download $pkg failed" >&2; exit 1; }
dpkg-deb -x "$tmp"/*.deb "$tmp/x"
k=$(ls "$tmp"/x/boot/vmlinuz-* | head -1)
[ -s "$k" ] || { echo "nix8s: error: $pkg holds no /boot/vmlinuz-*" >&2; exit 1; }
m=$(find "$tmp/x/lib/modules" -name e1000.ko | head -1)
[ -s "$m" ] || { echo "nix8s: error: $pkg holds no e1000.ko" >&2; exit 1; }
cp "$m" "$dir/e1000.ko"
cp "$k" "$dir/vmlinuz.new" && mv "$dir/vmlinuz.new" "$dir/vmlinuz"
echo "$pkg" >"$dir/package"
echo "$dir/vmlinuz"
