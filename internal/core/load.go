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
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/nix8s/nix8s/internal/nixexpr"
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
	// Path is the value's config path as ShowPath renders it, when the problem is with one value (a limit, a
	// key, a number); Msg starts with it then.
	Path string
	Msg  string
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

// Limits of what Decode accepts, the same in nix8s and nix8sd. A config is a few kilobytes of names, addresses
// and flags; the limits are far above that and far below what a hostile document needs to exhaust memory or
// time (a 18 KB YAML nested 9,000 deep took 1.3 GB to check), to break the store (PostgreSQL refuses NUL in
// text) or to change meaning on its way into Nix (builtins.fromJSON wraps integers beyond 64 bits).
const (
	// MaxBytes bounds the text of a config.
	MaxBytes = 1 << 20
	// MaxDepth bounds nesting: a value's path from the top of the config (nodes.a.install.disk is 4) has at
	// most MaxDepth segments.
	MaxDepth = 64
	// MaxValues bounds the values of a config overall (every mapping, sequence and scalar, YAML aliases
	// counted each time they are used).
	MaxValues = 200_000
	// MaxString bounds the bytes of one string value.
	MaxString = 64 << 10
	// MaxKey bounds the bytes of one mapping key.
	MaxKey = 1 << 10
)

// Decode parses data as JSON when its first non-blank character is `{` or `[`, as YAML otherwise, into plain
// JSON values: map[string]any, []any, string, bool, nil and json.Number (integers stay integers, floats stay
// floats when passed on to Nix). YAML keys must be strings. Errors are *DecodeError.
func Decode(data []byte) (any, error) { return DecodeAt(data, nil) }

