#!/usr/bin/env bash
# limactl for internal/lima's tests: `limactl validate` checks the instance files nix8s writes with Lima's own
# rules. The Go module proxy here serves github.com/lima-vm/lima up to v1.2.2 and no version list, so
# `go install ...@version` fails; a small tools module pins it instead. Installs into $(go env GOPATH)/bin,
# which .ci/run puts on PATH. limactl refuses to run as root: the tests run it as nobody (setpriv).
# Called by .ci/install.
set -euo pipefail
bin="$(go env GOPATH)/bin"
command -v limactl >/dev/null || [ -x "$bin/limactl" ] || {
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' EXIT
  cd "$dir"
  go mod init nix8s.local/lima-tools >/dev/null 2>&1
  go get github.com/lima-vm/lima@v1.2.2 >/dev/null 2>&1
  printf 'package tools\n\nimport _ "github.com/lima-vm/lima/cmd/limactl"\n' >tools.go
  go mod tidy >/dev/null 2>&1
  GOBIN="$bin" go install github.com/lima-vm/lima/cmd/limactl
}
