package lima

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/provision"
	"github.com/nix8s/nix8s/internal/remote"
	"github.com/nix8s/nix8s/internal/status"
)

// Cluster is one cluster of the config as Lima VMs: what up, down and status act on.
type Cluster struct {
	// View is the core's Lima view of the cluster.
	View *View
	// Plan is the cluster's plan; its members' SSH endpoints get their port and key filled in (Resolve).
	Plan core.Cluster
	// Limactl runs limactl, with the same LIMA_HOME as Home.
	Limactl *Limactl
	// Home is Lima's directory, resolved (Home).
	Home string
	// MachineID is the host id in Lima's MACs (MachineID).
	MachineID string
	// Dir is where the instance files are written.
	Dir string
	// Progress receives progress lines (stderr); nil discards them.
	Progress io.Writer
}

func (c *Cluster) progress(format string, args ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, "nix8s: "+format+"\n", args...)
	}
}

// order is the members in join-wave order.
func (c *Cluster) order() []Member {
	var ms []Member
	for _, w := range c.View.Waves {
		for _, n := range w {
			if m, ok := c.View.Member(n); ok {
				ms = append(ms, m)
			}
		}
	}
	return ms
}

// ours refuses instances named like a member that nix8s did not create for it.
func (c *Cluster) ours(instances map[string]Instance) error {
	var errs []error
	for _, m := range c.View.Members {
		if in, ok := instances[m.Instance]; ok && in.Message != m.Message() {
			errs = append(errs, fmt.Errorf("the Lima instance %s exists but is not nix8s's %s (its message is %q, not %q); delete or rename it (limactl delete %s)",
				m.Instance, m.HostName, in.Message, m.Message(), m.Instance))
		}
	}
	return errors.Join(errs...)
}

// Resolve completes the plan's SSH endpoints of the Lima members: the port the instance has (its fixed
// ssh.localPort, else the one Lima reports), a free one for a member without an instance when pick is set, and
// Lima's own key ($LIMA_HOME/_config/user, which the guest authorizes for root) when the config names none.
// A member without a port after that is an error.
func (c *Cluster) Resolve(instances map[string]Instance, pick bool) error {
	key := filepath.Join(c.Home, "_config", "user")
	var errs []error
	for _, m := range c.View.Members {
		pm := c.Plan.Members[m.Name]
		switch in, ok := instances[m.Instance]; {
		case ok && in.Port() > 0:
			pm.SSH.Port = in.Port()
		case m.SSHPort != nil:
			pm.SSH.Port = *m.SSHPort
		case pick:
			p, err := freePort()
			if err != nil {
				return err
			}
			pm.SSH.Port = p
		default:
			errs = append(errs, fmt.Errorf("%s has no Lima instance %s, so no SSH port yet; run nix8s lima up %s", m.HostName, m.Instance, c.View.Cluster))
		}
		pm.SSH.Host = "127.0.0.1"
		if pm.SSH.KeyFile == nil {
			pm.SSH.KeyFile = &key
		}
		c.Plan.Members[m.Name] = pm
	}
	return errors.Join(errs...)
}

// freePort is a TCP port of 127.0.0.1 nothing listens on now; the instance keeps it (ssh.localPort).
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// network creates the cluster's network, or checks the one there is.
func (c *Cluster) network(ctx context.Context) error {
	nets, err := c.Limactl.Networks(ctx)
	if err != nil {
		return err
	}
	n := c.View.Network
	have, ok := nets[n.Name]
	if !ok {
		c.progress("%s: creating the Lima network %s (%s, gateway and DNS %s)", c.View.Cluster, n.Name, n.Subnet, n.Gateway)
		return c.Limactl.CreateNetwork(ctx, n.Name, n.GatewayArg)
	}
	_, want, _ := net.ParseCIDR(n.Subnet)
	ip := net.ParseIP(have.Gateway)
	mask := net.IPMask(net.ParseIP(have.Netmask).To4())
	if have.Mode != "user-v2" || ip == nil || len(mask) != 4 || !ip.Mask(mask).Equal(want.IP) || want.Mask.String() != mask.String() {
		return fmt.Errorf("the Lima network %s is %s %s/%s, not user-v2 %s as provisioning.lima says; delete it (limactl network delete --force %s) or change the config",
			n.Name, have.Mode, have.Gateway, have.Netmask, n.Subnet, n.Name)
	}
	return nil
}

