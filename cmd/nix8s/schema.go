package main

import (
	"bytes"
	"context"
	"encoding/json"
)

func newSchemaCommand(a *app) *command {
	fs := newFlagSet("schema")
	a.evalFlags(fs)
	return &command{
		name:    "schema",
		summary: "Print the JSON Schema of the config, for editors (yaml-language-server).",
		usage:   "schema",
		example: "  $ nix8s schema > nix8s.schema.json\n  # then, first line of a config: # yaml-language-server: $schema=nix8s.schema.json",
		flags:   fs,
		args:    0,
		run:     func(ctx context.Context, _ []string) error { return a.schema(ctx) },
	}
}

func (a *app) schema(ctx context.Context) error {
	ev, err := a.evaluator()
	if err != nil {
		return err
	}
	raw, err := ev.Schema(ctx)
	if err != nil {
		return err
	}
	out, err := indentJSON(raw)
	if err != nil {
		return err
	}
	_, err = a.stdout.Write(out)
	return err
}

// indentJSON re-indents JSON by two spaces without touching its values or key order, ending in a newline.
func indentJSON(raw []byte) ([]byte, error) {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return nil, err
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}
