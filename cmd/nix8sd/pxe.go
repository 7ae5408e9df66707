package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/inventory"
	"github.com/nix8s/nix8s/internal/jobs"
	"github.com/nix8s/nix8s/internal/pxe"
	"github.com/nix8s/nix8s/internal/pxe/storeboot"
	"github.com/nix8s/nix8s/internal/store"
)

// pxeOptions are serve's network boot flags. Anything not given comes from the inventory's
// provisioning.pxe.server, as the core's PXE view resolves it.
type pxeOptions struct {
	enable     bool
	clusters   listFlag
	iface      string
	ip         string
	mode       string
	ipxeDir    string
	bootFiles  listFlag
	images     string
	discovery  bool
	noArm      bool
	baseURL    string
	dhcpPort   int
	tftpPort   int
	waitEvery  time.Duration
	dhcpLease  time.Duration
	nix        string
	nodeWatch  time.Duration
	raDisabled bool
	// maxDiscovered is --max-discovered: storeboot.Adapter.MaxDiscovered, 0 for no cap.
	maxDiscovered int
	// maxDiscoveredPerSegment is --max-discovered-per-segment: storeboot.Adapter.MaxDiscoveredPerSegment.
	maxDiscoveredPerSegment int
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func (p *pxeOptions) bind(fs *flag.FlagSet, getenv func(string) string) {
	fs.BoolVar(&p.enable, "pxe", false, "serve network boot (DHCP, TFTP, iPXE, installer images); implied by --pxe-cluster and --pxe-interface")
	fs.Var(&p.clusters, "pxe-cluster", "network-boot the members of cluster `NAME` only (repeatable; default every cluster)")
	fs.StringVar(&p.iface, "pxe-interface", getenv("NIX8S_PXE_INTERFACE"), "serve DHCP on `IFACE` (default provisioning.pxe.server.interface) ($NIX8S_PXE_INTERFACE)")
	fs.StringVar(&p.ip, "pxe-ip", getenv("NIX8S_PXE_IP"), "this server's `ADDRESS` on that interface (default provisioning.pxe.server.ip)")
	fs.StringVar(&p.mode, "pxe-mode", getenv("NIX8S_PXE_MODE"), "DHCP `MODE`: proxy (beside the site's DHCP server) or full (default provisioning.pxe.server.dhcp.mode, else proxy)")
	fs.StringVar(&p.ipxeDir, "ipxe-dir", envOr(getenv, "NIX8S_IPXE_DIR", "/usr/lib/ipxe"), "`DIR` holding the iPXE binaries: undionly.kpxe, snponly.efi/snp.efi/ipxe.efi, optionally snp-arm64.efi/ipxe-arm64.efi ($NIX8S_IPXE_DIR)")
	fs.Var(&p.bootFiles, "pxe-boot-file", "give clients of architecture ARCH (DHCP option 93: 0 BIOS, 6/15 x86 UEFI, 7/9 x86-64 UEFI, 11 ARM64 UEFI, 16/19 their HTTP boot) the file `ARCH=FILE` of --ipxe-dir; an empty FILE offers them nothing (repeatable)")
	fs.StringVar(&p.images, "pxe-images", getenv("NIX8S_PXE_IMAGES"), "serve prebuilt images from `DIR`/<cluster>-<member>/ and DIR/discovery/ (bzImage, initrd, cmdline) instead of building them from the flake")
	fs.BoolVar(&p.discovery, "discovery", true, "boot unknown machines into the discovery image (false: they fall through to their next boot device)")
	fs.BoolVar(&p.noArm, "no-auto-install", false, "do not install assigned machines when they boot; only POST /v1/machines/{mac}/reinstall arms an install")
	fs.StringVar(&p.baseURL, "pxe-url", getenv("NIX8S_PXE_URL"), "`URL` machines reach this daemon's API on (default http://<pxe-ip>:<port of --machine-listen, else of --listen>)")
	fs.IntVar(&p.dhcpPort, "dhcp-port", 67, "DHCP server `PORT` (proxy mode also uses PORT+3944)")
	fs.IntVar(&p.tftpPort, "tftp-port", 69, "TFTP `PORT`")
	fs.DurationVar(&p.waitEvery, "pxe-wait", 15*time.Second, "how often a machine waiting for its turn asks again")
	fs.DurationVar(&p.dhcpLease, "dhcp-lease", time.Hour, "full-mode lease time")
	fs.StringVar(&p.nix, "nix", envOr(getenv, "NIX8S_NIX", "nix"), "the nix `PROGRAM` that builds installer images ($NIX8S_NIX)")
	fs.DurationVar(&p.nodeWatch, "node-watch-interval", 10*time.Second, "how often the clusters' API servers are asked which nodes registered and are Ready")
	fs.BoolVar(&p.raDisabled, "no-router-advertisements", false, "do not answer IPv6 router solicitations (iPXE waits ~16 s for one on IPv4-only networks)")
	fs.IntVar(&p.maxDiscovered, "max-discovered", storeboot.DefaultMaxDiscovered, "refuse discover reports of new machines while `N` machines are in state discovered (0: no cap)")
	fs.IntVar(&p.maxDiscoveredPerSegment, "max-discovered-per-segment", 0, "of those, at most `N` from one network segment (the DHCP relay's address or the interface's subnet; default a quarter of --max-discovered; -1: no cap per segment)")
}

func (p *pxeOptions) enabled() bool { return p.enable || len(p.clusters) > 0 || p.iface != "" }

// overlay is cfg with the flags' settings in provisioning.pxe.server (cfg is not changed), so the core checks
// the settings that will be served: the members' addresses against the subnet, the server address, the mode.
func (p *pxeOptions) overlay(cfg map[string]any) map[string]any {
	if p.ip == "" && p.iface == "" && p.mode == "" {
		return cfg
	}
	child := func(m map[string]any, k string) map[string]any {
		c := map[string]any{}
		if old, ok := m[k].(map[string]any); ok {
			for k, v := range old {
				c[k] = v
			}
		}
		m[k] = c
		return c
	}
	out := map[string]any{}
	for k, v := range cfg {
		out[k] = v
	}
	server := child(child(child(out, "provisioning"), "pxe"), "server")
	if p.ip != "" {
		server["ip"] = p.ip
	}
	if p.iface != "" {
		server["interface"] = p.iface
	}
	if p.mode != "" {
		child(server, "dhcp")["mode"] = p.mode
	}
	return out
}

// reportError is a config the core refused: every problem with its path, then what to do.
type reportError struct {
	what   string
	report core.Report
}

func (e *reportError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d error(s); nothing is served", e.what, len(e.report.Errors))
	for _, p := range e.report.Errors {
		fmt.Fprintf(&b, "\n  error: %s: %s", p.Path, p.Message)
	}
	return b.String()
}

// pxeServices is the network boot part of a running nix8sd.
type pxeServices struct {
	server  *pxe.Server
	http    *pxe.HTTP
	adapter *storeboot.Adapter
	builds  *storeboot.Builds
	nixb    *pxe.NixBuild
	log     *slog.Logger
	view    *core.PXEPlan
	// running: server.Run owns the sockets (and closes them when it returns).
	running bool
}

// closeUnlessRunning closes the sockets of a start that failed before the services ran.
func (s *pxeServices) closeUnlessRunning() {
	if !s.running {
		s.server.Close()
	}
}

// pxeDeps are the parts of the daemon network boot works with, all made before it.
type pxeDeps struct {
	core  *core.Evaluator
	store *store.Store
	// inv gives the boot decisions the members' plans.
	inv *inventory.Inventory
	// runner builds installer images and, once an installer reported done, delivers the member's token
	// files over SSH, checked against the host key it reported (unless provisioning.pxe.approve holds them
	// for an operator: storeboot.Adapter.Approve; the approval queues the same job).
	runner *jobs.Runner
	// onArm runs after a boot armed an install (nodewatch.Watcher.ForgetOldNode).
	onArm func(context.Context, *store.Machine)
	reg   prometheus.Registerer
	log   *slog.Logger
}

// setupPXE checks everything network boot needs before anything is stored or served: the core's PXE view of
// the config (shared MACs, members without a MAC, plan IPs outside the subnet, ...), the interface and its
// address, the iPXE files, and the sockets (a port in use is an error here). Then it makes the services.
//
// fromFile says the config file is all there is (serve --config, the pxe-server-<c> app): then a served member
// without a MAC is an error, since no machine can ever be matched to it; otherwise an operator may still assign
// a discovered machine to it over REST. listen is the address of the listener machines reach.
func setupPXE(ctx context.Context, p *pxeOptions, d pxeDeps, cfg map[string]any, fromFile bool, listen, flake string) (*pxeServices, error) {
	// Network boot's log lines say component=pxe (not a prefix in each message).
	st, log := d.store, d.log.With("component", "pxe")
	view, err := d.core.PXE(ctx, p.overlay(cfg), p.clusters)
	if err != nil {
		var inv *core.InvalidError
		if errors.As(err, &inv) {
			if fromFile && view != nil {
				inv.Report.Errors = append(inv.Report.Errors, view.Unmatched...)
			}
			return nil, &reportError{what: "network boot", report: inv.Report}
		}
		return nil, err
	}
	if fromFile && len(view.Unmatched) > 0 {
		return nil, &reportError{what: "network boot", report: core.Report{Errors: view.Unmatched}}
	}
	for _, w := range view.Warnings {
		log.Warn("config", "path", w.Path, "warning", w.Message)
	}
	for _, w := range view.Unmatched {
		log.Warn("a served member no machine boots as yet; assign a discovered machine to it", "path", w.Path, "warning", w.Message)
	}
	srv := view.Server
	var errs []error
	iface := firstNonEmpty(p.iface, deref(srv.Interface))
	if iface == "" {
		errs = append(errs, errors.New("no interface to serve: set provisioning.pxe.server.interface or pass --pxe-interface"))
	}
	ipS := firstNonEmpty(p.ip, deref(srv.IP))
	ip := net.ParseIP(ipS).To4()
	if ip == nil {
		errs = append(errs, fmt.Errorf("no IPv4 address to serve from (got %q): set provisioning.pxe.server.ip or pass --pxe-ip", ipS))
	}
	mode := pxe.Mode(firstNonEmpty(p.mode, srv.Mode, string(pxe.ModeProxy)))
	files := pxe.DefaultBootFiles(p.ipxeDir)
	for _, s := range p.bootFiles {
		a, f, err := pxe.ParseBootFile(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("--pxe-boot-file %w", err))
			continue
		}
		files[a] = f
	}
	if err := files.Check(p.ipxeDir); err != nil {
		errs = append(errs, fmt.Errorf("%w\ninstall iPXE (Debian: apt-get install ipxe; NixOS: pkgs.ipxe), pass --ipxe-dir, or name another file of it with --pxe-boot-file ARCH=FILE (ARCH= offers that architecture nothing)", err))
	}
	if len(errs) == 0 {
		if err := pxe.CheckInterface(iface, ip); err != nil {
			errs = append(errs, fmt.Errorf("provisioning.pxe.server: %w; set provisioning.pxe.server.ip (or --pxe-ip) to one of its addresses, or add %v to %s", err, ip, iface))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	base := p.baseURL
	if base == "" {
		_, port, err := net.SplitHostPort(listen)
		if err != nil {
			return nil, fmt.Errorf("the machines' listener %q: %w", listen, err)
		}
		base = "http://" + net.JoinHostPort(ip.String(), port)
	}
	metrics := pxe.NewMetrics(d.reg)
	s := &pxeServices{log: log, view: view}
	var images pxe.ImageSource
	var installers storeboot.Images
	discovery := ""
	if p.images != "" {
		images = pxe.DirImages{Dir: p.images}
		dir := storeboot.DirInstallers{Dir: p.images}
		installers = dir
		if p.discovery && dir.Exists("discovery") {
			discovery = "discovery"
		} else if p.discovery {
			log.Warn("no discovery image in the images directory; unknown machines fall through", "dir", p.images+"/discovery")
		}
	} else {
		s.nixb = &pxe.NixBuild{Flake: flake, Nix: p.nix}
		s.builds = &storeboot.Builds{Store: st, Builder: s.nixb, Wake: d.runner.Wake}
		d.runner.Handle(storeboot.JobKind, s.builds.Handle)
		installers, images = s.builds, s.nixb
	}
	// provisioning.pxe.approve as the core resolved it ("servers" unless the config says otherwise): a done
	// report of a member it names waits for POST /v1/machines/{mac}/approve instead of queueing the delivery.
	s.adapter = &storeboot.Adapter{Store: st, Plans: d.inv, Images: installers, Clusters: []string(p.clusters),
		DiscoveryImage: discovery, ArmOnBoot: !p.noArm, OnArm: d.onArm, OnInstalled: d.runner.Installed,
		Approve: srv.Approve, Approvals: st, MaxDiscovered: cmp.Or(p.maxDiscovered, -1),
		MaxDiscoveredPerSegment: p.maxDiscoveredPerSegment, Logger: log}
	dhcp := &pxe.DHCP{Mode: mode, Interface: iface, ServerIP: ip, Booter: s.adapter, BootFiles: files, HTTPBase: base, Port: p.dhcpPort,
		LeaseTime: p.dhcpLease, Known: knownMACs(st, view, log).Known, Metrics: metrics, Logger: log}
	var clientMAC func(net.IP) (net.HardwareAddr, bool)
	if mode == pxe.ModeFull {
		dhcp.Leases = storeboot.Leases{Store: st}
		if srv.Subnet != nil {
			if _, n, err := net.ParseCIDR(*srv.Subnet); err == nil {
				dhcp.Subnet = n
			}
		}
		dhcp.RangeStart, dhcp.RangeEnd = parseIP(srv.RangeStart), parseIP(srv.RangeEnd)
		dhcp.Gateway = parseIP(srv.Gateway)
		clientMAC = leasedMAC(st)
	}
	s.http = &pxe.HTTP{Booter: s.adapter, Machines: s.adapter, Images: images, BaseURL: base, IPXEDir: p.ipxeDir,
		Files: files.Files(), ClientMAC: clientMAC, Unavailable: databaseUnavailable(st), Metrics: metrics, Logger: log,
		WaitInterval: p.waitEvery}
	s.server = &pxe.Server{DHCP: dhcp, TFTP: &pxe.TFTP{Dir: p.ipxeDir, Files: files.Files(), Metrics: metrics, Logger: log}, HTTP: s.http,
		TFTPAddr: net.JoinHostPort(ip.String(), strconv.Itoa(p.tftpPort)), Logger: log}
	if !p.raDisabled {
		s.server.RA = &pxe.RouterAdvertiser{Interface: iface, Logger: log}
	}
	if err := s.server.Listen(); err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("%w: another DHCP or TFTP server runs on this host (dnsmasq?); stop it, or move nix8sd with --dhcp-port/--tftp-port", err)
		}
		return nil, err
	}
	log.Info("serving network boot", "interface", iface, "ip", ip.String(), "mode", mode, "url", base,
		"clusters", p.clusters.String(), "machines", len(view.Machines), "bootFiles", files.String(), "approve", srv.Approve)
	return s, nil
}

