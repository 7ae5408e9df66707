package core

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// LoadFile reads a config written as YAML or JSON (see Decode). Errors name the file, and the line where the
// parser knows it.
func LoadFile(path string) (any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: no such file", path)
		}
		return nil, err
	}
	v, err := Decode(data)
	var de *DecodeError
	if errors.As(err, &de) {
		de.File = path
	}
	return v, err
}

// DecodeError is a config that does not parse, or parses into something that is not JSON data.
type DecodeError struct {
	File      string // set by LoadFile
	Line, Col int    // 1-based; 0 when unknown
	Msg       string
}

func (e *DecodeError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		if b.Len() > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%d", e.Line)
		if e.Col > 0 {
			fmt.Fprintf(&b, ":%d", e.Col)
		}
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

func decodeErr(line, col int, format string, args ...any) error {
	return &DecodeError{Line: line, Col: col, Msg: fmt.Sprintf(format, args...)}
}

// Decode parses data as JSON when its first non-blank character is `{` or `[`, as YAML otherwise, into plain
// JSON values: map[string]any, []any, string, bool, nil and json.Number (integers stay integers, floats stay
// floats when passed on to Nix). YAML keys must be strings. Errors are *DecodeError.
func Decode(data []byte) (any, error) {
	if Detect(data) == "JSON" {
		return decodeJSON(data)
	}
	return decodeYAML(data)
}

// Detect names the format Decode reads data as: "JSON" or "YAML".
func Detect(data []byte) string {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		return "JSON"
	}
	return "YAML"
}

func decodeJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			// Offset counts the offending byte.
			line, col := position(data, syn.Offset-1)
			return nil, decodeErr(line, col, "invalid JSON: %s", syn.Error())
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			line, col := position(data, int64(len(data)))
			return nil, decodeErr(line, col, "invalid JSON: unexpected end of input")
		}
		return nil, decodeErr(0, 0, "invalid JSON: %v", err)
	}
	end := dec.InputOffset()
	if _, err := dec.Token(); err != io.EOF {
		rest := data[end:]
		end += int64(len(rest) - len(bytes.TrimLeft(rest, " \t\r\n")))
		line, col := position(data, end)
		return nil, decodeErr(line, col, "invalid JSON: more than one value")
	}
	return v, nil
}

// position converts a byte offset into a 1-based line and column (of the byte at that offset).
func position(data []byte, off int64) (int, int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	before := data[:off]
	line := bytes.Count(before, []byte{'\n'}) + 1
	col := int(off) - bytes.LastIndexByte(before, '\n')
	return line, col
}

var (
	yamlLineRe      = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)
	yamlUnmarshalRe = regexp.MustCompile(`^yaml: unmarshal errors:\n\s*line (\d+): (.*)`)
)

func decodeYAML(data []byte) (any, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, decodeErr(0, 0, "the file is empty; a config is a mapping with nodes, clusters and provisioning")
		}
		return nil, yamlError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, decodeErr(extra.Line, 0, "a second YAML document; a config is a single document")
	} else if !errors.Is(err, io.EOF) {
		return nil, yamlError(err)
	}
	if err := checkKeys(&doc, nil); err != nil {
		return nil, err
	}
	var raw any
	if err := doc.Decode(&raw); err != nil {
		return nil, yamlError(err)
	}
	return plain(raw, nil)
}

// yamlError rewrites "yaml: line 3: did not find expected key" as "3: did not find expected key".
func yamlError(err error) error {
	msg := err.Error()
	if m := yamlUnmarshalRe.FindStringSubmatch(msg); m != nil {
		// Decoding errors (duplicate keys, ...) come as a list; the first is enough to act on.
		line, _ := strconv.Atoi(m[1])
		return decodeErr(line, 0, "invalid YAML: %s", m[2])
	}
	if m := yamlLineRe.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		// yaml.v3 reports parser errors (all of them "did not find expected ...") with a 0-based line, and
		// scanner errors with a 1-based one.
		if line > 0 && strings.HasPrefix(m[2], "did not find expected") {
			line++
		}
		return decodeErr(line, 0, "invalid YAML: %s", m[2])
	}
	return decodeErr(0, 0, "invalid YAML: %s", msg)
}

