//go:build !linux

package toolrun

import (
	"errors"
	"syscall"
)

// Elsewhere the program runs in its own group without a leader: ending the context ends the group, but a
// daemon killed with SIGKILL leaves it running.
func leaderBinary() (string, error) { return "", errors.New("no leader on this system") }

func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

func lead(string, []string) int { return 2 }