// knownMACs is the set of MACs whose DHCP packets go first when the server falls behind: the served members'
// from the start, then every stored machine (members, assigned and discovered machines), reloaded every few
// seconds.
func knownMACs(st *store.Store, view *core.PXEPlan, log *slog.Logger) *pxe.KnownMACs {
	k := &pxe.KnownMACs{Logger: log, Load: func(ctx context.Context) ([]string, error) {
		var macs []string
		after := ""
		for {
			page, err := st.Machines(ctx, store.MachineFilter{After: after, Limit: 10000})
			if err != nil {
				return nil, err
			}
			for _, m := range page {
				macs = append(macs, m.MAC)
			}
			if len(page) < 10000 {
				return macs, nil
			}
			after = page[len(page)-1].MAC
		}
	}}
	var seed []string
	for _, m := range view.Machines {
		seed = append(seed, m.MAC)
	}
	k.Set(seed)
	return k
}

// assign makes the served members' machines (each member with a MAC) and assigns them: the config's
// members are the machines. Run once the config is stored.
func (s *pxeServices) assign(ctx context.Context, st *store.Store) error {
	for _, m := range s.view.Machines {
		if err := storeboot.EnsureAssigned(ctx, st, m.MAC, m.Cluster, m.Member); err != nil {
			return fmt.Errorf("machine %s for %s-%s: %w", m.MAC, m.Cluster, m.Member, err)
		}
	}
	return nil
}

