//go:build tools

package nix8s

import (
	_ "github.com/go-chi/chi/v5"
	_ "github.com/insomniacslk/dhcp/dhcpv4/server4"
	_ "github.com/jackc/pgx/v5"
	_ "github.com/pin/tftp/v3"
	_ "github.com/pressly/goose/v3"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/rogpeppe/go-internal/testscript"
	_ "github.com/santhosh-tekuri/jsonschema/v6"
	_ "go.yaml.in/yaml/v3"
)