// reserve makes each member's IP the DHCP reservation of its eth0 MAC in the network's leases file, which
// the network's daemon reads when it starts (docs/lima.md: why, and what it relies on).
func (c *Cluster) reserve() error {
	want := map[string]string{}
	for _, m := range c.View.Members {
		want[m.IP] = MAC(c.MachineID, filepath.Join(c.Home, m.Instance))
	}
	file := LeasesFile(c.Home, c.View.Network.Name)
	if DaemonRunning(c.Home, c.View.Network.Name) {
		// Reservations only take when the daemon starts: refuse rather than start a member on a wrong address.
		if changed, err := reservedAlready(file, want); err != nil || changed {
			if err != nil {
				return err
			}
			return fmt.Errorf("the members' addresses are not all reserved on the Lima network %s, and its daemon runs, which reads reservations only when it starts; stop the cluster first (nix8s lima down %s), then up again",
				c.View.Network.Name, c.View.Cluster)
		}
		return nil
	}
	changed, err := Reserve(file, want)
	if changed {
		c.progress("%s: reserved the members' addresses on %s (%s)", c.View.Cluster, c.View.Network.Name, file)
	}
	return err
}

// reservedAlready says whether the leases file lacks a reservation of want.
func reservedAlready(file string, want map[string]string) (bool, error) {
	tmp, err := os.CreateTemp("", "nix8s-leases-*.json")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name())
	b, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	tmp.Write(b)
	tmp.Close()
	return Reserve(tmp.Name(), want)
}

// UpOptions say how up builds images and installs.
type UpOptions struct {
	// Image returns the qcow2 image of the member's own configuration (built from the flake).
	Image func(ctx context.Context, m Member) (string, error)
	// Install is the install walk's options: tokens, readiness, the Deliverer that pins the host key, the
	// ssh Runner. Up sets Installer (creating and starting the VMs) and wraps Runner.
	Install provision.Options
}

// Up brings the cluster up: the network and reservations, then the plan's join waves through
// provision.Install, where installing a member means creating and starting its VM. Running members are left
// alone, stopped ones started, missing ones created.
func (c *Cluster) Up(ctx context.Context, o UpOptions) (*provision.Report, error) {
	if err := c.network(ctx); err != nil {
		return nil, err
	}
	instances, err := c.Limactl.List(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.ours(instances); err != nil {
		return nil, err
	}
	if err := c.Resolve(instances, true); err != nil {
		return nil, err
	}
	if err := c.reserve(); err != nil {
		return nil, err
	}
	missing := map[string]bool{}
	for _, m := range c.order() {
		in, ok := instances[m.Instance]
		if !ok {
			missing[m.HostName] = true
			continue
		}
		if img, err := o.Image(ctx, m); err == nil && len(in.Config.Images) > 0 && in.Config.Images[0].Location != img {
			c.progress("warning: %s: its configuration's image changed (%s, the VM has %s); `nix8s rebuild` switches the VM to it, or recreate the VM: nix8s lima down --delete %s, then up",
				m.HostName, img, in.Config.Images[0].Location, c.View.Cluster)
		} else if err != nil {
			return nil, err
		}
		if !in.Running() {
			c.progress("%s: starting the stopped VM %s", m.HostName, m.Instance)
			if err := c.Limactl.Start(ctx, m.Instance); err != nil {
				return nil, fmt.Errorf("%s: %w", m.HostName, err)
			}
		}
	}
	opts := o.Install
	opts.Installer = &installer{c: c, image: o.Image, exists: instances}
	opts.Runner = probe{Runner: o.Install.Runner, missing: missing}
	return provision.Install(ctx, c.Plan, opts)
}

// probe answers the install's "does it run NixOS as itself" for members without a VM (none, so it installs)
// and asks the others over ssh.
type probe struct {
	remote.Runner
	missing map[string]bool
}

func (p probe) Run(ctx context.Context, host remote.Host, cmd string) ([]byte, error) {
	if p.missing[host.Name] {
		return []byte("(no-vm) other\n"), nil
	}
	return p.Runner.Run(ctx, host, cmd)
}

// installer is the install step for a Lima member: write its instance file with the host key the install
// generated, create the VM and start it. Lima's start returns once SSH answers and the guest wrote
// /run/lima-boot-done; the install then waits for ssh with that key and delivers the token files.
type installer struct {
	c      *Cluster
	image  func(ctx context.Context, m Member) (string, error)
	exists map[string]Instance
}

func (i *installer) Install(ctx context.Context, s provision.Step) error {
	m, ok := i.c.View.Member(s.Member)
	if !ok {
		return fmt.Errorf("%s is not in the Lima view", s.HostName)
	}
	if _, ok := i.exists[m.Instance]; ok {
		return fmt.Errorf("the VM %s runs but does not answer over ssh as %s; recreate it: nix8s lima down --delete %s, then up", m.Instance, s.HostName, i.c.View.Cluster)
	}
	img, err := i.image(ctx, m)
	if err != nil {
		return err
	}
	cfg := m
	cfg.Config = cloneWithPort(m.Config, i.c.Plan.Members[m.Name].SSH.Port)
	data, err := Render(cfg, img, slices.DeleteFunc(slices.Clone(s.Files), func(f provision.File) bool {
		return f.Path != provision.HostKeyPath && f.Path != provision.HostKeyPath+".pub"
	}))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(i.c.Dir, 0o700); err != nil {
		return err
	}
	file := filepath.Join(i.c.Dir, m.Instance+".yaml")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		return err
	}
	i.c.progress("%s: creating the VM %s from %s", s.HostName, m.Instance, file)
	if err := i.c.Limactl.Create(ctx, m.Instance, file); err != nil {
		return err
	}
	i.c.progress("%s: starting the VM %s (SSH on 127.0.0.1:%d)", s.HostName, m.Instance, i.c.Plan.Members[m.Name].SSH.Port)
	if err := i.c.Limactl.Start(ctx, m.Instance); err != nil {
		// The guest runs no DHCP client: Lima forwards SSH only to the address reserved for eth0's MAC.
		return fmt.Errorf("%w (if Lima could not resolve the IP for SSH forwarding, the reservation of %s for %s in %s did not take: docs/lima.md, \"Network\")",
			err, m.IP, MAC(i.c.MachineID, filepath.Join(i.c.Home, m.Instance)), LeasesFile(i.c.Home, i.c.View.Network.Name))
	}
	return nil
}