// DecodeAt decodes a value that is to be placed at path at in a config (nix8sd's PUT /v1/nodes/{name}: at is
// nodes.<name>): errors name the value's path in the config, and nesting counts from the config's top. Besides
// the syntax, it refuses what breaches the limits above, strings and keys that are not valid UTF-8 or contain
// NUL, and numbers beyond 64 bits. YAML is parsed into its node tree (bounded by MaxBytes) and checked there
// before anything is built from it.
func DecodeAt(data []byte, at []string) (any, error) {
	if len(data) > MaxBytes {
		c := checker{path: at}
		return nil, c.errAt(0, 0, "%d bytes is more than the %d a config may have; split it up or shorten it", len(data), MaxBytes)
	}
	var v any
	var err error
	if Detect(data) == "JSON" {
		v, err = decodeJSON(data)
	} else {
		v, err = decodeYAML(data, at)
	}
	if err != nil {
		return nil, err
	}
	c := checker{path: append([]string(nil), at...)}
	return c.plain(v)
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
	if !utf8.Valid(data) {
		// encoding/json would silently replace the bytes with U+FFFD.
		line, col := position(data, int64(invalidUTF8(data)))
		return nil, decodeErr(line, col, "invalid JSON: a byte sequence that is not UTF-8; save the file as UTF-8")
	}
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

// invalidUTF8 is the offset of the first byte of data that does not start a valid UTF-8 sequence.
func invalidUTF8(data []byte) int {
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return len(data)
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

func decodeYAML(data []byte, at []string) (any, error) {
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
	c := checker{path: append([]string(nil), at...)}
	if err := c.node(&doc); err != nil {
		return nil, err
	}
	var raw any
	if err := doc.Decode(&raw); err != nil {
		return nil, yamlError(err)
	}
	return raw, nil
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

// checker walks a decoded config once, with the path of the value at hand (shared, copied only into an error:
// copying it at every level made a deep document cost memory quadratic in its depth).
type checker struct {
	path   []string
	values int
}

// errAt is a problem with the value at the current path.
func (c *checker) errAt(line, col int, format string, args ...any) error {
	p := ShowPath(c.path)
	return &DecodeError{Line: line, Col: col, Path: p, Msg: p + ": " + fmt.Sprintf(format, args...)}
}

func (c *checker) push(k string) { c.path = append(c.path, k) }
func (c *checker) pop()          { c.path = c.path[:len(c.path)-1] }

// enter counts a value and refuses it when it is nested too deep or one too many.
func (c *checker) enter(line, col int) error {
	c.values++
	if len(c.path) > MaxDepth {
		return c.errAt(line, col, "nested deeper than %d levels; a config needs only a few, flatten this value", MaxDepth)
	}
	if c.values > MaxValues {
		return c.errAt(line, col, "more than %d values in the config; split it up or shorten it", MaxValues)
	}
	return nil
}

// node checks a YAML node tree before anything is built from it: nesting and the number of values (aliases
// followed, so neither a cycle nor an alias bomb gets past), and mapping keys that are not strings (`1:`,
// `true:`, `null:`, `[a]:`): Nix attribute names and JSON object keys are strings, and silently stringifying
// them hides typos.
func (c *checker) node(n *yaml.Node) error {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, e := range n.Content {
			if err := c.node(e); err != nil {
				return err
			}
		}
		return nil
	case yaml.AliasNode:
		if n.Alias == nil {
			return nil // the decoder names the unknown anchor
		}
		return c.node(n.Alias)
	}
	if err := c.enter(n.Line, n.Column); err != nil {
		return err
	}
	switch n.Kind {
	case yaml.SequenceNode:
		for i, e := range n.Content {
			c.push(strconv.Itoa(i))
			err := c.node(e)
			c.pop()
			if err != nil {
				return err
			}
		}
	case yaml.MappingNode:
		return c.mapping(n)
	case yaml.ScalarNode:
		// yaml.v3 reads an integer beyond int64 as uint64 or, further out, as a float: refuse both rather than
		// let Nix wrap it or round it.
		var i int64
		if tag := n.ShortTag(); tag == "!!int" && n.Decode(&i) != nil || tag == "!!float" && decimalRe.MatchString(n.Value) {
			return c.errAt(n.Line, n.Column, "%s is beyond the 64-bit integers Nix holds; quote it to make it a string", n.Value)
		}
	}
	return nil
}

// mapping checks a mapping's entries; merge keys (`<<: *base`) merge at the mapping's own path.
func (c *checker) mapping(n *yaml.Node) error {
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			if err := c.merge(v); err != nil {
				return err
			}
			continue
		}
		if k.Kind != yaml.ScalarNode || k.Tag != "!!str" {
			return c.errAt(k.Line, k.Column, "key %s is not a string; quote it (\"%s\")", describeKey(k), k.Value)
		}
		c.push(k.Value)
		err := c.node(v)
		c.pop()
		if err != nil {
			return err
		}
	}
	return nil
}

// merge checks what a merge key merges: a mapping, an alias of one, or a sequence of those.
func (c *checker) merge(v *yaml.Node) error {
	for v.Kind == yaml.AliasNode && v.Alias != nil {
		if err := c.enter(v.Line, v.Column); err != nil {
			return err
		}
		v = v.Alias
	}
	switch v.Kind {
	case yaml.MappingNode:
		if err := c.enter(v.Line, v.Column); err != nil {
			return err
		}
		return c.mapping(v)
	case yaml.SequenceNode:
		for _, e := range v.Content {
			if err := c.merge(e); err != nil {
				return err
			}
		}
	}
	return nil // anything else is the decoder's to refuse
}

func describeKey(k *yaml.Node) string {
	if k.Kind != yaml.ScalarNode {
		return "of kind " + map[yaml.Kind]string{yaml.MappingNode: "mapping", yaml.SequenceNode: "sequence", yaml.AliasNode: "alias"}[k.Kind]
	}
	return fmt.Sprintf("%s (%s)", k.Value, strings.TrimPrefix(k.Tag, "!!"))
}

