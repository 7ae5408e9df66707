package api

import (
	"net/http"
	"testing"
)

// checkContract validates a request and its response against openapi/nix8s.yaml (filled in by the OpenAPI test).
var checkContract = func(t testing.TB, req *http.Request, res *http.Response, body []byte) {}
