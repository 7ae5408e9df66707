# Two entry points (README): `make example` runs nix8s on an example, `make test` runs every test.
GO ?= go

.PHONY: build test example bench bench-pxe update-golden

build:
	$(GO) build ./...

# Every test runs Nix as a fresh machine does: a build-users-group that does not exist (Debian's nix-bin
# without a nixbld group) makes Nix warn on stderr, and a setting Nix does not know makes every Nix command
# warn, under any user and store. Code that reads Nix's data from anything but stdout fails here on every
# machine; tests/fresh_machine_test.go checks that Nix does warn.
define NIX_TEST_CONFIG
$(NIX_CONFIG)
build-users-group = nix8s-test-absent-group
nix8s-test-stderr-noise = true
endef

test: export NIX_CONFIG := $(NIX_TEST_CONFIG)
test:
	$(GO) vet ./...
	$(GO) test -count=1 ./...

# Validate and plan the HA example with the nix8s command (needs nix-instantiate; see README).
example:
	$(GO) run ./cmd/nix8s validate --config examples/ha/config.yaml
	$(GO) run ./cmd/nix8s plan --config examples/ha/config.yaml

bench:
	bench/core.sh

update-golden:
	$(GO) test ./tests -update
	$(GO) test ./cmd/nix8s -run 'TestExamplesImport|TestSchemaFile' -update

bench-pxe:
	$(GO) run ./bench/pxe

# Every member of a 1,000- and a 5,000-member cluster asking for its boot script at once, against the real
# nix8sd serve --pxe on PostgreSQL, beside the daemon's /healthz (loopback; docs/pxe.md).
.PHONY: bench-storm
bench-storm:
	$(GO) run ./bench/storm

# Full-mode DHCP of nix8sd serve --pxe on PostgreSQL beside dnsmasq, loaded by ISC perfdhcp (root; docs/pxe.md).
.PHONY: bench-dhcp
bench-dhcp:
	$(GO) run ./bench/dhcp

# nix8sd's image serving beside nginx (Debian) serving the same file: CPU per GB and MB/s (root; docs/pxe.md).
.PHONY: bench-images
bench-images:
	GO=$(GO) $(GO) run ./bench/images
