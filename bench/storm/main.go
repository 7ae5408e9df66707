// Command storm measures what a rack does to nix8sd when it powers on at once: every member of a large cluster
// asks for its iPXE script (GET /boot/ipxe?mac=) at the same time, against the real `nix8sd serve --pxe` with
// its inventory and machines in PostgreSQL. It reports boot decisions per second, p50/p99 latency and the
// daemon's memory (VmRSS peak during the storm, VmHWM), beside the peer measured in the same run at the same
// concurrency: the daemon's own /healthz, which shows what the machine and the HTTP stack allow. Storms run for
// a cluster of members only (each once per pass), right after an inventory change written through the REST API
// (PUT of a member), and for unknown MACs. Everything is on loopback; every loop is bounded in count and time.
//
//	go run ./bench/storm [-members 1000,5000] [-c 200] [-passes 2]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nix8s/nix8s/bench/internal/daemon"
	"github.com/nix8s/nix8s/internal/pgembed"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "nix8s: error:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("storm", flag.ExitOnError)
	sizes := fs.String("members", "1000,5000", "cluster sizes to measure, comma-separated")
	conc := fs.Int("c", 200, "concurrent clients")
	passes := fs.Int("passes", 2, "storms per cluster size (each member asks once per pass)")
	unknown := fs.Int("unknown", 2000, "unknown MACs in the discovery storm")
	fs.Parse(args)

	tmp, err := os.MkdirTemp("", "nix8s-storm-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	os.Chmod(tmp, 0o711) // the PostgreSQL user (when we are root) must reach its directory
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

	fmt.Printf("boot storm: %d concurrent clients, real nix8sd serve --pxe on PostgreSQL, loopback\n", *conc)
	fmt.Printf("%-44s %10s %9s %9s %9s %10s %8s\n", "", "req/s", "p50 ms", "p99 ms", "failed", "RSS MB", "ratio")
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 4 {
			return fmt.Errorf("-members: %q is not a cluster size of at least 4", f)
		}
		db, err := pg.CreateDatabase(ctx, fmt.Sprintf("storm%d", n))
		if err != nil {
			return err
		}
		if err := size(ctx, bin, tmp, db, n, *conc, *passes, *unknown); err != nil {
			return fmt.Errorf("%d members: %w", n, err)
		}
	}
	return nil
}

func mac(prefix byte, i int) string {
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", prefix, byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
}

func memberIP(i int) string { return fmt.Sprintf("127.1.%d.%d", (i+10)/250, (i+10)%250+1) }

// config is a cluster of n members with three HA servers, every member with its own MAC.
func config(n int) map[string]any {
	members := map[string]any{}
	for i := range n {
		role, name := "agent", fmt.Sprintf("a%d", i)
		if i < 3 {
			role, name = "server", fmt.Sprintf("s%d", i+1)
		}
		members[name] = map[string]any{"node": "vm", "role": role,
			"ip": memberIP(i), "network": map[string]any{"mac": mac(0x51, i)}}
	}
	return map[string]any{
		"nodes":        map[string]any{"vm": map[string]any{"install": map[string]any{"disk": "/dev/vda"}}},
		"clusters":     map[string]any{"rack": map[string]any{"ha": map[string]any{"enable": true, "vip": "127.1.0.1"}, "members": members}},
		"provisioning": map[string]any{"pxe": map[string]any{"server": map[string]any{"ip": "127.0.0.1"}}},
	}
}

// freePort is a free loopback port of network ("tcp" or "udp"), as a flag value.
func freePort(network string) string {
	p, err := daemon.FreePort(network)
	if err != nil {
		return "0"
	}
	return strconv.Itoa(p)
}

