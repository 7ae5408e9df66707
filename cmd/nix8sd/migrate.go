package main

import (
	"context"
	"flag"
	"fmt"
	"io"
)

func migrateCommand(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	var c common
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	c.bind(fs, getenv)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	dir := "up"
	if fs.NArg() > 1 {
		return usageError{"migrate takes one of up, down, down-all, status"}
	}
	if fs.NArg() == 1 {
		dir = fs.Arg(0)
	}
	switch dir {
	case "up", "down", "down-all", "status":
	default:
		return usageError{fmt.Sprintf("migrate %q: use up, down, down-all or status", dir)}
	}
	st, stop, err := c.openCommand(ctx, stderr, false)
	if err != nil {
		return err
	}
	defer stop()
	switch dir {
	case "up":
		return st.Migrate(ctx)
	case "down":
		return st.MigrateDown(ctx, false)
	case "down-all":
		return st.MigrateDown(ctx, true)
	case "status":
		pending, err := st.Pending(ctx)
		if err != nil {
			return err
		}
		if pending {
			fmt.Fprintln(stdout, "pending migrations; run nix8sd migrate")
		} else {
			fmt.Fprintln(stdout, "up to date")
		}
		return nil
	}
	return nil
}
