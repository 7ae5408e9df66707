package api

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/nix8s/nix8s/internal/store"
	"github.com/nix8s/nix8s/openapi"
)

// The spec's MachineStateName lists the states Go names (store.AllStates, which its own test holds to the
// database's table): a new state is documented where clients read the API.
func TestSpecNamesEveryMachineState(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(openapi.Spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatal(err)
	}
	ref := doc.Components.Schemas["MachineStateName"]
	if ref == nil || ref.Value == nil {
		t.Fatal("openapi/nix8s.yaml has no MachineStateName schema")
	}
	var spec []string
	for _, v := range ref.Value.Enum {
		spec = append(spec, fmt.Sprint(v))
	}
	var named []string
	for _, st := range store.AllStates {
		named = append(named, string(st))
	}
	slices.Sort(spec)
	slices.Sort(named)
	if !slices.Equal(spec, named) {
		t.Errorf("MachineStateName in openapi/nix8s.yaml is %v; store.AllStates is %v", spec, named)
	}
}
