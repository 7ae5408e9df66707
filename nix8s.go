// Package nix8s carries the pure Nix core (lib/) inside every Go binary, so that `nix8s` and `nix8sd`
// evaluate exactly the core they were built with and never re-implement it.
package nix8s

import (
	"embed"
	"io/fs"
)

//go:embed lib
var embedded embed.FS

// Lib is the pure core: the contents of lib/ (default.nix at its root). internal/core materialises it on disk
// for nix-instantiate; a --lib DIR or NIX8S_LIB override replaces it during development.
var Lib fs.FS = mustSub(embedded, "lib")

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err) // unreachable: dir is embedded above
	}
	return sub
}
