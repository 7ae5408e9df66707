// Command dhcp-bench measures full-mode DHCP of the real `nix8sd serve --pxe` (leases and machines in
// PostgreSQL) beside dnsmasq (Debian) with the same range on the same veth, never both at once, with ISC
// perfdhcp (Debian kea-admin) as the load: at several offered rates with random MACs (machines nobody
// knows), and aimed at the MACs of a cluster's members (each gets its plan IP; dnsmasq gets the same MAC-IP
// pairs as dhcp-host entries). perfdhcp runs in a network namespace of pxetest as a relay (-l), so both
// servers answer unicast. Every run is bounded in packets (-n) and time (-p). It needs root.
//
//	go run ./bench/dhcp [-rates 500,1000,2000] [-seconds 5] [-members 1000] [-member-rate 1000]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nix8s/nix8s/bench/internal/daemon"
	"github.com/nix8s/nix8s/internal/pgembed"
	"github.com/nix8s/nix8s/internal/pxetest"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "nix8s: error:", err)
		os.Exit(1)
	}
}

// The 10.96.0.0/16 of pxetest.Setup: server .0.1, perfdhcp's relay address .0.2, members from .2.0, the
// range for everybody else after them.
const (
	rangeLo, rangeHi = "10.96.8.0", "10.96.254.254"
	memberBase       = "02:51:00:00:00:00"
)

func memberMAC(i int) string { return fmt.Sprintf("02:51:00:00:%02x:%02x", byte(i>>8), byte(i)) }
func memberIP(i int) string  { return fmt.Sprintf("10.96.%d.%d", 2+i/250, i%250+1) }

// load is one perfdhcp run.
type load struct {
	name string
	rate int    // offered exchanges/s
	mac  string // base MAC
	macs int    // how many distinct MACs from the base
}

// result is what perfdhcp reports for a run: the achieved 4-way rate and, per exchange (DISCOVER-OFFER,
// REQUEST-ACK), packets sent, drops and delays.
type result struct {
	rate float64
	ex   [2]exchange
	err  string
}

type exchange struct {
	sent, drops  int
	avgMs, maxMs float64
}

