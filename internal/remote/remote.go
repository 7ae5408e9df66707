// Package remote runs commands on cluster members. A small Runner interface is the seam: the real one is the
// system ssh (so users' ~/.ssh/config, agent and ProxyJump keep working), tests and benchmarks fake it.
package remote

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// Host is one machine to reach: its address and ssh settings (for a member: HostOf, the plan's endpoint).
type Host struct {
	// Name names the host in messages, normally its host name (`prod-server1`).
	Name string
	// Addr is the IP address or DNS name to connect to.
	Addr string
	// User is the login user; empty means root.
	User string
	// Port is the ssh port; 0 means 22.
	Port int
	// KeyFile is the private key to offer (ssh -i); empty leaves it to ssh's config and agent.
	KeyFile string
}

// Target is `user@addr`, what ssh and nixos-anywhere take.
func (h Host) Target() string { return h.user() + "@" + h.Addr }

func (h Host) user() string {
	if h.User == "" {
		return "root"
	}
	return h.User
}

func (h Host) port() int {
	if h.Port == 0 {
		return 22
	}
	return h.Port
}

func (h Host) String() string {
	if h.Name != "" {
		return h.Name
	}
	return h.Addr
}

// Runner runs commands on hosts.
type Runner interface {
	// Run runs the shell command line cmd on host and returns what it printed on stdout. A command that
	// exits non-zero is an *ExitError; a command that outlives ctx is an error too.
	Run(ctx context.Context, host Host, cmd string) ([]byte, error)
	// Copy copies the local file src to the path dst on host.
	Copy(ctx context.Context, host Host, src, dst string) error
}

// ExitError is a remote command that ran and exited non-zero.
type ExitError struct {
	Host   string
	Cmd    string
	Code   int
	Stderr string
}

func (e *ExitError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		return fmt.Sprintf("%s: %q exited with code %d", e.Host, e.Cmd, e.Code)
	}
	return fmt.Sprintf("%s: %q exited with code %d: %s", e.Host, e.Cmd, e.Code, lastLine(msg))
}

// UnreachableError is a host ssh could not connect or log in to (ssh's own exit code 255).
type UnreachableError struct {
	Host   string
	Addr   string
	Detail string // ssh's message
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("%s (%s) is unreachable over ssh: %s", e.Host, e.Addr, e.Detail)
}

// Quote quotes s for a POSIX shell.
func Quote(s string) string {
	// '#' starts a comment only at the beginning of a word.
	if s != "" && s[0] != '#' && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%#", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// QuoteArgs quotes each argument and joins them with spaces: one shell command line.
func QuoteArgs(args ...string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = Quote(a)
	}
	return strings.Join(q, " ")
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func itoa(n int) string { return strconv.Itoa(n) }
