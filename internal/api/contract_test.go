package api

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/nix8s/nix8s/openapi"
)

var (
	specOnce   sync.Once
	specRouter routers.Router
	specErr    error
)

func loadSpec() (routers.Router, error) {
	specOnce.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromData(openapi.Spec)
		if err != nil {
			specErr = err
			return
		}
		if err := doc.Validate(context.Background()); err != nil {
			specErr = err
			return
		}
		specRouter, specErr = legacy.NewRouter(doc)
	})
	return specRouter, specErr
}

func TestSpecIsValidOpenAPI(t *testing.T) {
	if _, err := loadSpec(); err != nil {
		t.Fatal(err)
	}
}

// checkContract checks every response the API tests receive against openapi/nix8s.yaml: the route must
// be documented, with the status code, and the body must match the schema. Requests are not checked: the tests
// send bad requests on purpose.
func checkContract(t testing.TB, req *http.Request, res *http.Response, body []byte) {
	t.Helper()
	router, err := loadSpec()
	if err != nil {
		t.Fatalf("openapi/nix8s.yaml: %v", err)
	}
	// The router matches on the server URL; ours is relative, so match on the path alone.
	r := req.Clone(context.Background())
	r.URL.Scheme, r.URL.Host, r.Host = "", "", ""
	route, params, err := router.FindRoute(r)
	if err != nil {
		if res.StatusCode == http.StatusNotFound || res.StatusCode == http.StatusMethodNotAllowed {
			return // a path or method the API does not have, asked for on purpose
		}
		t.Errorf("contract: %s %s answered %d but is not in the spec: %v", req.Method, req.URL.Path, res.StatusCode, err)
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: r, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		},
		Status: res.StatusCode,
		Header: res.Header,
		Body:   io.NopCloser(bytes.NewReader(body)),
		Options: &openapi3filter.Options{
			IncludeResponseStatus: true,
			MultiError:            true,
		},
	}
	if strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain") {
		in.Options.ExcludeResponseBody = true
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Errorf("contract: %s %s -> %d does not match openapi/nix8s.yaml: %v\nbody: %.500s", req.Method, req.URL.Path, res.StatusCode, err, body)
	}
}
