package main

import (
	"fmt"
	"sort"
	"strings"
)

// reference renders the command reference (docs/cli.md) from the command table itself: every command's summary,
// usage, flags and example, as `nix8s help COMMAND` prints them. A test keeps the committed file in step.
func reference(a *app, cmds []*command) string {
	var b strings.Builder
	b.WriteString("# `nix8s` command reference\n\n")
	b.WriteString("Generated from the command table (`cmd/nix8s`); `go test ./cmd/nix8s -run TestCLIReference -update`\n")
	b.WriteString("rewrites it, and the test fails when it is out of date. The same text is `nix8s help` and\n")
	b.WriteString("`nix8s help COMMAND`.\n\n```\n")
	a.rootUsage(&b, cmds)
	b.WriteString("```\n")
	sorted := append([]*command(nil), cmds...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	for _, c := range sorted {
		fmt.Fprintf(&b, "\n## `nix8s %s`\n\n```\n", c.name)
		c.writeUsage(&b)
		b.WriteString("```\n")
	}
	return b.String()
}
