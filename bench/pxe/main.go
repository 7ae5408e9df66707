// Command pxe-bench measures nix8sd's PXE services beside dnsmasq (Debian) doing the same job on the same
// machine: DHCP transactions per second (DISCOVER, OFFER, REQUEST, ACK with fresh MACs, full mode), TFTP
// downloads of undionly.kpxe by many concurrent clients, and, for nix8sd alone (dnsmasq has no HTTP server),
// concurrent HTTP downloads of a netboot kernel. The servers listen on a veth into a network namespace the
// benchmark creates (10.96.0.0/16); the clients run inside it. Root is needed. Every loop is bounded (-n).
//
//	go run ./bench/pxe [-n 3000] [-c 32] [-tftp 400] [-http 64]
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/pin/tftp/v3"

	"github.com/nix8s/nix8s/internal/pgembed"
	"github.com/nix8s/nix8s/internal/pxe"
	"github.com/nix8s/nix8s/internal/pxe/storeboot"
	"github.com/nix8s/nix8s/internal/pxetest"
	"github.com/nix8s/nix8s/internal/store"
)

const ipxeDir = "/usr/lib/ipxe"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "client" {
		if err := client(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "nix8s: error:", err)
			os.Exit(1)
		}
		return
	}
	if err := bench(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "nix8s: error:", err)
		os.Exit(1)
	}
}

type result struct {
	dhcpTPS, dhcpFail           float64
	tftpFPS, tftpMBs, tftpFail  float64
	httpMBs, httpFail, httpP50s float64
}