func run(args []string) error {
	fs := flag.NewFlagSet("dhcp-bench", flag.ExitOnError)
	rates := fs.String("rates", "500,1000,2000", "offered rates (exchanges/s) of the runs with random MACs, comma-separated")
	secs := fs.Int("seconds", 5, "length of each run")
	members := fs.Int("members", 1000, "size of the cluster whose members' MACs one run aims at (0: no such run)")
	memberRate := fs.Int("member-rate", 1000, "offered rate of the members' run")
	fs.Parse(args)
	if os.Geteuid() != 0 {
		return fmt.Errorf("the benchmark needs root (network namespace, port 67)")
	}
	perfdhcp, err := exec.LookPath("perfdhcp")
	if err != nil {
		return fmt.Errorf("perfdhcp is not installed (apt-get install kea-admin)")
	}
	dnsmasq, err := exec.LookPath("dnsmasq")
	if err != nil {
		return fmt.Errorf("dnsmasq is not installed (apt-get install dnsmasq)")
	}
	if *members > 60000 {
		return fmt.Errorf("-members %d: at most 60000 fit below the range", *members)
	}
	var loads []load
	for _, f := range strings.Split(*rates, ",") {
		r, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || r <= 0 {
			return fmt.Errorf("-rates: %q is not a rate", f)
		}
		// Random MACs, a different base per run so no run renews the leases of the one before.
		loads = append(loads, load{name: fmt.Sprintf("random MACs, %d/s offered", r), rate: r,
			mac: fmt.Sprintf("02:%02x:00:00:00:00", 0x60+len(loads)), macs: 1000000})
	}
	if *members > 0 {
		loads = append(loads, load{name: fmt.Sprintf("%d members' MACs, %d/s offered", *members, *memberRate),
			rate: *memberRate, mac: memberBase, macs: *members})
	}

	nt, cleanup, err := pxetest.Setup("10.96.", 16)
	defer cleanup()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "nix8s-dhcp-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	os.Chmod(tmp, 0o711) // the PostgreSQL user (when we are root) must reach its directory
	srv := nt.ServerIP.String()
	relay := strings.TrimSuffix(nt.Prefix, "0.") + "0.2"
	perf := func(l load) result {
		n := l.rate * *secs
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(*secs+60)*time.Second)
		defer cancel()
		cmd := nt.Command(ctx, perfdhcp, "-4", "-l", relay, "-r", itoa(l.rate), "-R", itoa(l.macs), "-p", itoa(*secs),
			"-n", itoa(n), "-b", "mac="+l.mac, srv)
		var out, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		err := cmd.Run()
		r := parse(out.String())
		if r.ex[0].sent == 0 {
			r.err = fmt.Sprintf("perfdhcp: %v: %s", err, tail(stderr.String()+out.String()))
		}
		return r
	}

	// nix8sd: the real daemon, full mode, on PostgreSQL, the members in its config.
	bin, err := daemon.Build("", tmp)
	if err != nil {
		return err
	}
	ctx := context.Background()
	pg, err := pgembed.Start(ctx, pgembed.Options{Dir: filepath.Join(tmp, "pg")})
	if err != nil {
		return fmt.Errorf("PostgreSQL: %w", err)
	}
	defer pg.Stop()
	db, err := pg.CreateDatabase(ctx, "dhcpbench")
	if err != nil {
		return err
	}
	ours := make([]result, len(loads))
	if err := withNix8sd(ctx, bin, tmp, db, nt.HostIf, srv, *members, func() {
		for i, l := range loads {
			ours[i] = perf(l)
		}
	}); err != nil {
		return err
	}

	// dnsmasq: the same range, the members as dhcp-host entries, leases in memory (--leasefile-ro; with its
	// lease file dnsmasq rewrites the whole file on every change). Never at the same time as nix8sd.
	hosts := filepath.Join(tmp, "dnsmasq-hosts")
	var hb strings.Builder
	for i := range *members {
		fmt.Fprintf(&hb, "%s,%s\n", memberMAC(i), memberIP(i))
	}
	os.WriteFile(hosts, []byte(hb.String()), 0o644)
	theirs := make([]result, len(loads))
	for i, l := range loads {
		// A fresh dnsmasq per run: it looks leases up in a list, so the leases of earlier runs would slow it;
		// nix8sd keeps its leases of earlier runs (the conservative side of the ratio).
		cmd := exec.Command(dnsmasq, "--no-daemon", "--conf-file=/dev/null", "--port=0", "--interface="+nt.HostIf,
			"--bind-interfaces", "--dhcp-range="+rangeLo+","+rangeHi+",255.255.0.0,10m", "--dhcp-hostsfile="+hosts,
			"--dhcp-authoritative", "--no-ping", "--dhcp-lease-max=1000000", "--leasefile-ro",
			"--quiet-dhcp", "--log-facility=/dev/null", "--pid-file=", "--user=root")
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("dnsmasq: %w", err)
		}
		time.Sleep(500 * time.Millisecond)
		theirs[i] = perf(l)
		cmd.Process.Kill()
		cmd.Wait()
	}

	v, _ := exec.Command(dnsmasq, "--version").Output()
	pv, _ := exec.Command(perfdhcp, "-v").CombinedOutput()
	fmt.Printf("DHCP, full mode: nix8sd serve --pxe on PostgreSQL vs %s; perfdhcp %s as a relay, %d s per run\n",
		strings.SplitN(string(v), "\n", 2)[0], strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(pv)), "VERSION:")), *secs)
	fmt.Printf("%-36s %-8s %10s %8s %9s %9s %9s %9s %7s\n", "run", "server", "exch/s", "sent", "drops D-O", "drops R-A", "avg ms", "max ms", "ratio")
	row := func(name, server string, r result, peer float64) {
		if r.err != "" {
			fmt.Printf("%-36s %-8s %s\n", name, server, r.err)
			return
		}
		ratio := "-"
		if peer > 0 {
			ratio = fmt.Sprintf("%.2f", r.rate/peer)
		}
		// Delay per 4-way exchange: DISCOVER-OFFER plus REQUEST-ACK.
		fmt.Printf("%-36s %-8s %10.1f %8d %9d %9d %9.2f %9.2f %7s\n", name, server, r.rate, r.ex[0].sent,
			r.ex[0].drops, r.ex[1].drops, r.ex[0].avgMs+r.ex[1].avgMs, max(r.ex[0].maxMs, r.ex[1].maxMs), ratio)
	}
	for i, l := range loads {
		row(l.name, "dnsmasq", theirs[i], 0)
		peer := theirs[i].rate
		if theirs[i].err != "" {
			peer = 0
		}
		row("", "nix8sd", ours[i], peer)
	}
	return nil
}