// leasedMAC is pxe.HTTP's ClientMAC in full mode: the MAC holding the lease of a client address.
func leasedMAC(st *store.Store) func(net.IP) (net.HardwareAddr, bool) {
	return func(cip net.IP) (net.HardwareAddr, bool) {
		l, err := st.LeaseByIP(context.Background(), cip)
		if err != nil || l == nil {
			return nil, false
		}
		hw, err := net.ParseMAC(l.MAC)
		return hw, err == nil
	}
}

// databaseUnavailable is pxe.HTTP's Unavailable: a boot decision or report failed, and the database does not
// answer a ping either, so the machine is told to ask again (a wait script, 503 with Retry-After).
func databaseUnavailable(st *store.Store) func(ctx context.Context, err error) bool {
	return func(ctx context.Context, err error) bool {
		if ctx.Err() != nil {
			return false // the machine went away; nothing to tell it
		}
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		return st.Ping(pctx) != nil
	}
}

// buildDiscovery builds the discovery image in the background (flake builds only); until it is there,
// unknown machines fall through to their next boot device.
func (s *pxeServices) buildDiscovery(ctx context.Context) {
	if s.nixb == nil {
		return
	}
	var log strings.Builder
	id, err := s.nixb.Build(ctx, pxe.DiscoveryInstallable, &log)
	if err != nil {
		s.log.Error("building the discovery image failed; unknown machines fall through", "err", err, "log", tail(log.String(), 2000))
		return
	}
	s.adapter.SetDiscoveryImage(id)
	s.log.Info("discovery image ready", "image", id)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func parseIP(s *string) net.IP {
	if s == nil {
		return nil
	}
	return net.ParseIP(*s).To4()
}