func bench(args []string) error {
	fs := flag.NewFlagSet("pxe-bench", flag.ExitOnError)
	n := fs.Int("n", 3000, "DHCP transactions per server")
	c := fs.Int("c", 32, "concurrent clients")
	tftpN := fs.Int("tftp", 400, "TFTP downloads per server")
	httpN := fs.Int("http", 64, "HTTP downloads of the kernel")
	kernelMB := fs.Int("kernel-mb", 8, "size of the kernel file served over HTTP, MB")
	withPG := fs.Bool("postgres", true, "also measure nix8sd with machines and leases in PostgreSQL (embedded)")
	fs.Parse(args)
	if os.Geteuid() != 0 {
		return fmt.Errorf("the benchmark needs root (network namespace, ports 67 and 69)")
	}
	dnsmasq, err := exec.LookPath("dnsmasq")
	if err != nil {
		return fmt.Errorf("dnsmasq is not installed (apt-get install dnsmasq)")
	}
	nt, cleanup, err := pxetest.Setup("10.96.", 16)
	defer cleanup()
	if err != nil {
		return err
	}
	self, _ := os.Executable()
	tmp, _ := os.MkdirTemp("", "nix8s-pxe-bench-")
	defer os.RemoveAll(tmp)
	img := filepath.Join(tmp, "images", "bench")
	os.MkdirAll(img, 0o755)
	kernel := make([]byte, *kernelMB<<20)
	rand.Read(kernel)
	os.WriteFile(filepath.Join(img, "bzImage"), kernel, 0o644)
	os.WriteFile(filepath.Join(img, "initrd"), []byte("x"), 0o644)
	srv := nt.ServerIP.String()

	runClient := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", nt.NS, self, "client"}, args...)...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	measure := func(r *result, withHTTP bool) error {
		out, err := runClient("dhcp", "-n", fmt.Sprint(*n), "-c", fmt.Sprint(*c), "-iface", "br0")
		if err != nil {
			return fmt.Errorf("dhcp client: %v: %s", err, out)
		}
		fmt.Sscanf(out, "%f %f", &r.dhcpTPS, &r.dhcpFail)
		out, err = runClient("tftp", "-n", fmt.Sprint(*tftpN), "-c", fmt.Sprint(*c), "-server", srv)
		if err != nil {
			return fmt.Errorf("tftp client: %v: %s", err, out)
		}
		fmt.Sscanf(out, "%f %f %f", &r.tftpFPS, &r.tftpMBs, &r.tftpFail)
		if withHTTP {
			out, err = runClient("http", "-n", fmt.Sprint(*httpN), "-c", fmt.Sprint(*c), "-url", "http://"+srv+":8081/boot/images/bench/bzImage")
			if err != nil {
				return fmt.Errorf("http client: %v: %s", err, out)
			}
			fmt.Sscanf(out, "%f %f %f", &r.httpMBs, &r.httpFail, &r.httpP50s)
		}
		return nil
	}

	// nix8sd's PXE services, full mode, everything unknown booting discovery: once with the in-memory Booter
	// and leases, once as nix8sd serve runs them, on PostgreSQL (machines and leases in the store).
	runOurs := func(r *result, booter pxe.Booter, machines pxe.Machines, leases pxe.Leases, withHTTP bool) error {
		log := slog.New(slog.DiscardHandler)
		base := "http://" + srv + ":8081"
		d := &pxe.DHCP{Mode: pxe.ModeFull, Interface: nt.HostIf, ServerIP: nt.ServerIP, Subnet: nt.Subnet,
			RangeStart: net.ParseIP("10.96.1.0"), RangeEnd: net.ParseIP("10.96.254.254"), Leases: leases,
			Booter: booter, HTTPBase: base, Logger: log, LeaseTime: 10 * time.Minute}
		s := &pxe.Server{DHCP: d, TFTP: &pxe.TFTP{Dir: ipxeDir}, HTTP: &pxe.HTTP{Booter: booter, Machines: machines,
			Images: pxe.DirImages{Dir: filepath.Join(tmp, "images")}, BaseURL: base, IPXEDir: ipxeDir},
			HTTPAddr: srv + ":8081", TFTPAddr: srv + ":69"}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		time.Sleep(300 * time.Millisecond)
		err := measure(r, withHTTP)
		cancel()
		<-done
		return err
	}
	var ours, ourPG result
	mem := &pxe.Memory{DiscoveryImage: "bench"}
	if err := runOurs(&ours, mem, mem, &pxe.MemLeases{}, true); err != nil {
		return fmt.Errorf("nix8sd: %w", err)
	}
	if *withPG {
		ctx := context.Background()
		os.Chmod(tmp, 0o711) // the PostgreSQL user (we are root) must reach its directory
		pg, err := pgembed.Start(ctx, pgembed.Options{Dir: filepath.Join(tmp, "pg")})
		if err != nil {
			return fmt.Errorf("PostgreSQL for the store variant (-postgres=false skips it): %w", err)
		}
		defer pg.Stop()
		url, err := pg.CreateDatabase(ctx, "bench")
		if err != nil {
			return err
		}
		st, err := store.Open(ctx, url)
		if err != nil {
			return err
		}
		defer st.Close()
		slog.SetDefault(slog.New(slog.DiscardHandler))
		if err := st.Migrate(ctx); err != nil {
			return err
		}
		a := &storeboot.Adapter{Store: st, DiscoveryImage: "bench"}
		if err := runOurs(&ourPG, a, a, storeboot.Leases{Store: st}, false); err != nil {
			return fmt.Errorf("nix8sd on PostgreSQL: %w", err)
		}
	}
	// dnsmasq doing the same: full-mode DHCP on the same range with a boot file, and its TFTP server. Leases in
	// memory only (--leasefile-ro), like the in-memory lease store measured above; with its lease file dnsmasq
	// rewrites the whole file on every change and drops to ~1000 transactions/s at 1000 leases.
	var theirs result
	{
		cmd := exec.Command(dnsmasq, "--no-daemon", "--conf-file=/dev/null", "--port=0", "--interface="+nt.HostIf,
			"--bind-interfaces", "--dhcp-range=10.96.1.0,10.96.254.254,255.255.0.0,10m", "--dhcp-boot=undionly.kpxe",
			"--dhcp-authoritative", "--no-ping", "--dhcp-lease-max=1000000", "--leasefile-ro", "--quiet-tftp",
			"--enable-tftp", "--tftp-root="+ipxeDir, "--quiet-dhcp", "--log-facility=/dev/null", "--pid-file=", "--user=root")
		if err := cmd.Start(); err != nil {
			return err
		}
		time.Sleep(500 * time.Millisecond)
		err := measure(&theirs, false)
		cmd.Process.Kill()
		cmd.Wait()
		if err != nil {
			return fmt.Errorf("dnsmasq: %w", err)
		}
	}
	v, _ := exec.Command(dnsmasq, "--version").Output()
	fmt.Printf("PXE services, %d DHCP transactions, %d TFTP downloads of undionly.kpxe, %d concurrent clients (%s)\n",
		*n, *tftpN, *c, strings.SplitN(string(v), "\n", 2)[0])
	fmt.Printf("%-28s %12s %12s %10s %14s %10s\n", "", "nix8sd", "dnsmasq", "ratio", "nix8sd+pg", "ratio")
	ratio := func(a, b float64) string {
		if b > 0 {
			return fmt.Sprintf("%.2f", a/b)
		}
		return "-"
	}
	row := func(name string, a, b, c float64) {
		fmt.Printf("%-28s %12.1f %12.1f %10s %14.1f %10s\n", name, a, b, ratio(a, b), c, ratio(c, b))
	}
	row("DHCP transactions/s", ours.dhcpTPS, theirs.dhcpTPS, ourPG.dhcpTPS)
	row("DHCP failed transactions", ours.dhcpFail, theirs.dhcpFail, ourPG.dhcpFail)
	row("TFTP downloads/s", ours.tftpFPS, theirs.tftpFPS, ourPG.tftpFPS)
	row("TFTP MB/s", ours.tftpMBs, theirs.tftpMBs, ourPG.tftpMBs)
	row("TFTP failed downloads", ours.tftpFail, theirs.tftpFail, ourPG.tftpFail)
	fmt.Printf("HTTP: %d downloads of a %d MB kernel, %d at a time: %.1f MB/s, %.0f failed, median %.2f s (dnsmasq has no HTTP)\n",
		*httpN, *kernelMB, *c, ours.httpMBs, ours.httpFail, ours.httpP50s)
	return nil
}

