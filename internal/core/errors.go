package core

import (
	"fmt"
	"regexp"
	"strings"
)

// HintError is an error that comes with advice on how to fix it; the CLI prints the hint as `nix8s: hint:`.
type HintError struct {
	Err  error  // what went wrong
	Hint string // what to do about it, one line
}

func (e *HintError) Error() string { return e.Err.Error() }
func (e *HintError) Unwrap() error { return e.Err }

// InvalidError is returned by Plan (and other calls that need a valid config) when validate reports errors.
type InvalidError struct {
	Report Report // every error and warning of the config
}

func (e *InvalidError) Error() string {
	n := len(e.Report.Errors)
	if n == 1 {
		return "the config has 1 error"
	}
	return fmt.Sprintf("the config has %d errors", n)
}

// EvalError is a failed nix-instantiate run: Message is Nix's error, cleaned of Nix's framing, Stderr all of
// what it printed.
type EvalError struct {
	Message string // Nix's error message, cleaned
	Stderr  string // everything nix-instantiate printed, for debugging
}

func (e *EvalError) Error() string { return "evaluating the core: " + e.Message }

var (
	posRe     = regexp.MustCompile(`^at (.+):(\d+):(\d+):$`)
	abortedRe = regexp.MustCompile(`(?s)^evaluation aborted with the following error message: '(.*)'$`)
)

// nixMessage extracts the error from nix-instantiate's stderr: the text after `error: `, its continuation
// lines dedented, the source position kept (with the materialised lib shown as lib/) unless it points into
// the wrapper expression, the code excerpt and the --show-trace advice dropped.
func nixMessage(stderr, libDir string) string {
	lines := strings.Split(strings.ReplaceAll(stderr, "\r\n", "\n"), "\n")
	start := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "error: ") || l == "error:" {
			start = i
			break
		}
	}
	if start < 0 {
		msg := strings.TrimSpace(stderr)
		if msg == "" {
			return "nix-instantiate failed without a message"
		}
		return msg
	}
	var out []string
	for i, l := range lines[start:] {
		if i == 0 {
			l = strings.TrimPrefix(strings.TrimPrefix(l, "error:"), " ")
		} else {
			l = dedent(l, 7)
		}
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "(use '--show-trace'") {
			break
		}
		if m := posRe.FindStringSubmatch(t); m != nil {
			if !strings.Contains(m[1], "«string»") {
				file := m[1]
				if libDir != "" && strings.HasPrefix(file, libDir+"/") {
					file = "lib/" + strings.TrimPrefix(file, libDir+"/")
				}
				out = append(out, fmt.Sprintf("at %s:%s:%s", file, m[2], m[3]))
			}
			break
		}
		out = append(out, l)
	}
	msg := strings.TrimSpace(strings.Join(out, "\n"))
	if m := abortedRe.FindStringSubmatch(msg); m != nil {
		msg = m[1]
	}
	return strings.TrimPrefix(msg, "nix8s: ")
}

func dedent(l string, n int) string {
	i := 0
	for i < n && i < len(l) && l[i] == ' ' {
		i++
	}
	return l[i:]
}
