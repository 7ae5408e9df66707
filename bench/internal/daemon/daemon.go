// Package daemon is what the benchmarks that run the real nix8sd share: building it and finding free loopback
// ports for its listeners.
package daemon

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
)

// Build compiles ./cmd/nix8sd (run from the repository's root) into dir and returns the binary's path. goCmd
// is the go program ("go" when empty).
func Build(goCmd, dir string) (string, error) {
	if goCmd == "" {
		goCmd = "go"
	}
	bin := filepath.Join(dir, "nix8sd")
	cmd := exec.Command(goCmd, "build", "-o", bin, "./cmd/nix8sd")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building nix8sd: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return bin, nil
}

// FreePort is a free port on 127.0.0.1 for network "tcp" or "udp".
func FreePort(network string) (int, error) {
	if network == "udp" {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port, nil
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
