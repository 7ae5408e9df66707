// Package core is the one Go entry into the pure Nix core (lib/, contract in docs/core.md). The CLI and the
// daemon ask it to validate, plan, export and describe configs; it runs nix-instantiate on the core and
// returns typed results. Nothing here re-implements a rule of the core.
package core

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// DefaultTimeout bounds one evaluation when Options.Timeout is zero.
const DefaultTimeout = 2 * time.Minute

// Options configure an Evaluator. The zero value of each field picks the default.
type Options struct {
	// Lib is the core to evaluate, normally nix8s.Lib (embedded in the binary).
	Lib fs.FS
	// LibDir, when set, is a lib/ directory on disk used instead of Lib, for working on the core.
	LibDir string
	// CacheDir is where Lib is materialised; default $XDG_CACHE_HOME/nix8s.
	CacheDir string
	// NixInstantiate is the nix-instantiate binary; default the one on PATH.
	NixInstantiate string
	// Timeout bounds each evaluation; default DefaultTimeout.
	Timeout time.Duration
}

// Evaluator evaluates the core with nix-instantiate. It is safe for concurrent use.
type Evaluator struct {
	nix     string
	libDir  string
	id      string
	timeout time.Duration
}

// New finds nix-instantiate and puts the core on disk (once per content hash, shared between processes).
func New(opts Options) (*Evaluator, error) {
	nix := opts.NixInstantiate
	if nix == "" {
		p, err := exec.LookPath("nix-instantiate")
		if err != nil {
			return nil, &HintError{
				Err:  errors.New("nix-instantiate not found on PATH; nix8s evaluates its core with Nix"),
				Hint: "install Nix: apt-get install nix-bin (Debian/Ubuntu), or see https://nixos.org/download",
			}
		}
		nix = p
	}
	dir := opts.LibDir
	switch {
	case dir != "":
		abs, err := filepath.Abs(dir)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(filepath.Join(abs, "default.nix")); err != nil {
			return nil, &HintError{
				Err:  fmt.Errorf("core directory %s has no default.nix", dir),
				Hint: "--lib and NIX8S_LIB name the lib/ directory of a nix8s checkout",
			}
		}
		dir = abs
	case opts.Lib != nil:
		cache := opts.CacheDir
		if cache != "" {
			// Nix takes only absolute paths for the lib (nix8sd --state-dir st would give st/cache/lib-...).
			abs, err := filepath.Abs(cache)
			if err != nil {
				return nil, err
			}
			cache = abs
		}
		d, err := materialiseSomewhere(opts.Lib, cache)
		if err != nil {
			return nil, err
		}
		dir = d
	default:
		return nil, errors.New("core.New: neither Lib nor LibDir given")
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	sum, err := hashFS(os.DirFS(dir))
	if err != nil {
		return nil, fmt.Errorf("hashing the core in %s: %w", dir, err)
	}
	return &Evaluator{nix: nix, libDir: dir, id: sum[:20], timeout: timeout}, nil
}

// LibDir is the directory of the core being evaluated.
func (e *Evaluator) LibDir() string { return e.libDir }

// ID names the core being evaluated by its content: two evaluators with the same ID plan every config alike, so
// a plan stored by one serves the other.
func (e *Evaluator) ID() string { return e.id }

// Eval evaluates expr, a Nix expression in which `core` is the imported lib and `cfg` the config, and
// returns its value as JSON. cfg must marshal to JSON (json.RawMessage passes through as is).
func (e *Evaluator) Eval(ctx context.Context, cfg any, expr string) (json.RawMessage, error) {
	data, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encoding the config as JSON: %w", err)
	}
	f, err := os.CreateTemp("", "nix8s-config-*.json")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return e.run(ctx, []string{"--argstr", "config", f.Name()},
		"{ lib, config }: let core = import lib; cfg = builtins.fromJSON (builtins.readFile config); in "+expr)
}

// evalCore evaluates expr with only `core` in scope.
func (e *Evaluator) evalCore(ctx context.Context, expr string) (json.RawMessage, error) {
	return e.run(ctx, nil, "{ lib }: let core = import lib; in "+expr)
}

func (e *Evaluator) run(ctx context.Context, args []string, expr string) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	// The core is pure data and never touches the store, so it is evaluated against the dummy store: no Nix
	// daemon and no store permissions needed (a daemon running as an unprivileged user works).
	argv := append([]string{"--eval", "--strict", "--json", "--store", "dummy://", "--argstr", "lib", e.libDir}, args...)
	argv = append(argv, "--expr", expr)
	cmd := exec.CommandContext(ctx, e.nix, argv...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("evaluating the core timed out after %s", e.timeout)
		}
		return nil, fmt.Errorf("evaluating the core: %w", ctx.Err())
	}
	if err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			return nil, fmt.Errorf("running %s: %w", e.nix, err)
		}
		// stdout may hold a partial value: only stderr counts.
		return nil, &EvalError{Message: nixMessage(stderr.String(), e.libDir), Stderr: stderr.String()}
	}
	out := bytes.TrimSpace(stdout.Bytes())
	if !json.Valid(out) {
		return nil, fmt.Errorf("evaluating the core: nix-instantiate printed no JSON value: %q", truncate(string(out), 200))
	}
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Validate runs the core's validate: every error and warning of cfg.
func (e *Evaluator) Validate(ctx context.Context, cfg any) (Report, error) {
	out, err := e.Eval(ctx, cfg, "core.validate cfg")
	if err != nil {
		return Report{}, err
	}
	var r Report
	if err := json.Unmarshal(out, &r); err != nil {
		return Report{}, fmt.Errorf("decoding the core's validate result: %w", err)
	}
	return r.normalised(), nil
}

