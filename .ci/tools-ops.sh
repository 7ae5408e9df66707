#!/usr/bin/env bash
# Go-built tools the operations tests use: sops (gen-secrets/install encrypt and decrypt with sops/age).
# Installs into $(go env GOPATH)/bin, which .ci/run puts on PATH. Called by .ci/install.
set -euo pipefail
command -v sops >/dev/null || [ -x "$(go env GOPATH)/bin/sops" ] ||
  go install github.com/getsops/sops/v3/cmd/sops@v3.13.3
