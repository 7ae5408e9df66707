package main

import (
	"fmt"

	"github.com/nix8s/nix8s/internal/core"
)

// loadConfig is how a command that takes the config as its one argument (validate, plan) reads it: at most one
// argument, the file named by it, --config or $NIX8S_CONFIG (configFile), its data, and the core to ask.
func (a *app) loadConfig(cmd, flagValue string, args []string) (file string, cfg any, ev *core.Evaluator, err error) {
	if len(args) > 1 {
		return "", nil, nil, usageError{cmd: cmd, msg: fmt.Sprintf("%s takes one config, got %d arguments", cmd, len(args))}
	}
	if file, err = a.configFile(cmd, flagValue, args); err != nil {
		return "", nil, nil, err
	}
	if cfg, err = core.LoadFile(file); err != nil {
		return "", nil, nil, err
	}
	if ev, err = a.evaluator(); err != nil {
		return "", nil, nil, err
	}
	return file, cfg, ev, nil
}