// client runs inside the namespace and prints its measurements on one line.
func client(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("client needs dhcp, tftp or http")
	}
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	n := fs.Int("n", 1000, "transactions")
	c := fs.Int("c", 32, "concurrency")
	iface := fs.String("iface", "br0", "interface (dhcp)")
	server := fs.String("server", "", "server (tftp)")
	url := fs.String("url", "", "URL (http)")
	fs.Parse(args[1:])
	switch args[0] {
	case "dhcp":
		return dhcpClient(*n, *c, *iface)
	case "tftp":
		return tftpClient(*n, *c, *server)
	case "http":
		return httpClient(*n, *c, *url)
	}
	return fmt.Errorf("unknown client %q", args[0])
}

// pool runs f n times with c workers and returns the wall time.
func pool(n, c int, f func(i int)) time.Duration {
	var next atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
	return time.Since(t0)
}

func dhcpClient(n, c int, iface string) error {
	conn, err := server4.NewIPv4UDPConn(iface, &net.UDPAddr{Port: 68})
	if err != nil {
		return err
	}
	defer conn.Close()
	var mu sync.Mutex
	waiting := map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4{}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, _, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			m, err := dhcpv4.FromBytes(buf[:k])
			if err != nil || m.OpCode != dhcpv4.OpcodeBootReply {
				continue
			}
			mu.Lock()
			ch := waiting[m.TransactionID]
			mu.Unlock()
			if ch != nil {
				select {
				case ch <- m:
				default:
				}
			}
		}
	}()
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: 67}
	var failed atomic.Int64
	exchange := func(m *dhcpv4.DHCPv4, want dhcpv4.MessageType) *dhcpv4.DHCPv4 {
		ch := make(chan *dhcpv4.DHCPv4, 4)
		mu.Lock()
		waiting[m.TransactionID] = ch
		mu.Unlock()
		defer func() { mu.Lock(); delete(waiting, m.TransactionID); mu.Unlock() }()
		for try := 0; try < 3; try++ {
			conn.WriteTo(m.ToBytes(), bcast)
			timeout := time.After(time.Second)
			for {
				select {
				case r := <-ch:
					if r.MessageType() == want {
						return r
					}
					if r.MessageType() == dhcpv4.MessageTypeNak {
						return nil
					}
					continue
				case <-timeout:
				}
				break
			}
		}
		return nil
	}
	wall := pool(n, c, func(i int) {
		hw := net.HardwareAddr{0x02, 0x96, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
		d, _ := dhcpv4.NewDiscovery(hw, dhcpv4.WithBroadcast(true))
		offer := exchange(d, dhcpv4.MessageTypeOffer)
		if offer == nil {
			failed.Add(1)
			return
		}
		req, _ := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithBroadcast(true))
		if exchange(req, dhcpv4.MessageTypeAck) == nil {
			failed.Add(1)
		}
	})
	ok := float64(int64(n) - failed.Load())
	fmt.Printf("%.1f %d\n", ok/wall.Seconds(), failed.Load())
	return nil
}

func tftpClient(n, c int, server string) error {
	var failed, bytes atomic.Int64
	wall := pool(n, c, func(int) {
		cl, err := tftp.NewClient(server + ":69")
		if err != nil {
			failed.Add(1)
			return
		}
		cl.SetTimeout(2 * time.Second)
		cl.SetRetries(5)
		wt, err := cl.Receive("undionly.kpxe", "octet")
		if err != nil {
			failed.Add(1)
			return
		}
		k, err := wt.WriteTo(io.Discard)
		if err != nil {
			failed.Add(1)
			return
		}
		bytes.Add(k)
	})
	ok := float64(int64(n) - failed.Load())
	fmt.Printf("%.1f %.1f %d\n", ok/wall.Seconds(), float64(bytes.Load())/1e6/wall.Seconds(), failed.Load())
	return nil
}

func httpClient(n, c int, url string) error {
	var failed, bytes atomic.Int64
	var mu sync.Mutex
	var times []float64
	tr := &http.Transport{MaxIdleConnsPerHost: c}
	cl := &http.Client{Transport: tr, Timeout: 5 * time.Minute}
	wall := pool(n, c, func(int) {
		t0 := time.Now()
		resp, err := cl.Get(url)
		if err != nil {
			failed.Add(1)
			return
		}
		k, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			failed.Add(1)
			return
		}
		bytes.Add(k)
		mu.Lock()
		times = append(times, time.Since(t0).Seconds())
		mu.Unlock()
	})
	sort.Float64s(times)
	p50 := 0.0
	if len(times) > 0 {
		p50 = times[len(times)/2]
	}
	fmt.Printf("%.1f %d %.3f\n", float64(bytes.Load())/1e6/wall.Seconds(), failed.Load(), p50)
	return nil
}