func cloneWithPort(cfg map[string]any, port int) map[string]any {
	out := map[string]any{}
	for k, v := range cfg {
		out[k] = v
	}
	ssh := map[string]any{}
	if s, ok := cfg["ssh"].(map[string]any); ok {
		for k, v := range s {
			ssh[k] = v
		}
	}
	ssh["localPort"] = port
	out["ssh"] = ssh
	return out
}

// Down stops the members' VMs, agents first and the first server last; with del it deletes them and the
// cluster's network too.
func (c *Cluster) Down(ctx context.Context, del bool) error {
	instances, err := c.Limactl.List(ctx)
	if err != nil {
		return err
	}
	if err := c.ours(instances); err != nil {
		return err
	}
	order := c.order()
	slices.Reverse(order)
	for _, m := range order {
		in, ok := instances[m.Instance]
		if !ok {
			continue
		}
		if in.Running() {
			c.progress("%s: stopping the VM %s", m.HostName, m.Instance)
			if err := c.Limactl.Stop(ctx, m.Instance); err != nil {
				return fmt.Errorf("%s: %w", m.HostName, err)
			}
		}
		if del {
			c.progress("%s: deleting the VM %s", m.HostName, m.Instance)
			if err := c.Limactl.Delete(ctx, m.Instance); err != nil {
				return fmt.Errorf("%s: %w", m.HostName, err)
			}
		}
	}
	if del {
		nets, err := c.Limactl.Networks(ctx)
		if err != nil {
			return err
		}
		if _, ok := nets[c.View.Network.Name]; ok {
			c.progress("%s: deleting the Lima network %s", c.View.Cluster, c.View.Network.Name)
			return c.Limactl.DeleteNetwork(ctx, c.View.Network.Name)
		}
	}
	return nil
}

// MemberStatus is one member's VM and node.
type MemberStatus struct {
	Name     string `json:"name"`
	HostName string `json:"hostName"`
	Role     string `json:"role"`
	Instance string `json:"instance"`
	// VM is Lima's status of the instance (Running, Stopped, ...), "Absent" without one.
	VM string `json:"vm"`
	IP string `json:"ip"`
	// SSHPort is the forwarded SSH port, 0 without an instance.
	SSHPort int `json:"sshPort"`
	// Node is what the cluster says of the member (status.Get), for running VMs.
	Node *status.Member `json:"node,omitempty"`
}

// Status is each member's VM state, address and SSH port, and for running VMs the node's state from
// status.Get over the resolved endpoints.
func (c *Cluster) Status(ctx context.Context, r remote.Runner) ([]MemberStatus, string, error) {
	instances, err := c.Limactl.List(ctx)
	if err != nil {
		return nil, "", err
	}
	if err := c.ours(instances); err != nil {
		return nil, "", err
	}
	_ = c.Resolve(instances, false) // members without a VM have no port; they are not asked
	running := core.Cluster(c.Plan)
	running.Members = map[string]core.Member{}
	running.Servers, running.Agents = nil, nil
	for _, m := range c.View.Members {
		if in, ok := instances[m.Instance]; ok && in.Running() {
			running.Members[m.Name] = c.Plan.Members[m.Name]
			if m.Role == "server" {
				running.Servers = append(running.Servers, m.Name)
			} else {
				running.Agents = append(running.Agents, m.Name)
			}
		}
	}
	nodes := map[string]*status.Member{}
	note := "no VM runs"
	if len(running.Members) > 0 {
		rep := status.Get(ctx, r, running, nil)
		for i := range rep.Members {
			nodes[rep.Members[i].Name] = &rep.Members[i]
		}
		note = rep.Nodes
	}
	var out []MemberStatus
	for _, m := range c.order() {
		s := MemberStatus{Name: m.Name, HostName: m.HostName, Role: m.Role, Instance: m.Instance, VM: "Absent", IP: m.IP, Node: nodes[m.Name]}
		if in, ok := instances[m.Instance]; ok {
			s.VM = in.Status
			s.SSHPort = in.Port()
		}
		out = append(out, s)
	}
	return out, note, nil
}