// withNix8sd runs nix8sd serve --pxe in full mode on iface with a cluster of n members until f returns.
func withNix8sd(ctx context.Context, bin, tmp, db, iface, ip string, n int, f func()) error {
	dir := filepath.Join(tmp, "state")
	images := filepath.Join(dir, "images")
	for _, img := range []string{"discovery"} {
		os.MkdirAll(filepath.Join(images, img), 0o755)
		for _, f := range []string{"bzImage", "initrd"} {
			os.WriteFile(filepath.Join(images, img, f), []byte("stand-in"), 0o644)
		}
	}
	cfgFile := filepath.Join(dir, "config.json")
	data, _ := json.Marshal(config(n, ip))
	os.WriteFile(cfgFile, data, 0o644)
	tokFile := filepath.Join(dir, "admin-token")
	os.WriteFile(tokFile, []byte("nix8s_dhcpbenchadmintoken0123456789abcdef"), 0o600)
	addr := "127.0.0.1:" + freePort("tcp")
	cmd := exec.CommandContext(ctx, bin, "serve", "--listen", addr, "--state-dir", dir, "--admin-token-file", tokFile,
		"--config", cfgFile, "--pxe-interface", iface, "--pxe-ip", ip, "--pxe-mode", "full", "--pxe-images", images,
		"--tftp-port", freePort("udp"), "--no-router-advertisements", "--dhcp-lease", "10m",
		"--node-watch-interval", "1h", "--log-level", "error")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+db)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	t0 := time.Now()
	for {
		if resp, err := http.Get("http://" + addr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Since(t0) > 10*time.Minute || cmd.ProcessState != nil {
			return fmt.Errorf("nix8sd did not become ready: %s", tail(stderr.String()))
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	f()
	if cmd.ProcessState != nil {
		return fmt.Errorf("nix8sd exited during the runs: %s", tail(stderr.String()))
	}
	return nil
}

// config is a cluster of n members with three HA servers, each with its MAC and a plan IP in the subnet,
// served in full mode on 10.96.0.0/16.
func config(n int, ip string) map[string]any {
	members := map[string]any{}
	for i := range n {
		role, name := "agent", fmt.Sprintf("a%d", i)
		if i < 3 {
			role, name = "server", fmt.Sprintf("s%d", i+1)
		}
		members[name] = map[string]any{"node": "vm", "role": role,
			"ip": memberIP(i), "network": map[string]any{"mac": memberMAC(i)}}
	}
	return map[string]any{
		"nodes":    map[string]any{"vm": map[string]any{"install": map[string]any{"disk": "/dev/vda"}}},
		"clusters": map[string]any{"rack": map[string]any{"ha": map[string]any{"enable": true, "vip": "10.96.1.1"}, "members": members}},
		"provisioning": map[string]any{"pxe": map[string]any{"server": map[string]any{"ip": ip,
			"dhcp": map[string]any{"mode": "full", "subnet": "10.96.0.0/16", "range": rangeLo + "-" + rangeHi}}}},
	}
}

var (
	rateRe    = regexp.MustCompile(`Rate: ([0-9.]+) 4-way exchanges/second`)
	sectionRe = regexp.MustCompile(`\*\*\*Statistics for: (DISCOVER-OFFER|REQUEST-ACK)\*\*\*`)
	fieldRe   = regexp.MustCompile(`(?m)^(sent packets|drops|avg delay|max delay): ([0-9.]+)`)
)

// parse reads perfdhcp's final report.
func parse(out string) result {
	var r result
	if m := rateRe.FindAllStringSubmatch(out, -1); len(m) > 0 {
		r.rate, _ = strconv.ParseFloat(m[len(m)-1][1], 64)
	}
	idx := sectionRe.FindAllStringSubmatchIndex(out, -1)
	for k, loc := range idx {
		end := len(out)
		if k+1 < len(idx) {
			end = idx[k+1][0]
		}
		e := &r.ex[0]
		if out[loc[2]:loc[3]] == "REQUEST-ACK" {
			e = &r.ex[1]
		}
		for _, f := range fieldRe.FindAllStringSubmatch(out[loc[1]:end], -1) {
			v, _ := strconv.ParseFloat(f[2], 64)
			switch f[1] {
			case "sent packets":
				e.sent = int(v)
			case "drops":
				e.drops = int(v)
			case "avg delay":
				e.avgMs = v
			case "max delay":
				e.maxMs = v
			}
		}
	}
	return r
}

func itoa(i int) string { return strconv.Itoa(i) }

func tail(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return s
}

// freePort is a free loopback port of network ("tcp" or "udp"), as a flag value.
func freePort(network string) string {
	p, err := daemon.FreePort(network)
	if err != nil {
		return "0"
	}
	return strconv.Itoa(p)
}
