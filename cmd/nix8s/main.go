// Command nix8s is the front door to the nix8s core for people and tools that do not write Nix: it validates
// and plans YAML or JSON configs, converts them to Nix, and prints the config's JSON Schema. Every answer
// comes from the pure Nix core (lib/, embedded in the binary) evaluated with nix-instantiate.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/nix8s/nix8s"
	"github.com/nix8s/nix8s/internal/core"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// app is what every command shares: where to write and how to reach the core.
type app struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	lib            string        // --lib: a lib/ directory instead of the embedded core
	timeout        time.Duration // --timeout: bound on one evaluation
}

// command is one subcommand: its flags are bound to an options struct inside its constructor.
type command struct {
	name    string
	summary string
	usage   string // after "nix8s "
	example string
	flags   *flag.FlagSet
	args    int // exact number of positional arguments; -1: the command checks them itself
	run     func(ctx context.Context, args []string) error
}

func commands(a *app) []*command {
	return []*command{newValidateCommand(a), newPlanCommand(a), newImportCommand(a), newSchemaCommand(a),
		newInstallCommand(a), newGenSecretsCommand(a), newKubeconfigCommand(a), newSSHCommand(a), newStatusCommand(a), newRolloutCommand(a), newCozystackCommand(a),
		newLimaCommand(a)}
}

// exitError ends the program with code after the problem was already reported.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// usageError is a mistake in the command line: exit code 2 and a pointer to help.
type usageError struct {
	cmd string
	msg string
}

func (e usageError) Error() string { return e.msg }

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &app{stdout: stdout, stderr: stderr, getenv: getenv}
	cmds := commands(a)

	root := flag.NewFlagSet("nix8s", flag.ContinueOnError)
	root.SetOutput(io.Discard)
	a.evalFlags(root)
	if err := root.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			a.rootUsage(stdout, cmds)
			return 0
		}
		return a.report(usageError{msg: err.Error()})
	}
	rest := root.Args()
	if len(rest) == 0 {
		a.rootUsage(stderr, cmds)
		return 2
	}
	name := rest[0]
	if name == "help" {
		if len(rest) > 1 {
			if c := find(cmds, rest[1]); c != nil {
				c.writeUsage(stdout)
				return 0
			}
			return a.report(usageError{msg: fmt.Sprintf("unknown command %q", rest[1])})
		}
		a.rootUsage(stdout, cmds)
		return 0
	}
	c := find(cmds, name)
	if c == nil {
		return a.report(usageError{msg: fmt.Sprintf("unknown command %q", name)})
	}
	pos, err := parseInterspersed(c.flags, rest[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.writeUsage(stdout)
			return 0
		}
		return a.report(usageError{cmd: c.name, msg: err.Error()})
	}
	if c.args >= 0 && len(pos) != c.args {
		msg := fmt.Sprintf("%s takes %d argument%s, got %d", c.name, c.args, plural(c.args), len(pos))
		if c.args == 1 && len(pos) == 0 {
			msg = c.name + ": missing FILE"
		}
		return a.report(usageError{cmd: c.name, msg: msg})
	}
	return a.report(c.run(ctx, pos))
}

// report prints err in nix8s's one voice and returns the exit code.
func (a *app) report(err error) int {
	if err == nil {
		return 0
	}
	var exit exitError
	if errors.As(err, &exit) {
		return exit.code
	}
	fmt.Fprintf(a.stderr, "nix8s: error: %s\n", err)
	var u usageError
	if errors.As(err, &u) {
		if u.cmd != "" {
			fmt.Fprintf(a.stderr, "nix8s: hint: run 'nix8s help %s' for usage\n", u.cmd)
		} else {
			fmt.Fprintf(a.stderr, "nix8s: hint: run 'nix8s help' for usage\n")
		}
		return 2
	}
	var h *core.HintError
	if errors.As(err, &h) {
		fmt.Fprintf(a.stderr, "nix8s: hint: %s\n", h.Hint)
	}
	return 1
}

// evalFlags registers the flags of every command that evaluates the core; they are accepted before and
// after the command name.
func (a *app) evalFlags(fs *flag.FlagSet) {
	fs.StringVar(&a.lib, "lib", a.lib, "evaluate the core (lib/) in `DIR` instead of the embedded one (default $NIX8S_LIB)")
	fs.DurationVar(&a.timeout, "timeout", core.DefaultTimeout, "give up evaluating after `DURATION`")
}

// evaluator reaches the core: --lib, else $NIX8S_LIB, else the lib embedded in this binary.
func (a *app) evaluator() (*core.Evaluator, error) {
	opts := core.Options{Lib: nix8s.Lib, Timeout: a.timeout}
	if a.lib != "" {
		opts.LibDir = a.lib
	} else if dir := a.getenv("NIX8S_LIB"); dir != "" {
		opts.LibDir = dir
	}
	return core.New(opts)
}

// printProblems writes each problem as `<kind>: <path>: <message>`.
func printProblems(w io.Writer, kind string, ps []core.Problem) {
	for _, p := range ps {
		fmt.Fprintf(w, "%s: %s\n", kind, p)
	}
}

// parseInterspersed parses flags wherever they appear among the positional arguments (`plan FILE --json`),
// until a `--`.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		// flag.Parse swallows a `--` that directly follows flags: what comes after it is positional.
		if n := len(args) - len(fs.Args()); n > 0 && args[n-1] == "--" {
			return append(pos, fs.Args()...), nil
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func find(cmds []*command, name string) *command {
	for _, c := range cmds {
		if c.name == name {
			return c
		}
	}
	return nil
}

func (a *app) rootUsage(w io.Writer, cmds []*command) {
	fmt.Fprintf(w, "nix8s validates and plans nix8s cluster configs (YAML or JSON) with the nix8s core, and installs, rolls out and reaches their machines.\n\n")
	fmt.Fprintf(w, "Usage:\n  nix8s [--lib DIR] [--timeout DURATION] COMMAND [flags] [FILE]\n\nCommands:\n")
	sorted := append([]*command(nil), cmds...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	for _, c := range sorted {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nFILE is YAML, or JSON when its first character is { or [.\n")
	fmt.Fprintf(w, "Run 'nix8s help COMMAND' for a command's flags and an example.\n")
}

func (c *command) writeUsage(w io.Writer) {
	fmt.Fprintf(w, "%s\n\nUsage:\n  nix8s %s\n", c.summary, c.usage)
	var b strings.Builder
	c.flags.SetOutput(&b)
	c.flags.PrintDefaults()
	if b.Len() > 0 {
		fmt.Fprintf(w, "\nFlags:\n%s", b.String())
	}
	if c.example != "" {
		fmt.Fprintf(w, "\nExample:\n%s\n", c.example)
	}
}

// newFlagSet makes a command's flag set; parse errors are returned, not printed.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// count renders "1 error", "2 warnings".
func count(n int, what string) string {
	return fmt.Sprintf("%d %s%s", n, what, plural(n))
}
