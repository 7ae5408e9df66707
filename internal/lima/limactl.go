package lima

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// Limactl runs limactl. Data is read from its stdout only; its stderr (progress, logrus lines) goes to Stderr
// and its last line into errors.
type Limactl struct {
	// Program is the limactl binary; default "limactl" on PATH.
	Program string
	// Env is the environment (nil: this process's), where LIMA_HOME is set for a home of its own.
	Env []string
	// Stderr receives limactl's messages; nil discards them.
	Stderr io.Writer
}

// Instance is one entry of `limactl list --json` (pkg/limatype/lima_instance.go), the fields nix8s reads.
type Instance struct {
	Name   string `json:"name"`
	Status string `json:"status"` // Running, Stopped, Broken, ...
	Dir    string `json:"dir"`
	// SSHLocalPort is the forwarded SSH port: the current one while Running, else the last run's.
	SSHLocalPort int    `json:"sshLocalPort"`
	Message      string `json:"message"`
	Config       struct {
		Images []struct {
			Location string `json:"location"`
		} `json:"images"`
		SSH struct {
			LocalPort *int `json:"localPort"`
		} `json:"ssh"`
	} `json:"config"`
}

// Running says whether the VM runs.
func (i Instance) Running() bool { return i.Status == "Running" }

// Port is the instance's SSH port on 127.0.0.1: its fixed ssh.localPort, else the one Lima reports.
func (i Instance) Port() int {
	if p := i.Config.SSH.LocalPort; p != nil && *p > 0 {
		return *p
	}
	return i.SSHLocalPort
}

// NetworkInfo is one entry of `limactl network list --json`.
type NetworkInfo struct {
	Name    string `json:"name"`
	Mode    string `json:"mode"`
	Gateway string `json:"gateway"`
	Netmask string `json:"netmask"`
}

func (l *Limactl) run(ctx context.Context, args ...string) ([]byte, error) {
	prog := l.Program
	if prog == "" {
		prog = "limactl"
	}
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = l.Env
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if l.Stderr != nil {
		cmd.Stderr = io.MultiWriter(&stderr, l.Stderr)
	}
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return nil, fmt.Errorf("limactl %s: %s", strings.Join(args, " "), lastLine(stderr.String(), exit.Error()))
		}
		if errors.Is(err, exec.ErrNotFound) {
			return nil, fmt.Errorf("limactl not found: install Lima (https://lima-vm.io, `brew install lima` or the release tarball) or pass --limactl: %w", err)
		}
		return nil, fmt.Errorf("limactl %s: %w", strings.Join(args, " "), err)
	}
	return stdout.Bytes(), nil
}

func lastLine(s, fallback string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if l := strings.TrimSpace(lines[len(lines)-1]); l != "" {
		return l
	}
	return fallback
}

// decodeStream reads JSON objects one after the other: `--json` prints one a line when stdout is not a
// terminal (and indented ones when it is), nothing at all when there are none.
func decodeStream[T any](out []byte) ([]T, error) {
	var list []T
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var v T
		if err := dec.Decode(&v); err == io.EOF {
			return list, nil
		} else if err != nil {
			return nil, err
		}
		list = append(list, v)
	}
}

// List is every instance (`limactl list --json`), by name.
func (l *Limactl) List(ctx context.Context) (map[string]Instance, error) {
	out, err := l.run(ctx, "list", "--json")
	if err != nil {
		return nil, err
	}
	list, err := decodeStream[Instance](out)
	if err != nil {
		return nil, fmt.Errorf("reading `limactl list --json`: %w", err)
	}
	byName := map[string]Instance{}
	for _, i := range list {
		byName[i.Name] = i
	}
	return byName, nil
}

// Networks is every network of networks.yaml (`limactl network list --json`), by name.
func (l *Limactl) Networks(ctx context.Context) (map[string]NetworkInfo, error) {
	out, err := l.run(ctx, "network", "list", "--json")
	if err != nil {
		return nil, err
	}
	list, err := decodeStream[NetworkInfo](out)
	if err != nil {
		return nil, fmt.Errorf("reading `limactl network list --json`: %w", err)
	}
	byName := map[string]NetworkInfo{}
	for _, n := range list {
		byName[n.Name] = n
	}
	return byName, nil
}

// CreateNetwork makes a user-v2 network; gateway is `<first address>/<prefix>`.
func (l *Limactl) CreateNetwork(ctx context.Context, name, gateway string) error {
	_, err := l.run(ctx, "network", "create", name, "--mode", "user-v2", "--gateway", gateway)
	return err
}

// DeleteNetwork removes a network from networks.yaml.
func (l *Limactl) DeleteNetwork(ctx context.Context, name string) error {
	_, err := l.run(ctx, "network", "delete", "--force", name)
	return err
}

// Create makes instance name from the instance file, without starting it and without asking.
func (l *Limactl) Create(ctx context.Context, name, file string) error {
	_, err := l.run(ctx, "--tty=false", "create", "--name", name, file)
	return err
}

// Start boots an existing instance and waits until Lima's checks pass (SSH, /run/lima-boot-done).
func (l *Limactl) Start(ctx context.Context, name string) error {
	_, err := l.run(ctx, "--tty=false", "start", name)
	return err
}

// Stop shuts an instance down.
func (l *Limactl) Stop(ctx context.Context, name string) error {
	_, err := l.run(ctx, "stop", name)
	return err
}

// Delete removes an instance and its disk.
func (l *Limactl) Delete(ctx context.Context, name string) error {
	_, err := l.run(ctx, "delete", "--force", name)
	return err
}
