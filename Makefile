# Two entry points (README): `make example` runs nix8s on an example, `make test` runs every test.
GO ?= go

.PHONY: build test example bench bench-pxe update-golden

build:
	$(GO) build ./...

test:
	$(GO) vet ./...
	$(GO) test -count=1 ./...

# Validate and plan the HA example with the nix8s command (needs nix-instantiate; see README).
example:
	$(GO) run ./cmd/nix8s validate examples/ha/config.yaml
	$(GO) run ./cmd/nix8s plan examples/ha/config.yaml

bench:
	bench/core.sh

update-golden:
	$(GO) test ./tests -update
	$(GO) test ./cmd/nix8s -run 'TestExamplesImport|TestSchemaFile' -update

bench-pxe:
	$(GO) run ./bench/pxe