func size(ctx context.Context, bin, tmp, db string, n, conc, passes, unknown int) error {
	dir := filepath.Join(tmp, fmt.Sprintf("state-%d", n))
	images := filepath.Join(dir, "images")
	for _, img := range []string{"discovery", "rack-s1"} {
		os.MkdirAll(filepath.Join(images, img), 0o755)
		for _, f := range []string{"bzImage", "initrd"} {
			os.WriteFile(filepath.Join(images, img, f), []byte("stand-in"), 0o644)
		}
	}
	cfgFile := filepath.Join(dir, "config.json")
	data, _ := json.Marshal(config(n))
	os.WriteFile(cfgFile, data, 0o644)
	token := "nix8s_stormadmintoken0123456789abcdef"
	tokFile := filepath.Join(dir, "admin-token")
	os.WriteFile(tokFile, []byte(token), 0o600)
	addr := "127.0.0.1:" + freePort("tcp")
	cmd := exec.CommandContext(ctx, bin, "serve", "--listen", addr, "--state-dir", dir, "--admin-token-file", tokFile,
		"--config", cfgFile, "--pxe-interface", "lo", "--pxe-ip", "127.0.0.1", "--pxe-images", images,
		"--dhcp-port", freePort("udp"), "--tftp-port", freePort("udp"), "--node-watch-interval", "1h", "--log-level", "error")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+db)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	base := "http://" + addr
	// One client per worker, each from its own loopback address (127.0.1.x), as the machines of a rack each
	// have their own: the daemon caps connections per client address (--http-max-client-conns), so 200
	// workers from one address would be closed as a flood.
	cl := make([]*http.Client, conc)
	for i := range cl {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+i%250))}}
		cl[i] = &http.Client{Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 1}, Timeout: 60 * time.Second}
	}
	for {
		if resp, err := cl[0].Get(base + "/readyz"); err == nil {
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
	start := time.Since(t0)
	pid := cmd.Process.Pid
	macs := make([]string, n)
	for i := range macs {
		macs[i] = mac(0x51, i)
	}
	row := func(name string, r storm, peer float64) {
		ratio := "-"
		if peer > 0 {
			ratio = fmt.Sprintf("%.3f", r.rate/peer)
		}
		fmt.Printf("%-44s %10.0f %9.1f %9.1f %9d %10.0f %8s\n", name, r.rate, r.p50*1e3, r.p99*1e3, r.failed, r.rssMB, ratio)
	}
	fmt.Printf("-- %d members (nix8sd started and stored the config in %s)\n", n, start.Round(time.Millisecond))
	healthz := make([]string, n)
	for i := range healthz {
		healthz[i] = base + "/healthz"
	}
	peer := hit(cl, healthz, conc, pid)
	row("peer: /healthz of the same daemon", peer, 0)
	boots := make([]string, n)
	for i, m := range macs {
		boots[i] = base + "/boot/ipxe?mac=" + m
	}
	for p := range passes {
		row(fmt.Sprintf("members' boot decisions, pass %d", p+1), hit(cl, boots, conc, pid), peer.rate)
	}
	// An operator changes the inventory (PUT of one member, as curl would); the storm goes on at once.
	member, _ := json.Marshal(map[string]any{"node": "vm", "role": "agent", "ip": memberIP(3),
		"network": map[string]any{"mac": mac(0x51, 3)}, "boot": map[string]any{"kernelParams": []string{"storm=1"}}})
	req, _ := http.NewRequest(http.MethodPut, base+"/v1/clusters/rack/members/a3", bytes.NewReader(member))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	w0 := time.Now()
	resp, err := cl[0].Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("PUT member: %s: %s", resp.Status, body)
	}
	fmt.Printf("   (PUT of a member took %s)\n", time.Since(w0).Round(time.Millisecond))
	row("members' boot decisions, right after a change", hit(cl, boots, conc, pid), peer.rate)
	unknowns := make([]string, unknown)
	for i := range unknowns {
		unknowns[i] = base + "/boot/ipxe?mac=" + mac(0x77, i)
	}
	row("unknown MACs (discovery)", hit(cl, unknowns, conc, pid), peer.rate)
	fmt.Printf("   (nix8sd VmHWM after all storms: %.0f MB)\n", status(pid, "VmHWM"))
	return nil
}

type storm struct {
	rate, p50, p99, rssMB float64
	failed                int
}

// hit fetches every URL once with conc clients and samples the daemon's VmRSS meanwhile.
func hit(cl []*http.Client, urls []string, conc, pid int) storm {
	var next atomic.Int64
	var failed atomic.Int64
	lat := make([]float64, len(urls))
	stop := make(chan struct{})
	var rss float64
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if r := status(pid, "VmRSS"); r > rss {
				rss = r
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	var wg sync.WaitGroup
	t0 := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(urls) {
					return
				}
				s := time.Now()
				resp, err := cl[w].Get(urls[i])
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("%s", resp.Status)
					}
				}
				lat[i] = time.Since(s).Seconds()
				if err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	wall := time.Since(t0)
	close(stop)
	sampler.Wait()
	sort.Float64s(lat)
	return storm{rate: float64(len(urls)) / wall.Seconds(), p50: lat[len(lat)/2], p99: lat[len(lat)*99/100],
		failed: int(failed.Load()), rssMB: rss}
}

// status reads a kB field of /proc/<pid>/status, in MB.
func status(pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}

func tail(s string) string {
	if len(s) > 2000 {
		return "..." + s[len(s)-2000:]
	}
	return s
}
