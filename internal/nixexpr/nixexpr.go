// Package nixexpr renders JSON-shaped data (what a YAML or JSON config decodes to) as a readable Nix
// expression that evaluates to the same data. It is the engine of `nix8s import` (design 2.2: YAML to Nix is
// one-way), and it quotes strings for the few Nix expressions the core evaluator builds.
package nixexpr

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// maxInline is the widest a list of scalars may render on one line; longer lists get one element per line.
const maxInline = 72

var identRe = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_'-]*$`)

// Keywords cannot be bare attribute names (`or` is tolerated by Nix 2.8 but quoting it is clearer).
var keywords = map[string]bool{
	"if": true, "then": true, "else": true, "assert": true, "with": true,
	"let": true, "in": true, "rec": true, "inherit": true, "or": true,
}

// IsIdent reports whether s can be written as a bare Nix attribute name.
func IsIdent(s string) bool { return identRe.MatchString(s) && !keywords[s] }

// AttrName returns s as a Nix attribute name: bare when it is an identifier, a string literal otherwise
// ("com.sun:auto-snapshot").
func AttrName(s string) string {
	if IsIdent(s) {
		return s
	}
	return Quote(s)
}

// Quote returns s as a double-quoted Nix string literal. `${` is escaped so that no text is interpolated.
func Quote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '$':
			if i+1 < len(s) && s[i+1] == '{' {
				b.WriteString(`\$`)
			} else {
				b.WriteByte('$')
			}
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// Format renders v as a Nix expression, ending in a newline. v may hold nil, bool, string, json.Number,
// int, int64, float64, []any and map[string]any, nested freely. Attribute names are sorted, nested
// attribute sets with a single attribute are written as a dotted path (`network.mac = "...";`), and a list
// of scalars that fits on one line stays on one line.
//
// A value Nix cannot hold, or not give back unchanged, is an error naming its path rather than an expression
// that fails to evaluate or evaluates to something else: a string or name with a NUL character, an integer
// beyond Nix's 64 bits or without a literal (the smallest one), a float too small or too large for Nix's float
// literals, or one with more significant digits than Nix prints (6).
//
// Every such value is reported, one per line of the error, each with its path.
func Format(v any) ([]byte, error) {
	var w writer
	w.value(v, 0, nil)
	if len(w.errs) > 0 {
		return nil, errors.Join(w.errs...)
	}
	w.buf.WriteByte('\n')
	return w.buf.Bytes(), nil
}

// writer renders into buf; a value it cannot render is added to errs (and written as null) so that every
// problem is found in one pass.
type writer struct {
	buf  bytes.Buffer
	errs []error
}

func (w *writer) fail(path []string, format string, err error) {
	w.errs = append(w.errs, fmt.Errorf("%s: "+format, ShowPath(path), err))
}

func (w *writer) indent(depth int) {
	for i := 0; i < depth; i++ {
		w.buf.WriteString("  ")
	}
}

// value writes v starting at the current position; depth is the indentation of the line v starts on, and
// path names v in errors.
func (w *writer) value(v any, depth int, path []string) {
	switch x := v.(type) {
	case map[string]any:
		w.attrs(x, depth, path)
	case []any:
		w.list(x, depth, path)
	default:
		s, err := scalar(v)
		if err != nil {
			w.fail(path, "%w", err)
			s = "null"
		}
		w.buf.WriteString(s)
	}
}

func (w *writer) attrs(m map[string]any, depth int, path []string) {
	if len(m) == 0 {
		w.buf.WriteString("{ }")
		return
	}
	w.buf.WriteString("{\n")
	for _, k := range sortedKeys(m) {
		// Follow single-attribute sets down so that `a = { b = x; };` reads `a.b = x;`.
		names := []string{AttrName(k)}
		sub := append(path[:len(path):len(path)], k)
		if err := checkString(k); err != nil {
			w.fail(sub, "attribute name: %w", err)
		}
		v := m[k]
		for {
			inner, ok := v.(map[string]any)
			if !ok || len(inner) != 1 {
				break
			}
			for ik, iv := range inner {
				names = append(names, AttrName(ik))
				sub = append(sub, ik)
				v = iv
			}
			if err := checkString(sub[len(sub)-1]); err != nil {
				w.fail(sub, "attribute name: %w", err)
			}
		}
		w.indent(depth + 1)
		w.buf.WriteString(strings.Join(names, "."))
		w.buf.WriteString(" = ")
		w.value(v, depth+1, sub)
		w.buf.WriteString(";\n")
	}
	w.indent(depth)
	w.buf.WriteByte('}')
}

