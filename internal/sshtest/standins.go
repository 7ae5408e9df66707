package sshtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// StandIns are fake nixos-anywhere and k3s: the real ones cannot run here (nixos-anywhere kexecs and
// partitions a machine; k3s needs a kernel it can own). They act on the nodes through the real sshds and
// record what they were asked, so tests assert order, waves, parallelism and delivered files.
//
// nixos-anywhere (local, on PATH): logs `start`/`end`/`fail` lines with timestamps, its arguments and the
// extra files it was given, sleeps Sleep seconds, fails for the hosts listed in Fail, then over ssh copies the
// extra files to the node's / and leaves a NixOS behind: /etc/NIXOS, the hostname `<c>-<m>` from the flake
// attribute, /run/current-system. It registers the node with the fake cluster as Ready, or NotReady for the
// hosts listed in NotReady.
//
// k3s (node side, on the nodes' PATH): exists only on installed nodes, its API refuses connections until the
// node is registered; `k3s kubectl get --raw /readyz` answers ok on a Ready node only, `get node NAME -o json`
// and `get nodes -o json` describe the registered nodes.
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
	r := strings.NewReplacer("@STATE@", s.Dir, "@SSHOPTS@", n.SSHOptions())
	write(t, filepath.Join(s.LocalBin, "nixos-anywhere"), r.Replace(nixosAnywhere))
	write(t, filepath.Join(n.BinDir(), "k3s"), r.Replace(k3s))
	write(t, filepath.Join(n.BinDir(), "systemctl"), r.Replace(systemctl))
	return s
}

// SetSleep makes every install take secs seconds.
func (s *StandIns) SetSleep(t testing.TB, secs string) {
	write(t, filepath.Join(s.Dir, "sleep"), secs+"\n")
}

// SetFail makes the installs of these hosts (`<c>-<m>`) fail.
func (s *StandIns) SetFail(t testing.TB, hosts ...string) {
	write(t, filepath.Join(s.Dir, "fail"), strings.Join(hosts, "\n")+"\n")
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
# node over ssh.
set -euo pipefail
S=@STATE@
now() { date +%s.%N; }
flake= extra= target= key= port=22
all=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --flake) flake=$2; shift 2 ;;
    --extra-files) extra=$2; shift 2 ;;
    --target-host) target=$2; shift 2 ;;
    -i) key=$2; shift 2 ;;
    -p|--ssh-port) port=$2; shift 2 ;;
    --ssh-option) shift 2 ;;
    -*) echo "nixos-anywhere stand-in: unknown flag $1" >&2; exit 2 ;;
    *) target=$1; shift ;;
  esac
done
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
    echo "file $host $f $(stat -c %a "$extra$f") $(cat "$extra$f")" >>"$S/log"
  done
fi
echo "installing $host"
sleep "$(cat "$S/sleep" 2>/dev/null || echo 0)"
if grep -qx "$host" "$S/fail" 2>/dev/null; then
  echo "fail $host $(now)" >>"$S/log"
  echo "nixos-anywhere stand-in: failing for $host as the test asked" >&2
  exit 1
fi
ssh=(ssh @SSHOPTS@ -p "$port")
[ -z "$key" ] || ssh+=(-i "$key")
if [ -n "$extra" ]; then
  # Only the top-level directories (etc, var, run: the node's private overlays), never "." itself: the node's
  # / is the test machine's own, whose mode and times an extracted "." would take.
  (cd "$extra" && tar -cf - -- *) | "${ssh[@]}" "$target" 'tar -C / --no-same-owner --no-overwrite-dir -xf -'
fi
"${ssh[@]}" "$target" "touch /etc/NIXOS && hostname $host && ln -sfn /nix/store/0000000000000000000000000000000$(echo "$host" | md5sum | cut -c1)-nixos-system-$host /run/current-system"
if grep -qx "$host" "$S/not-ready" 2>/dev/null; then echo False >"$S/nodes/$host"; else echo True >"$S/nodes/$host"; fi
echo "end $host $(now)" >>"$S/log"
`

const k3s = `#!/bin/sh
# Stand-in for k3s on nix8s test nodes (see internal/sshtest/standins.go).
S=@STATE@
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
