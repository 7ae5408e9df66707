package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nix8s/nix8s/internal/store"
)

func tokenCommand(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		return usageError{"token: use 'nix8sd token create --scope admin|read', 'token list' or 'token revoke ID'"}
	}
	switch args[0] {
	case "create":
	case "list", "revoke":
		return tokenAdmin(ctx, args[0], args[1:], stdout, stderr, getenv)
	default:
		return usageError{fmt.Sprintf("token %s: use create, list or revoke", args[0])}
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
	st, stop, err := c.openCommand(ctx, stderr, true)
	if err != nil {
		return err
	}
	defer stop()
	tok, err := st.CreateToken(ctx, name, scope)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	fmt.Fprintln(stderr, "nix8sd: the token is shown only this once; only its hash is stored")
	return nil
}

// tokenAdmin lists or revokes tokens.
func tokenAdmin(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	var c common
	fs := flag.NewFlagSet("token "+cmd, flag.ContinueOnError)
	c.bind(fs, getenv)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	var id int64
	if cmd == "revoke" {
		if fs.NArg() != 1 {
			return usageError{"token revoke takes the token's ID (see token list)"}
		}
		n, err := strconv.ParseInt(fs.Arg(0), 10, 64)
		if err != nil {
			return usageError{fmt.Sprintf("token revoke %q: the ID is a number (see token list)", fs.Arg(0))}
		}
		id = n
	} else if fs.NArg() != 0 {
		return usageError{"token list takes no arguments"}
	}
	st, stop, err := c.openCommand(ctx, stderr, true)
	if err != nil {
		return err
	}
	defer stop()
	if cmd == "revoke" {
		if err := st.RevokeToken(ctx, id); err != nil {
			return err
		}
		revokedTokenFileHint(ctx, st, id, stderr)
		return nil
	}
	list, err := st.Tokens(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSCOPE\tCREATED\tLAST USED\tREVOKED")
	for _, t := range list {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Scope, t.CreatedAt.UTC().Format(time.RFC3339), when(t.LastUsedAt), when(t.RevokedAt))
	}
	return tw.Flush()
}

func when(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// revokedTokenFileHint warns when the revoked token came from a daemon's --admin-token-file or --read-token-file:
// it stays revoked, and a daemon started with that file again refuses to start until the file holds a new token.
func revokedTokenFileHint(ctx context.Context, st *store.Store, id int64, stderr io.Writer) {
	list, err := st.Tokens(ctx)
	if err != nil {
		return
	}
	for _, t := range list {
		if t.ID != id || !strings.HasSuffix(t.Name, "-token-file") {
			continue
		}
		fmt.Fprintf(stderr, "nix8sd: hint: token %d came from --%s; it stays revoked, and nix8sd serve refuses to start with that file until it holds a new token ('nix8sd token create --print-only > FILE')\n", id, t.Name)
	}
}