// checkKeys refuses mapping keys that are not strings (`1:`, `true:`, `null:`, `[a]:`): Nix attribute names
// and JSON object keys are strings, and silently stringifying them hides typos.
func checkKeys(n *yaml.Node, path []string) error {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for i, c := range n.Content {
			p := path
			if n.Kind == yaml.SequenceNode {
				p = append(path[:len(path):len(path)], strconv.Itoa(i))
			}
			if err := checkKeys(c, p); err != nil {
				return err
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
				if err := checkKeys(v, path); err != nil {
					return err
				}
				continue
			}
			if k.Kind != yaml.ScalarNode || k.Tag != "!!str" {
				return decodeErr(k.Line, k.Column, "%s: key %s is not a string; quote it (\"%s\")",
					ShowPath(path), describeKey(k), k.Value)
			}
			if err := checkKeys(v, append(path[:len(path):len(path)], k.Value)); err != nil {
				return err
			}
		}
	}
	// Aliases point at nodes checked where they are defined.
	return nil
}

func describeKey(k *yaml.Node) string {
	if k.Kind != yaml.ScalarNode {
		return "of kind " + map[yaml.Kind]string{yaml.MappingNode: "mapping", yaml.SequenceNode: "sequence", yaml.AliasNode: "alias"}[k.Kind]
	}
	return fmt.Sprintf("%s (%s)", k.Value, strings.TrimPrefix(k.Tag, "!!"))
}

// plain converts what yaml.v3 decoded into JSON values.
func plain(v any, path []string) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			p, err := plain(e, append(path[:len(path):len(path)], k))
			if err != nil {
				return nil, err
			}
			x[k] = p
		}
		return x, nil
	case []any:
		for i, e := range x {
			p, err := plain(e, append(path[:len(path):len(path)], strconv.Itoa(i)))
			if err != nil {
				return nil, err
			}
			x[i] = p
		}
		return x, nil
	case map[any]any:
		return nil, decodeErr(0, 0, "%s: a mapping with keys that are not strings", ShowPath(path))
	case nil, string, bool:
		return x, nil
	case int:
		return json.Number(strconv.Itoa(x)), nil
	case int64:
		return json.Number(strconv.FormatInt(x, 10)), nil
	case uint64:
		return json.Number(strconv.FormatUint(x, 10)), nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, decodeErr(0, 0, "%s: %v is not a number JSON or Nix can hold", ShowPath(path), x)
		}
		s := strconv.FormatFloat(x, 'g', -1, 64)
		if !strings.ContainsAny(s, ".eE") {
			s += ".0" // keep it a float: 1.0 in YAML is a float in Nix too
		}
		return json.Number(s), nil
	case time.Time:
		return nil, decodeErr(0, 0, "%s: %s is a YAML timestamp, which has no JSON form; quote it to make it a string", ShowPath(path), x.Format(time.RFC3339))
	default:
		return nil, decodeErr(0, 0, "%s: a YAML value of type %T has no JSON form; quote it to make it a string", ShowPath(path), v)
	}
}

var identRe = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_'-]*$`)

// ShowPath renders a config path the way the core's messages do: dotted, with segments that are not Nix
// identifiers quoted (`nodes."my.node".install`). The empty path is "(top level)".
func ShowPath(path []string) string {
	if len(path) == 0 {
		return "(top level)"
	}
	parts := make([]string, len(path))
	for i, p := range path {
		if identRe.MatchString(p) {
			parts[i] = p
		} else {
			q, _ := json.Marshal(p)
			parts[i] = string(q)
		}
	}
	return strings.Join(parts, ".")
}