// Planned is the outcome of planning a valid config.
type Planned struct {
	// Plan is the typed view of the plan.
	Plan Plan
	// JSON is the core's plan exactly as the core produced it.
	JSON json.RawMessage
	// Warnings are validate's warnings for the config.
	Warnings []Problem
}

// Plan validates cfg and plans it in one evaluation (the core's check). When cfg has errors the result is
// an *InvalidError carrying the whole report.
func (e *Evaluator) Plan(ctx context.Context, cfg any) (*Planned, error) {
	// checkJSON: the config reaches the core as JSON, with no Nix-only values (the same result as check).
	return e.check(ctx, cfg, "core.checkJSON cfg")
}

// PlanStored is Plan of the inventory nix8sd stores, with the daemon's stricter rules (the core's
// checkStored): a secret value (secrets.token, secrets.agentToken), a warning in a flake's config, is an
// error. Still one evaluation, and the same plan as Plan's.
func (e *Evaluator) PlanStored(ctx context.Context, cfg any) (*Planned, error) {
	return e.check(ctx, cfg, "core.checkStored cfg")
}

// check evaluates expr, one of the core's `{ report; plan; }` entries.
func (e *Evaluator) check(ctx context.Context, cfg any, expr string) (*Planned, error) {
	out, err := e.Eval(ctx, cfg, expr)
	if err != nil {
		return nil, err
	}
	var res struct {
		Report Report          `json:"report"`
		Plan   json.RawMessage `json:"plan"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("decoding the core's plan: %w", err)
	}
	report := res.Report.normalised()
	if !report.OK() {
		return nil, &InvalidError{Report: report}
	}
	p := &Planned{JSON: res.Plan, Warnings: report.Warnings}
	if err := json.Unmarshal(res.Plan, &p.Plan); err != nil {
		return nil, fmt.Errorf("decoding the core's plan: %w", err)
	}
	return p, nil
}

// PXE is the core's PXE view of cfg for the clusters named (all of them when clusters is empty): the machines
// a PXE server boots, by MAC, and its settings, from one evaluation. When the config or network boot has
// errors the error is an *InvalidError carrying every problem (the view is returned too, without machines).
func (e *Evaluator) PXE(ctx context.Context, cfg any, clusters []string) (*PXEPlan, error) {
	var served any // null: every cluster
	if len(clusters) > 0 {
		served = clusters
	}
	arg, err := json.Marshal(served)
	if err != nil {
		return nil, err
	}
	out, err := e.Eval(ctx, cfg, "core.pxe cfg (builtins.fromJSON "+nixString(string(arg))+")")
	if err != nil {
		return nil, err
	}
	var p PXEPlan
	if err := json.Unmarshal(out, &p); err != nil {
		return nil, fmt.Errorf("decoding the core's PXE view: %w", err)
	}
	report := Report{Errors: p.Errors, Warnings: p.Warnings}.normalised()
	p.Errors, p.Warnings = report.Errors, report.Warnings
	if p.Machines == nil {
		p.Machines = []PXEMachine{}
	}
	if p.Unmatched == nil {
		p.Unmatched = []Problem{}
	}
	if !report.OK() {
		// The view comes along (its Unmatched, for a caller that counts them as errors too).
		return &p, &InvalidError{Report: report}
	}
	return &p, nil
}

// nixString quotes s as a Nix string literal.
func nixString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `\$`).Replace(s) + `"`
}

// Exportable is the core's exportable: cfg without secret values and Nix-only values, as JSON.
func (e *Evaluator) Exportable(ctx context.Context, cfg any) (json.RawMessage, error) {
	return e.Eval(ctx, cfg, "core.exportable cfg")
}

// Schema is the core's JSON Schema of the config (draft 2020-12), as JSON.
func (e *Evaluator) Schema(ctx context.Context) (json.RawMessage, error) {
	return e.evalCore(ctx, "core.schema")
}

// normalised makes empty lists encode as [] rather than null.
func (r Report) normalised() Report {
	if r.Errors == nil {
		r.Errors = []Problem{}
	}
	if r.Warnings == nil {
		r.Warnings = []Problem{}
	}
	return r
}

// String renders a problem as `<path>: <message>`, or the message alone for the config as a whole.
func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}
