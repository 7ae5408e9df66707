package sshtest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// StandIns are fake nixos-anywhere and k3s: the real ones cannot run here (nixos-anywhere kexecs and
// partitions a machine; k3s needs a kernel it can own). They act on the nodes through the real sshds and
// record what they were asked, so tests assert order, waves, parallelism and delivered files.
//
// nixos-anywhere (local, on PATH): logs `start`/`end`/`fail` lines with timestamps, its arguments and the
// extra files it was given (`file <host> <path> <mode> <first line>`), sleeps Sleep seconds, fails for the
// hosts listed in Fail, then acts on the node over ssh as the real one (src/nixos-anywhere.sh) does in what
// decides host keys: every ssh starts with its defaults `-o UserKnownHostsFile=/dev/null -o
// StrictHostKeyChecking=no`, --ssh-option and -p come after them, and `ssh` is whichever is first on PATH
// (the system's; /usr/bin is appended). Like the real one it retries its first connection and the one after
// kexec until they succeed, and prints the real one's `### step ###` lines. It connects to the existing
// system, "kexecs" (the node's sshd restarts and keeps its host key, as nixos-images' kexec installer keeps
// /etc/ssh/ssh_host_*, or serves a key of its own for the hosts listed in KexecOwnKey), reconnects,
// copies the extra files to the node's /, leaves a NixOS behind (/etc/NIXOS, the hostname `<c>-<m>` from
// the flake attribute, /run/current-system) and "reboots": the node's sshd restarts with the
// /etc/ssh/ssh_host_ed25519_key of the extra files, or a key the node makes itself when they had none (as
// NixOS's sshd does) or for the hosts listed in ForeignKey. It registers the node with the fake cluster as
// Ready, or NotReady for the hosts listed in NotReady.
//
// k3s (node side, on the nodes' PATH): exists only on installed nodes, its API refuses connections until the
// node is registered; `k3s kubectl get --raw /readyz` answers ok on a Ready node only, `get node NAME -o json`
// and `get nodes -o json` describe the registered nodes. On a node with a K3sTokens stand-in, that one takes
// every call first and hands it back for what it does not do itself.
//
// systemctl (node side, on the nodes' PATH, before the host's own): the units are the files under the node's
// /etc/systemd/system (write one with Node.WriteFile); `cat UNIT` prints one or fails like systemd when there
// is none, `reset-failed` does nothing, `start`, `stop` and `restart` (with or without --no-block) log
// `systemctl <node> <arguments>` and fail for a unit that does not exist.
type StandIns struct {
	// Dir is the stand-ins' state: log, sleep, fail, not-ready, nodes/.
	Dir string
	// LocalBin holds nixos-anywhere; put it first on PATH.
	LocalBin string
}

// StandIns writes the stand-ins for this net.
func (n *Net) StandIns(t testing.TB) *StandIns {
	t.Helper()
	s := &StandIns{Dir: filepath.Join(n.Dir, "standin"), LocalBin: filepath.Join(n.Dir, "localbin")}
	for _, d := range []string{s.Dir, filepath.Join(s.Dir, "nodes"), s.LocalBin} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r := strings.NewReplacer("@STATE@", s.Dir, "@NODEBIN@", n.BinDir(), "@NODES@", filepath.Join(n.Dir, "nodes"))
	write(t, filepath.Join(s.LocalBin, "nixos-anywhere"), r.Replace(nixosAnywhere))
	write(t, filepath.Join(n.BinDir(), "k3s"), r.Replace(k3s))
	write(t, filepath.Join(n.BinDir(), "systemctl"), r.Replace(systemctl))
	write(t, filepath.Join(n.BinDir(), "nix8s-test-restart"), r.Replace(restart))
	return s
}

// SetSleep makes every install take secs seconds.
func (s *StandIns) SetSleep(t testing.TB, secs string) {
	write(t, filepath.Join(s.Dir, "sleep"), secs+"\n")
}

// SetTogether makes each install of these hosts (`<c>-<m>`) wait, at most 60 s, until min(n, those not yet
// finished) of them are in flight: an installer that runs n at a time always shows n together, however slow
// the machine; one that runs fewer than n makes each wait out the bound.
func (s *StandIns) SetTogether(t testing.TB, n int, hosts ...string) {
	write(t, filepath.Join(s.Dir, "together"), strconv.Itoa(n)+"\n"+strings.Join(hosts, "\n")+"\n")
}

// SetFail makes the installs of these hosts (`<c>-<m>`) fail.
func (s *StandIns) SetFail(t testing.TB, hosts ...string) {
	write(t, filepath.Join(s.Dir, "fail"), strings.Join(hosts, "\n")+"\n")
}

// SetKexecOwnKey makes the kexec installer of these hosts serve a host key of its own, not the existing
// system's.
func (s *StandIns) SetKexecOwnKey(t testing.TB, hosts ...string) {
	write(t, filepath.Join(s.Dir, "kexec-own-key"), strings.Join(hosts, "\n")+"\n")
}

