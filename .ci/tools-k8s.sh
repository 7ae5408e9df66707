#!/usr/bin/env bash
# Builds the kube-apiserver and etcd that the rollout tests run against (Debian has neither), from the
# versions pinned in test/k8sbin/go.mod, and caches them under $HOME keyed by those versions, so a machine
# builds them once (cold: 5-11 min on 2 cores, ~2.4 GB RAM, ~4 GB of Go module and build caches, 145 MB of
# binaries; warm: instant).
# Prints the directory holding `kube-apiserver` and `etcd` (what KUBEBUILDER_ASSETS wants) on stdout.
# Fails, never skips, when they are missing and cannot be built. Called by .ci/install.
set -euo pipefail
cd "$(dirname "$0")/../test/k8sbin"
export GOWORK=off GOFLAGS=-mod=mod

k8s=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
etcd=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
dir="${NIX8S_K8S_BIN_DIR:-$HOME/.cache/nix8s/k8s-bin}/kube-apiserver-$k8s-etcd-$etcd"

if [ -x "$dir/kube-apiserver" ] && [ -x "$dir/etcd" ]; then
  echo "$dir"
  exit 0
fi

mkdir -p "$(dirname "$dir")"
# One build at a time per machine (test runs and CI may call this together); the winner's result is reused.
exec 9>"$(dirname "$dir")/.lock"
flock 9
if [ -x "$dir/kube-apiserver" ] && [ -x "$dir/etcd" ]; then
  echo "$dir"
  exit 0
fi

minor=${k8s#v1.}; minor=${minor%%.*}
tmp=$(mktemp -d "$(dirname "$dir")/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "nix8s: building kube-apiserver $k8s and etcd $etcd into $dir (cold: 5-11 min)" >&2
go build -trimpath -o "$tmp/" \
  -ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
  k8s.io/kubernetes/cmd/kube-apiserver go.etcd.io/etcd/server/v3 ||
  { echo "nix8s: error: building kube-apiserver $k8s and etcd $etcd failed (needs the Go module proxy, ~2.4 GB RAM)" >&2; exit 1; }
mv "$tmp/server" "$tmp/etcd"
chmod 755 "$tmp"
"$tmp/kube-apiserver" --version >&2
"$tmp/etcd" --version | head -1 >&2
rm -rf "$dir" && mv "$tmp" "$dir"
trap - EXIT
echo "$dir"
