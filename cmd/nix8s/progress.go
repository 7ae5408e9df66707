package main

import "github.com/nix8s/nix8s/internal/progress"

// progress renders an operation's events on stderr: live on a terminal (one line per member in flight),
// plain lines otherwise (a pipe, a file, the tests' buffer).
func (a *app) progress() progress.Reporter { return progress.For(a.stderr) }