// SetForeignKey makes these hosts come back from the install's reboot with another host key than the one
// in the extra files (a system whose sshd makes its own, or another machine on the address).
func (s *StandIns) SetForeignKey(t testing.TB, hosts ...string) {
	write(t, filepath.Join(s.Dir, "foreign-key"), strings.Join(hosts, "\n")+"\n")
}

// SetNotReady makes these hosts install but never become Ready.
func (s *StandIns) SetNotReady(t testing.TB, hosts ...string) {
	write(t, filepath.Join(s.Dir, "not-ready"), strings.Join(hosts, "\n")+"\n")
}

// Log is the stand-ins' log, one record per line.
func (s *StandIns) Log(t testing.TB) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(s.Dir, "log"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

// Register makes host a node of the fake cluster (as an install would), Ready or not.
func (s *StandIns) Register(t testing.TB, host string, ready bool) {
	status := "True"
	if !ready {
		status = "False"
	}
	write(t, filepath.Join(s.Dir, "nodes", host), status+"\n")
}

func write(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}

const nixosAnywhere = `#!/bin/bash
# Stand-in for nixos-anywhere in nix8s tests (see internal/sshtest/standins.go): it records, then acts on the
# node over ssh with the real one's ssh options.
set -euo pipefail
S=@STATE@
NODEBIN=@NODEBIN@
# The real one's package appends openssh to PATH: the ssh first on the caller's PATH wins.
PATH=$PATH:/usr/bin
now() { date +%s.%N; }
step() { echo "### $* ###"; }
flake= extra= target= key=
# The real one's defaults, first on every ssh command line; OpenSSH takes the first value of an option.
sshArgs=(-o IdentitiesOnly=yes -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no)
all=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --flake) flake=$2; shift 2 ;;
    --extra-files) extra=$2; shift 2 ;;
    --target-host) target=$2; shift 2 ;;
    -i) key=$2; shift 2 ;;
    -p|--ssh-port) sshArgs+=(-p "$2"); shift 2 ;;
    --ssh-option) sshArgs+=(-o "$2"); shift 2 ;;
    -*) echo "nixos-anywhere stand-in: unknown flag $1" >&2; exit 2 ;;
    *) target=$1; shift ;;
  esac
done
[ -z "$key" ] || sshArgs+=(-i "$key")
runSsh() { ssh "${sshArgs[@]}" "$target" "$@"; }
listed() { grep -qx "$host" "$S/$1" 2>/dev/null; }
host=${flake#*#}
echo "start $host $(now)" >>"$S/log"
{ printf 'args %s' "$host"; printf ' %s' "${all[@]}"; echo; } >>"$S/log"
files=
if [ -n "$extra" ]; then
  files=$(cd "$extra" && find . -type f | sed 's|^\./|/|' | sort | tr '\n' ' ')
  for f in $files; do
    case "$f" in
      /etc/*|/var/*|/run/*) ;;
      *) echo "nixos-anywhere stand-in: refusing $f: test nodes only have private /etc, /var and /run" >&2; exit 2 ;;
    esac
    echo "file $host $f $(stat -c %a "$extra$f") $(head -n 1 "$extra$f")" >>"$S/log"
  done
fi
echo "installing $host"
# SetTogether: an install of the group waits (bounded) until min(n, unfinished) of its group are in flight, so
# a test sees the overlap --parallel promises without depending on how fast the machine is.
if [ -s "$S/together" ] && tail -n +2 "$S/together" | grep -qx "$host"; then
  mkdir -p "$S/in" "$S/done"
  touch "$S/in/$host"
  trap 'touch "$S/done/$host"' EXIT
  n=$(head -n 1 "$S/together"); total=$(($(wc -l <"$S/together") - 1))
  for _ in $(seq 600); do
    in=$(ls "$S/in" | wc -l); done_=$(ls "$S/done" | wc -l)
    want=$(( total - done_ < n ? total - done_ : n ))
    [ $((in - done_)) -ge "$want" ] && break
    sleep 0.1
  done
fi
sleep "$(cat "$S/sleep" 2>/dev/null || echo 0)"
if listed fail; then
  echo "fail $host $(now)" >>"$S/log"
  echo "nixos-anywhere stand-in: failing for $host as the test asked" >&2
  exit 1
fi
step Uploading install SSH keys
# The real one's ssh-copy-id loop: it retries until the connection works.
until runSsh true; do sleep 0.5; done
echo "connected $host existing" >>"$S/log"
step Gathering machine facts
runSsh uname -n >/dev/null
step Switching system into kexec
runSsh "$NODEBIN/nix8s-test-restart kexec $(listed kexec-own-key && echo own-key || true)"
target=root@${target#*@}
# The real one waits for the installer the same way: until ssh works.
until runSsh true; do sleep 0.2; done
echo "connected $host installer" >>"$S/log"
step Formatting hard drive with disko
if [ -n "$extra" ]; then
  step Copying extra files
  # Only the top-level directories (etc, var, run: the node's private overlays), never "." itself: the node's
  # / is the test machine's own, whose mode and times an extracted "." would take.
  (cd "$extra" && tar -cf - -- *) | runSsh 'tar -C / --no-same-owner --no-overwrite-dir -xf -'
  echo "copied $host" >>"$S/log"
fi
step Installing NixOS
newkey=
if [ ! -f "$extra/etc/ssh/ssh_host_ed25519_key" ] || listed foreign-key; then
  newkey="rm -f /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub && mkdir -p /etc/ssh && ssh-keygen -q -t ed25519 -N '' -C '' -f /etc/ssh/ssh_host_ed25519_key && "
fi
runSsh "[ -n \"\${NIX8S_TEST_NODE:-}\" ] && ${newkey}touch /etc/NIXOS && hostname $host && ln -sfn /nix/store/0000000000000000000000000000000$(echo "$host" | md5sum | cut -c1)-nixos-system-$host /run/current-system"
step Rebooting
runSsh "$NODEBIN/nix8s-test-restart reboot"
step Waiting for the machine to become unreachable due to reboot
# The real one tries until ssh fails; the node's restart takes no time, so one try is what it would see.
runSsh true || true
if listed not-ready; then echo False >"$S/nodes/$host"; else echo True >"$S/nodes/$host"; fi
echo "end $host $(now)" >>"$S/log"
`

// restart is a node's kexec or reboot: its sshd restarts (the supervisor in sshtest.go starts it again) and
// serves the key the node has then.
const restart = `#!/bin/sh
# Stand-in for a kexec or a reboot on nix8s test nodes (see internal/sshtest/standins.go).
set -eu
[ -n "${NIX8S_TEST_NODE:-}" ] || { echo "nix8s-test-restart: not on a test node" >&2; exit 2; }
d=@NODES@/$NIX8S_TEST_NODE
case "${1:-}" in
  kexec)
    rm -f "$d/kexec_host_key" "$d/kexec_host_key.pub"
    [ "${2:-}" != own-key ] || ssh-keygen -q -t ed25519 -N '' -C '' -f "$d/kexec_host_key"
    hostname nixos ;;
  reboot) rm -f "$d/kexec_host_key" "$d/kexec_host_key.pub" ;;
  *) echo "usage: nix8s-test-restart kexec [own-key] | reboot" >&2; exit 2 ;;
esac
old=$(cat "$d/sshd.pid")
kill "$old"
# The old sshd gone is its listening socket closed: the next connection reaches the new one, or is refused.
while kill -0 "$old" 2>/dev/null; do sleep 0.05; done
`

const k3s = `#!/bin/sh
# Stand-in for k3s on nix8s test nodes (see internal/sshtest/standins.go); a node's K3sTokens first.
` + k3sDispatch + `S=@STATE@
[ -e /etc/NIXOS ] || { echo "sh: 1: k3s: not found" >&2; exit 127; }
me=$(uname -n)
node_json() {
  printf '{"kind":"Node","metadata":{"name":"%s"},"status":{"conditions":[{"type":"Ready","status":"%s"}],"nodeInfo":{"kubeletVersion":"v1.31.0+k3s1"}}}' "$1" "$(cat "$S/nodes/$1")"
}
[ "${1:-}" = kubectl ] || { echo "k3s stand-in: only 'k3s kubectl' is implemented" >&2; exit 2; }
shift
refused() { echo "The connection to the server 127.0.0.1:6443 was refused - did you specify the right host or port?" >&2; exit 1; }
[ -e "$S/nodes/$me" ] || refused
case "$*" in
  "get --raw /readyz") [ "$(cat "$S/nodes/$me")" = True ] || refused; echo ok ;;
  "get node "*" -o json")
    [ -e "$S/nodes/$3" ] || { echo "Error from server (NotFound): nodes \"$3\" not found" >&2; exit 1; }
    node_json "$3" ;;
  "get nodes -o json")
    printf '{"kind":"NodeList","items":['; sep=
    for f in "$S"/nodes/*; do [ -e "$f" ] || continue; printf '%s' "$sep"; node_json "$(basename "$f")"; sep=,; done
    printf ']}' ;;
  *) echo "k3s stand-in: unsupported: kubectl $*" >&2; exit 2 ;;
esac
`

const systemctl = `#!/bin/sh
# Stand-in for systemctl on nix8s test nodes (see internal/sshtest/standins.go).
S=@STATE@
me=${NIX8S_TEST_NODE:-$(uname -n)}
all="$*"
[ "${1:-}" = --no-block ] && shift
verb=${1:-} unit=${2:-}
case "$verb" in
  cat) [ -e "/etc/systemd/system/$unit" ] || { echo "No files found for $unit." >&2; exit 1; }
       cat "/etc/systemd/system/$unit" ;;
  reset-failed) ;;
  start|stop|restart)
    [ -e "/etc/systemd/system/$unit" ] || { echo "Failed to $verb $unit: Unit $unit not found." >&2; exit 5; }
    echo "systemctl $me $all" >>"$S/log" ;;
  *) echo "systemctl stand-in: unsupported: $all" >&2; exit 2 ;;
esac
`