func (w *writer) list(l []any, depth int, path []string) {
	if len(l) == 0 {
		w.buf.WriteString("[ ]")
		return
	}
	if inline, ok := inlineList(l); ok {
		w.buf.WriteString(inline)
		return
	}
	w.buf.WriteString("[\n")
	for i, e := range l {
		w.indent(depth + 1)
		sub := append(path[:len(path):len(path)], strconv.Itoa(i))
		switch e.(type) {
		case map[string]any, []any:
			w.value(e, depth+1, sub)
		default:
			s, err := listScalar(e)
			if err != nil {
				w.fail(sub, "%w", err)
				s = "null"
			}
			w.buf.WriteString(s)
		}
		w.buf.WriteByte('\n')
	}
	w.indent(depth)
	w.buf.WriteByte(']')
}

// inlineList renders a list of scalars as `[ a b c ]` when that is short enough.
func inlineList(l []any) (string, bool) {
	parts := make([]string, len(l))
	n := 4
	for i, e := range l {
		s, err := listScalar(e)
		if err != nil {
			return "", false
		}
		parts[i] = s
		if n += len(s) + 1; n > maxInline {
			return "", false
		}
	}
	return "[ " + strings.Join(parts, " ") + " ]", true
}

// listScalar is scalar for a list element: a negative number is parenthesised, because `[ 1 -1 ]` parses
// as a subtraction.
func listScalar(v any) (string, error) {
	s, err := scalar(v)
	if err == nil && strings.HasPrefix(s, "-") {
		s = "(" + s + ")"
	}
	return s, err
}

// scalar renders a non-container value.
func scalar(v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "null", nil
	case bool:
		return strconv.FormatBool(x), nil
	case string:
		if err := checkString(x); err != nil {
			return "", err
		}
		return Quote(x), nil
	case int:
		return integer(int64(x))
	case int64:
		return integer(x)
	case float64:
		return float(x)
	case json.Number:
		return number(x)
	case map[string]any, []any:
		return "", fmt.Errorf("not a scalar")
	default:
		return "", fmt.Errorf("cannot represent a value of Go type %T in Nix", v)
	}
}

// number keeps integers integers and floats floats, as builtins.fromJSON would.
func number(n json.Number) (string, error) {
	s := n.String()
	if !strings.ContainsAny(s, ".eE") {
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return "", fmt.Errorf("integer %s does not fit in a Nix integer (64 bits, %d to %d); quote it to make it a string", s, math.MinInt64+1, math.MaxInt64)
		}
		return integer(i)
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return "", fmt.Errorf("number %s is beyond the largest float Nix holds (about 1.8e308); quote it to make it a string", s)
	}
	return float(f)
}

// integer writes i. Nix has no literal for the smallest int64: `-9223372036854775808` is the negation of
// 9223372036854775808, which Nix refuses as too large.
func integer(i int64) (string, error) {
	if i == math.MinInt64 {
		return "", fmt.Errorf("integer %d has no Nix literal (Nix reads it as the negation of %d, which does not fit in 64 bits); quote it to make it a string", i, uint64(math.MaxInt64)+1)
	}
	return strconv.FormatInt(i, 10), nil
}

// nixFloatDigits is how many significant digits Nix prints of a float (C++'s default stream precision): in
// `nix-instantiate --json`, builtins.toJSON and toString alike, so more digits would not come back from the core.
const nixFloatDigits = 6

// float writes f in a form Nix reads as a float: Nix float literals need a digit and a dot before any
// exponent (`1.0e+21`, not `1e+21`).
func float(f float64) (string, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "", fmt.Errorf("%v has no Nix (or JSON) representation", f)
	}
	s := strconv.FormatFloat(f, 'g', -1, 64)
	// Nix parses float literals with strtod and refuses any that underflow: subnormal numbers.
	if f != 0 && math.Abs(f) < 0x1p-1022 {
		return "", fmt.Errorf("float %s is too small for Nix, whose float literals stop at 2.2250738585072014e-308; write 0, or quote it to make it a string", s)
	}
	if short := strconv.FormatFloat(f, 'g', nixFloatDigits, 64); mustParseFloat(short) != f {
		return "", fmt.Errorf("float %s has more significant digits than Nix keeps when it prints a float (%d: it would come back as %s); round it, or quote it to make it a string", s, nixFloatDigits, short)
	}
	mant, exp, hasExp := strings.Cut(s, "e")
	if !strings.Contains(mant, ".") {
		mant += ".0"
	}
	if hasExp {
		return mant + "e" + exp, nil
	}
	return mant, nil
}

func mustParseFloat(s string) float64 {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		panic(fmt.Sprintf("nixexpr: FormatFloat wrote %q, which does not parse: %v", s, err))
	}
	return f
}

// checkString refuses what a Nix string cannot hold: Nix's strings end at a NUL character, so the text after it
// would be silently lost.
func checkString(s string) error {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return fmt.Errorf("%s contains a NUL character (at byte %d), which Nix strings cannot hold: Nix would cut it there; remove it", strconv.QuoteToASCII(s), i)
	}
	return nil
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ShowPath names a value in the dotted style of the core's messages (`clusters.prod.members."a b"`), segments
// that are not Nix identifiers quoted; the empty path is "(top level)".
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
