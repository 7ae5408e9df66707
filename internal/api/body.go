package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"
	"go.yaml.in/yaml/v3"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/store"
)

// readBody reads the request body within the size limit.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, &httpError{status: http.StatusRequestEntityTooLarge, code: "bad_request", msg: fmt.Sprintf("request body larger than %d bytes", s.maxBody)}
	}
	return data, err
}

// mediaType is the request's content type: "json", "yaml", or "" when absent.
func mediaType(r *http.Request) (string, error) {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return "", nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return "", unsupported(ct)
	}
	switch mt {
	case "application/json":
		return "json", nil
	case "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml":
		return "yaml", nil
	}
	return "", unsupported(ct)
}

func unsupported(ct string) error {
	return &httpError{status: http.StatusUnsupportedMediaType, code: "unsupported_media_type",
		msg: fmt.Sprintf("content type %q not supported; send application/json or application/yaml", ct)}
}

// decodeConfigBody reads a config value (the whole config or one object of it) as YAML or JSON: what the core's
// loader takes, so a file that `nix8s validate` accepts is accepted here.
func (s *Server) decodeConfigBody(w http.ResponseWriter, r *http.Request) (any, error) {
	mt, err := mediaType(r)
	if err != nil {
		return nil, err
	}
	data, err := s.readBody(w, r)
	if err != nil {
		return nil, err
	}
	if t := bytes.TrimLeft(data, " \t\r\n"); mt == "json" && (len(t) == 0 || t[0] != '{') {
		return nil, badRequest("malformed body: a JSON object was expected")
	}
	v, err := core.DecodeAt(data, configPath(r))
	if err != nil {
		return nil, decodeProblem("malformed body: ", err)
	}
	return v, nil
}

// decodeProblem answers a decoding error as 400, with the value's path in the details when it has one.
func decodeProblem(prefix string, err error) error {
	var de *core.DecodeError
	if errors.As(err, &de) && de.Path != "" {
		return badRequest(prefix+err.Error(), Problem{Path: de.Path, Message: strings.TrimPrefix(de.Msg, de.Path+": ")})
	}
	return badRequest(prefix + err.Error())
}

// configPath is where the request's body goes in the config: nodes.<name> for PUT /v1/nodes/{name}, nothing for
// /v1/config. Decoding names paths from there, and nesting counts from the config's top, so an object nested
// within the limit alone cannot put the whole config beyond it.
func configPath(r *http.Request) []string {
	rc := chi.RouteContext(r.Context())
	if rc == nil {
		return nil
	}
	var path []string
	for _, seg := range strings.Split(strings.TrimPrefix(rc.RoutePattern(), "/v1/"), "/") {
		if p, ok := strings.CutPrefix(seg, "{"); ok {
			seg = chi.URLParam(r, strings.TrimSuffix(p, "}"))
		}
		path = append(path, seg)
	}
	if len(path) == 1 && path[0] == "config" {
		return nil
	}
	return path
}

// decodeStrict reads a JSON body into dst, refusing unknown fields and trailing data.
func (s *Server) decodeStrict(w http.ResponseWriter, r *http.Request, dst any) error {
	if mt, err := mediaType(r); err != nil {
		return err
	} else if mt == "yaml" {
		return unsupported(r.Header.Get("Content-Type"))
	}
	data, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(data)) == 0 {
		data = []byte("{}")
	}
	// The core's decoder applies the limits every body shares (nesting, sizes, NUL, UTF-8, 64-bit integers);
	// syntax errors are left to the strict decoder below, which names unknown fields.
	if _, err := core.Decode(data); err != nil {
		var de *core.DecodeError
		if errors.As(err, &de) && (de.Path != "" || !utf8.Valid(data)) {
			return decodeProblem("malformed JSON body: ", err)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		msg := err.Error()
		if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
			f = strings.Trim(f, `"`)
			return badRequest("unknown field "+strconv.Quote(f), Problem{Path: f, Message: "unknown field"})
		}
		return badRequest("malformed JSON body: " + msg)
	}
	if dec.More() {
		return badRequest("malformed JSON body: more than one value")
	}
	return nil
}

// wantsYAML reports whether the client asked for YAML rather than JSON.
func wantsYAML(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, _ := mime.ParseMediaType(strings.TrimSpace(part))
		switch mt {
		case "application/yaml", "application/x-yaml", "text/yaml":
			return true
		case "application/json":
			return false
		}
	}
	return false
}

// writeValue answers a config value as JSON, or YAML when asked.
func writeValue(w http.ResponseWriter, r *http.Request, status int, v any) {
	if !wantsYAML(r) {
		writeJSON(w, status, v)
		return
	}
	plain, err := store.Normalize(v) // structs (pages) to plain JSON values
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error(), nil)
		return
	}
	n, err := yamlNode(plain)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error(), nil)
		return
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error(), nil)
		return
	}
	w.Header().Set("Content-Type", "application/yaml")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// yamlNode converts JSON values to a YAML node with sorted keys; strings that would read back as another type
// are quoted by the encoder because their tag is !!str.
func yamlNode(v any) (*yaml.Node, error) {
	switch x := v.(type) {
	case nil:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
	case bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(x)}, nil
	case string:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: x}, nil
	case json.Number:
		tag := "!!int"
		if strings.ContainsAny(string(x), ".eE") {
			tag = "!!float"
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: string(x)}, nil
	case float64:
		return yamlNode(json.Number(strconv.FormatFloat(x, 'g', -1, 64)))
	case []any:
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for _, e := range x {
			c, err := yamlNode(e)
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, c)
		}
		return n, nil
	case map[string]any:
		n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			c, err := yamlNode(x[k])
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k}, c)
		}
		return n, nil
	}
	return nil, fmt.Errorf("no YAML form for %T", v)
}
