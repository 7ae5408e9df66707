# nix8s-install: the network installer's program (installer.nix runs it as the nix8s-install service, after
# netboot-prelude.sh). It installs this machine as its member, reporting each phase to nix8sd with the install's
# one-time token (docs/pxe.md). Set by installer.nix: NIX8S_DISKO (the member's disko script), NIX8S_SYSTEM (its
# toplevel), NIX8S_SYSTEM_NAME, NIX8S_ROOT (disko's mount point), NIX8S_HOST_KEY (the path of the member's
# ed25519 host key, empty: none). Tested against the daemon by internal/pxe/storeboot (installer_test.go).
log=${NIX8S_LOG:-/run/nix8s-install.log}
root=$NIX8S_ROOT
server=$(arg server) mac=$(arg mac) generation=$(arg generation) token=$(arg token)

if [[ ! $server =~ ^https?:// || -z $mac || ! $generation =~ ^[0-9]+$ ]]; then
  say "error: no nix8s.server, nix8s.mac or nix8s.generation on the kernel command line; this installer is booted by nix8sd. The disks were not touched."
  exit 1
fi
if [[ -z $token ]]; then
  say "install generation $generation of $mac was already started once and its one-time token is spent, so the disks are left alone."
  say "to install again: POST /v1/machines/$mac/reinstall on nix8sd, then reboot this machine."
  exit 0
fi

# Every report carries this machine's hardware identity: nix8sd compares it with what discovery (or the
# first report) recorded and locks the machine, refusing the report, when it differs.
ident=$(identity)
post() {
  curl --fail --silent --show-error --max-time 30 --retry 10 --retry-delay 3 --retry-connrefused \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    --data-binary "$(jq -c --argjson i "$ident" '. + {identity: $i}' <<< "$1")" "$server/machine/v1/progress?mac=$mac"
}
phase() { post "$(jq -cn --argjson g "$generation" --arg p "$1" '{generation: $g, phase: $p}')"; }
fail() {
  say "error: $1: $2. The installer stays up for debugging: journalctl -u nix8s-install, $log"
  post "$(jq -cn --argjson g "$generation" --arg p "$1" --arg e "$2: $(tail -c 2000 "$log")" \
    '{generation: $g, phase: $p, error: $e}')" || say "could not report the error to $server"
  exit 1
}

# The disks are touched only once nix8sd has taken the token for this generation.
if ! phase disko; then
  say "error: $server did not accept the first report of generation $generation (token spent, install not armed, or unreachable). The disks were not touched."
  exit 1
fi
say "partitioning and mounting under $root with the member's disko script"
"$NIX8S_DISKO" 2>&1 | tee -a "$log" || fail disko "disko failed"

phase install || say "warning: could not report phase install; installing anyway"
# Flags from pkgs/by-name/ni/nixos-install/nixos-install.sh: --system takes a built toplevel (no
# evaluation, no flake), --no-root-passwd skips the password prompt, --no-channel-copy skips the
# installer's nixpkgs channel.
nixos-install --system "$NIX8S_SYSTEM" --root "$root" --no-root-passwd --no-channel-copy 2>&1 \
  | tee -a "$log" || fail install "nixos-install failed"

host_key=""
# The member's ed25519 host key, made here so its public half can go with the done report: nix8sd pins it
# when it delivers the token files over SSH (sshd on the member makes only the keys that are missing).
if [[ -n ${NIX8S_HOST_KEY:-} ]]; then
  key=$root$NIX8S_HOST_KEY
  mkdir -p "$(dirname "$key")"
  rm -f "$key" "$key.pub"
  ssh-keygen -q -t ed25519 -N "" -C "" -f "$key" || fail install "generating the SSH host key failed"
  host_key=$(cut -d ' ' -f 1,2 < "$key.pub")
  # What an operator compares before approving the member's secrets (provisioning.pxe.approve): the key's
  # fingerprint on this console, never over the network the install came from.
  say "host key $(ssh-keygen -lf "$key.pub" | cut -d ' ' -f 2); if nix8sd holds this member's secrets for approval, confirm it with POST /v1/machines/$mac/approve"
fi
report=$(jq -cn --argjson g "$generation" --arg k "$host_key" \
  '{generation: $g, phase: "done", done: true} + (if $k == "" then {} else {hostKey: $k} end)')
if ! post "$report"; then
  say "error: installed, but $server did not take the done report; not rebooting (it would send this machine back here)."
  exit 1
fi
say "installed; rebooting into $NIX8S_SYSTEM_NAME"
systemctl reboot
