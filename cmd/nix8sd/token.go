package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/nix8s/nix8s/internal/store"
)

func tokenCommand(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 || args[0] != "create" {
		return usageError{"token: use 'nix8sd token create --scope admin|read'"}
	}
	var c common
	var scope, name string
	var printOnly bool
	fs := flag.NewFlagSet("token create", flag.ContinueOnError)
	c.bind(fs, getenv)
	fs.StringVar(&scope, "scope", "", "admin (read and change) or read (GET only); required")
	fs.StringVar(&name, "name", "", "a `NAME` to recognise the token by")
	fs.BoolVar(&printOnly, "print-only", false, "print a fresh token without storing it (for --admin-token-file)")
	if err := parseFlags(fs, args[1:], stderr); err != nil {
		return err
	}
	if printOnly {
		tok, err := store.NewToken()
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, tok)
		return nil
	}
	if scope != store.ScopeAdmin && scope != store.ScopeRead {
		return usageError{"token create: --scope must be admin or read"}
	}
	log, err := c.logger(stderr)
	if err != nil {
		return usageError{err.Error()}
	}
	slog.SetDefault(log)
	st, stop, err := c.openStore(ctx, log)
	if err != nil {
		return err
	}
	defer stop()
	if err := st.Migrate(ctx); err != nil {
		return err
	}
	tok, err := st.CreateToken(ctx, name, scope)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	fmt.Fprintln(stderr, "nix8sd: the token is shown only this once; only its hash is stored")
	return nil
}
