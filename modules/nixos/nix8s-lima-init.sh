#!/bin/sh
# What cloud-init and Lima's boot.sh do for a Lima guest, done for a NixOS member (modules/nixos/lima-guest.nix,
# docs/lima.md): from the cidata disk, install Lima's SSH keys for the fixed Lima user and root, install the host
# key nix8s generated (provision mode data), then tell the hostagent the boot is done. Lima's lima.env is read
# line by line, never sourced: values may hold spaces.
#
# Environment (the defaults are the guest's; the tests point them at a fake cidata tree):
#   LIMA_CIDATA_MNT   the mounted cidata disk (/mnt/lima-cidata)
#   NIX8S_LIMA_RUN    where the signal files go (/run)
#   NIX8S_LIMA_KEYS   the directory sshd reads authorized keys from, one file per user (/run/nix8s-lima/keys)
#   NIX8S_LIMA_ROOT   prefix for the host key paths (empty)
#   NIX8S_LIMA_USER, NIX8S_LIMA_UID   the user the configuration declares (lima, 2999)
set -eu

mnt=${LIMA_CIDATA_MNT:-/mnt/lima-cidata}
run=${NIX8S_LIMA_RUN:-/run}
keys=${NIX8S_LIMA_KEYS:-/run/nix8s-lima/keys}
root=${NIX8S_LIMA_ROOT:-}
want_user=${NIX8S_LIMA_USER:-lima}
want_uid=${NIX8S_LIMA_UID:-2999}

log() { printf 'nix8s-lima-init: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ -r "$mnt/lima.env" ] || die "$mnt/lima.env is missing: is the cidata disk mounted?"

# The value of KEY in lima.env (the last line that sets it), empty when absent.
env_value() {
	v=
	while IFS= read -r line || [ -n "$line" ]; do
		case $line in "$1="*) v=${line#"$1="} ;; esac
	done <"$mnt/lima.env"
	printf '%s' "$v"
}

user=$(env_value LIMA_CIDATA_USER)
uid=$(env_value LIMA_CIDATA_UID)
# The user is declared by the NixOS configuration (users.mutableUsers = false would remove one made here), so
# Lima must have been given the same one: the instance YAML's fixed `user:` block.
if [ "$user" != "$want_user" ] || [ "$uid" != "$want_uid" ]; then
	die "Lima's user is ${user:-(none)} (uid ${uid:-none}), but this system declares $want_user (uid $want_uid); create the instance from nix8s's YAML (nix8s lima up), whose user block matches"
fi

# Lima's public keys: the ssh-authorized-keys list of user-data, each a Go-quoted string on a line of its own.
[ -r "$mnt/user-data" ] || die "$mnt/user-data is missing"
pubkeys=$(awk '
	/^ *ssh-authorized-keys: *$/ { inlist = 1; next }
	inlist && /^ *- / {
		sub(/^ *- */, "")
		if ($0 ~ /^".*"$/) { $0 = substr($0, 2, length($0) - 2); gsub(/\\"/, "\""); gsub(/\\\\/, "\\") }
		print
		next
	}
	inlist { inlist = 0 }
' "$mnt/user-data")
[ -n "$pubkeys" ] || die "user-data has no ssh-authorized-keys: Lima could not log in"

mkdir -p "$keys"
chmod 0755 "$keys"
for u in "$want_user" root; do
	printf '%s\n' "$pubkeys" >"$keys/$u.tmp"
	chmod 0644 "$keys/$u.tmp"
	mv "$keys/$u.tmp" "$keys/$u"
done
log "installed $(printf '%s\n' "$pubkeys" | wc -l | tr -d ' ') Lima key(s) for $want_user and root"

# Data files (Lima's provision mode data): only the host key nix8s pins; anything else is not ours to place.
if [ -d "$mnt/provision.data" ]; then
	for f in "$mnt"/provision.data/*; do
		[ -e "$f" ] || continue
		n=$(basename "$f")
		path=$(env_value "LIMA_CIDATA_DATAFILE_${n}_PATH")
		perms=$(env_value "LIMA_CIDATA_DATAFILE_${n}_PERMISSIONS")
		case $path in
		/etc/ssh/ssh_host_ed25519_key | /etc/ssh/ssh_host_ed25519_key.pub) ;;
		*)
			log "ignoring provision data $n for ${path:-(no path)}: only the SSH host key is installed"
			continue
			;;
		esac
		case $perms in
		[0-7][0-7][0-7] | [0-7][0-7][0-7][0-7]) ;;
		*) die "provision data $n for $path has permissions ${perms:-(none)}, not an octal mode" ;;
		esac
		mkdir -p "$root/etc/ssh"
		cp "$f" "$root$path.tmp"
		chmod "$perms" "$root$path.tmp"
		mv "$root$path.tmp" "$root$path"
		log "installed $path"
	done
fi

# The signal files the hostagent waits for: Lima >= 2.1 compares them with LIMA_CIDATA_IID, older Lima with
# meta-data (diff -q). In plain mode only lima-boot-done is checked; both are written for either mode.
iid=$(env_value LIMA_CIDATA_IID)
for s in lima-ssh-ready lima-boot-done; do
	if [ -n "$iid" ]; then
		printf '%s\n' "$iid" >"$run/$s.tmp"
	else
		[ -r "$mnt/meta-data" ] || die "$mnt/meta-data is missing and lima.env has no LIMA_CIDATA_IID"
		cp "$mnt/meta-data" "$run/$s.tmp"
	fi
	mv "$run/$s.tmp" "$run/$s"
done
log "boot done (${iid:-instance id from meta-data})"
