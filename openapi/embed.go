// Package openapi holds the daemon's API contract, served at /v1/openapi.yaml.
package openapi

import _ "embed"

// Spec is nix8s.yaml (OpenAPI 3.0).
//
//go:embed nix8s.yaml
var Spec []byte
