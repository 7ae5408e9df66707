// Package migrations holds the daemon's database schema as goose SQL migrations, embedded into the binary.
package migrations

import "embed"

// FS holds the *.sql migrations, applied in the order of their numeric prefix.
//
//go:embed *.sql
var FS embed.FS
