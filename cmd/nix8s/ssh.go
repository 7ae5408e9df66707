package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/nix8s/nix8s/internal/remote"
)

type sshOptions struct {
	cluster clusterOptions
}

func newSSHCommand(a *app) *command {
	var o sshOptions
	fs := newFlagSet("ssh")
	a.clusterFlags(fs, &o.cluster)
	return &command{
		name:    "ssh",
		summary: "Log in to a member with the system ssh (your ssh config and agent apply; host keys are checked).",
		usage:   "ssh --config FILE CLUSTER MEMBER [-- COMMAND...]",
		example: "  $ nix8s ssh --config cluster.yaml prod server1\n  $ nix8s ssh --config cluster.yaml prod server1 -- systemctl status k3s",
		flags:   fs,
		args:    -1,
		run:     func(ctx context.Context, args []string) error { return a.ssh(ctx, o, args) },
	}
}

func (a *app) ssh(ctx context.Context, o sshOptions, args []string) error {
	if len(args) < 2 {
		return usageError{cmd: "ssh", msg: "ssh: want CLUSTER MEMBER"}
	}
	c, err := a.loadCluster(ctx, o.cluster, args[0])
	if err != nil {
		return err
	}
	if err := c.CheckMembers(args[1:2]); err != nil {
		return err
	}
	mem := c.Members[args[1]]
	s := o.cluster.ssh()
	host := remote.HostOf(mem)
	// The remote command is one shell line, as ssh itself would join it; quoting keeps arguments intact.
	argv := s.Command(host, false, remote.QuoteArgs(args[2:]...))
	if len(args) == 2 {
		argv = s.Command(host, false, "")
	}
	cmd := exec.CommandContext(ctx, s.Binary(), argv...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, a.stdout, a.stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if exit.ExitCode() == 255 {
			return fmt.Errorf("ssh to %s (%s) failed (see above)", mem.HostName, host.Target())
		}
		return exitError{code: exit.ExitCode()}
	}
	if err != nil {
		return fmt.Errorf("running %s: %w", strings.Join(append([]string{s.Binary()}, argv...), " "), err)
	}
	return nil
}