// plain converts what yaml.v3 or encoding/json decoded into JSON values and checks every value against the
// limits; keys are visited in order, so the first problem reported does not depend on map order.
func (c *checker) plain(v any) (any, error) {
	if err := c.enter(0, 0); err != nil {
		return nil, err
	}
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if err := c.key(k); err != nil {
				return nil, err
			}
			c.push(k)
			p, err := c.plain(x[k])
			c.pop()
			if err != nil {
				return nil, err
			}
			x[k] = p
		}
		return x, nil
	case []any:
		for i, e := range x {
			c.push(strconv.Itoa(i))
			p, err := c.plain(e)
			c.pop()
			if err != nil {
				return nil, err
			}
			x[i] = p
		}
		return x, nil
	case map[any]any:
		return nil, c.errAt(0, 0, "a mapping with keys that are not strings")
	case nil, bool:
		return x, nil
	case string:
		return x, c.text(x)
	case json.Number:
		return x, c.number(x)
	case int:
		return json.Number(strconv.Itoa(x)), nil
	case int64:
		return json.Number(strconv.FormatInt(x, 10)), nil
	case uint64:
		if x > math.MaxInt64 {
			return nil, c.errAt(0, 0, "%d is beyond the 64-bit integers Nix holds; quote it to make it a string", x)
		}
		return json.Number(strconv.FormatUint(x, 10)), nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, c.errAt(0, 0, "%v is not a number JSON or Nix can hold", x)
		}
		s := strconv.FormatFloat(x, 'g', -1, 64)
		if !strings.ContainsAny(s, ".eE") {
			s += ".0" // keep it a float: 1.0 in YAML is a float in Nix too
		}
		return json.Number(s), nil
	case time.Time:
		return nil, c.errAt(0, 0, "%s is a YAML timestamp, which has no JSON form; quote it to make it a string", x.Format(time.RFC3339))
	default:
		return nil, c.errAt(0, 0, "a YAML value of type %T has no JSON form; quote it to make it a string", v)
	}
}

// key refuses a mapping key the store or Nix cannot hold as it is; the path named is the mapping's.
func (c *checker) key(k string) error {
	switch {
	case len(k) > MaxKey:
		return c.errAt(0, 0, "a key of %d bytes (%.20q...); keys are names, at most %d bytes", len(k), k, MaxKey)
	case !utf8.ValidString(k):
		return c.errAt(0, 0, "key %.40q is not valid UTF-8; keys are names, write them as text", k)
	case strings.IndexByte(k, 0) >= 0:
		return c.errAt(0, 0, "key %.40q contains a NUL character; keys are names, remove it", k)
	}
	return nil
}

// text refuses a string value the store or Nix cannot hold as it is.
func (c *checker) text(s string) error {
	switch {
	case len(s) > MaxString:
		return c.errAt(0, 0, "a string of %d bytes is more than the %d a config value may have", len(s), MaxString)
	case !utf8.ValidString(s):
		return c.errAt(0, 0, "%.40q is not valid UTF-8; write it as text (YAML !!binary is not for configs)", s)
	case strings.IndexByte(s, 0) >= 0:
		return c.errAt(0, 0, "%.40q contains a NUL character, which neither Nix strings nor the store hold; remove it", s)
	}
	return nil
}

// number refuses a JSON number Nix's builtins.fromJSON would not read back as written: integers beyond 64 bits
// (it wraps 9223372036854775808 to a negative) and floats beyond float64.
func (c *checker) number(n json.Number) error {
	s := string(n)
	if !strings.ContainsAny(s, ".eE") {
		if _, err := strconv.ParseInt(s, 10, 64); err != nil {
			return c.errAt(0, 0, "%s is beyond the 64-bit integers Nix holds; quote it to make it a string", s)
		}
		return nil
	}
	if _, err := strconv.ParseFloat(s, 64); err != nil {
		return c.errAt(0, 0, "%s is beyond the floating-point numbers Nix holds", s)
	}
	return nil
}

var decimalRe = regexp.MustCompile(`^[-+]?[0-9][0-9_]*$`)

// ShowPath renders a config path the way the core's messages do: dotted, with segments that are not Nix
// identifiers quoted (`nodes."my.node".install`). The empty path is "(top level)".
func ShowPath(path []string) string { return nixexpr.ShowPath(path) }
