// Command images measures how nix8sd serves netboot images beside nginx (Debian) serving the same file from
// the same disk: concurrent clients on loopback download a 50 MB initrd from each, one server after the
// other, in rounds. For each server it reports MB/s and the server's CPU per GB (utime+stime of its
// processes, /proc/<pid>/stat, before and after; on loopback the clients, not the servers, limit the
// throughput, so CPU per byte is the figure that compares) and its write(2)+sendfile(2) calls per GB
// (/proc/<pid>/io syscw), then the ratios of nix8sd to nginx measured in the same round.
//
// nix8sd is the real daemon, `nix8sd serve --pxe` with prebuilt images (--pxe-images), an embedded
// PostgreSQL and proxy DHCP on lo on high ports, in a process of its own, so its CPU is its own (PostgreSQL's
// processes are not counted; they are idle while images are served). nginx runs with a private config on
// 127.0.0.1 and a temporary directory, never the system service. Every loop is bounded (-n, -rounds,
// timeouts). Root is needed (nix8sd's DHCP socket on lo).
//
//	go run ./bench/images [-mb 50] [-c 20] [-n 100] [-rounds 3] [-nix8sd PATH]
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nix8s/nix8s/bench/internal/daemon"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "nix8s: error:", err)
		os.Exit(1)
	}
}

type options struct {
	mb, clients, downloads, rounds int
	nix8sd                         string
}

func run(args []string) error {
	var o options
	fs := flag.NewFlagSet("images-bench", flag.ExitOnError)
	fs.IntVar(&o.mb, "mb", 50, "size of the served initrd, MB")
	fs.IntVar(&o.clients, "c", 20, "concurrent clients")
	fs.IntVar(&o.downloads, "n", 100, "downloads per server and round")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds (each measures both servers, the order alternating)")
	fs.StringVar(&o.nix8sd, "nix8sd", "", "the nix8sd `PROGRAM` (default: $GO build ./cmd/nix8sd, run from the repository)")
	fs.Parse(args)
	if o.mb < 1 || o.clients < 1 || o.downloads < o.clients || o.rounds < 1 {
		return fmt.Errorf("-mb, -c, -rounds must be at least 1 and -n at least -c")
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("the benchmark needs root (nix8sd's DHCP socket on lo)")
	}
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		return fmt.Errorf("nginx is not installed (apt-get install nginx)")
	}
	tmp, err := os.MkdirTemp("", "nix8s-images-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// nginx's workers run as nobody: they must be able to read the images.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	images := filepath.Join(tmp, "images")
	size := int64(o.mb) << 20
	if err := writeImage(filepath.Join(images, "discovery"), size); err != nil {
		return err
	}
	if o.nix8sd == "" {
		var err error
		if o.nix8sd, err = daemon.Build(os.Getenv("GO"), tmp); err != nil {
			return fmt.Errorf("%w (run the benchmark from the repository, or pass -nix8sd)", err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	d, err := startNix8sd(ctx, o.nix8sd, tmp, images)
	if err != nil {
		return err
	}
	defer d.stop()
	n, err := startNginx(ctx, nginx, tmp, images)
	if err != nil {
		return err
	}
	defer n.stop()
	servers := []*server{d, n}
	fmt.Printf("images: %d MB initrd, %d clients, %d downloads (%.1f GB) per server and round, %d rounds, loopback\n\n",
		o.mb, o.clients, o.downloads, float64(size)*float64(o.downloads)/1e9, o.rounds)

	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.clients, DisableCompression: true}, Timeout: 5 * time.Minute}
	var downloaded int64 // from nix8sd, to check its byte counter at the end
	for _, s := range servers {
		if _, err := fetch(c, s.url, size); err != nil { // warm up: page cache, connections
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	downloaded += size
	results := map[string][]measure{}
	fmt.Printf("%-6s %-7s %9s %12s %18s %16s\n", "round", "server", "MB/s", "CPU s/GB", "+clients CPU s/GB", "write calls/GB")
	for round := range o.rounds {
		order := servers
		if round%2 == 1 {
			order = []*server{n, d}
		}
		for _, s := range order {
			m, err := s.measure(c, size, o.downloads, o.clients)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			if s == d {
				downloaded += m.bytes
			}
			results[s.name] = append(results[s.name], m)
			fmt.Printf("%-6d %-7s %9.0f %12.3f %18.3f %16.0f\n", round+1, s.name, m.mbps(), m.cpuPerGB(), m.totalPerGB(), m.callsPerGB())
		}
	}

	fmt.Printf("\n%-7s %17s %17s %18s %17s\n", "median", "MB/s", "CPU s/GB", "+clients CPU s/GB", "write calls/GB")
	for _, s := range servers {
		r := results[s.name]
		fmt.Printf("%-7s %17.0f %17.3f %18.3f %17.0f\n", s.name, median(r, measure.mbps), median(r, measure.cpuPerGB),
			median(r, measure.totalPerGB), median(r, measure.callsPerGB))
	}
	ratio := func(f func(measure) float64) string {
		var v []float64
		for i := range o.rounds {
			v = append(v, f(results[d.name][i])/f(results[n.name][i]))
		}
		slices.Sort(v)
		return fmt.Sprintf("%.2f-%.2f-%.2f", v[0], v[len(v)/2], v[len(v)-1])
	}
	fmt.Printf("\nnix8sd/nginx, the rounds' ratios (min-median-max): CPU per GB %s, with the clients' %s, MB/s %s\n",
		ratio(measure.cpuPerGB), ratio(measure.totalPerGB), ratio(measure.mbps))

	counted, err := d.counted(downloaded)
	if err != nil {
		return err
	}
	fmt.Printf("nix8sd's nix8s_pxe_http_bytes_total{kind=\"initrd\"}: %.0f, bytes the clients downloaded from it: %d\n", counted, downloaded)
	return nil
}

func writeImage(dir string, size int64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, "initrd"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "bzImage"), []byte("kernel"), 0o644)
}

// server is one server under test: its URL and the processes whose CPU is its.
type server struct {
	name, url string
	pids      func() []int
	stop      func()
	base      string // nix8sd: the API, for /metrics
}

type measure struct {
	bytes    int64
	elapsed  time.Duration
	cpu      float64 // seconds, the server's processes
	clients  float64 // seconds, this process (the clients)
	syscalls int64
}

func (m measure) mbps() float64       { return float64(m.bytes) / 1e6 / m.elapsed.Seconds() }
func (m measure) cpuPerGB() float64   { return m.cpu / (float64(m.bytes) / 1e9) }
func (m measure) totalPerGB() float64 { return (m.cpu + m.clients) / (float64(m.bytes) / 1e9) }
func (m measure) callsPerGB() float64 { return float64(m.syscalls) / (float64(m.bytes) / 1e9) }

func (s *server) measure(c *http.Client, size int64, downloads, clients int) (measure, error) {
	pids := s.pids()
	cpu0, calls0, err := usage(pids)
	if err != nil {
		return measure{}, err
	}
	self0, _, err := usage([]int{os.Getpid()})
	if err != nil {
		return measure{}, err
	}
	start := time.Now()
	jobs := make(chan struct{}, downloads)
	for range downloads {
		jobs <- struct{}{}
	}
	close(jobs)
	var mu sync.Mutex
	var total int64
	var errs []error
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				n, err := fetch(c, s.url, size)
				mu.Lock()
				total += n
				if err != nil {
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1, calls1, err := usage(pids)
	if err != nil {
		return measure{}, err
	}
	self1, _, err := usage([]int{os.Getpid()})
	if err != nil {
		return measure{}, err
	}
	if len(errs) > 0 {
		return measure{}, fmt.Errorf("%d of %d downloads failed, the first: %w", len(errs), downloads, errs[0])
	}
	return measure{bytes: total, elapsed: elapsed, cpu: cpu1 - cpu0, clients: self1 - self0, syscalls: calls1 - calls0}, nil
}

func fetch(c *http.Client, url string, size int64) (int64, error) {
	res, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	buf := make([]byte, 256<<10)
	n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, res.Body, buf)
	if err == nil && (res.StatusCode != http.StatusOK || n != size) {
		err = fmt.Errorf("GET %s: %s with %d bytes, want 200 with %d", url, res.Status, n, size)
	}
	return n, err
}

// usage sums utime+stime (seconds) and write system calls (syscw: write, writev, sendfile) of the processes.
func usage(pids []int) (cpu float64, calls int64, err error) {
	const userHZ = 100 // USER_HZ, the unit of /proc/<pid>/stat times on Linux
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, 0, err
		}
		// Fields after "(comm)": state is field 3, utime 14 and stime 15.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) < 13 {
			return 0, 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		cpu += float64(ut+st) / userHZ
		io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
		if err != nil {
			return 0, 0, err
		}
		for _, line := range strings.Split(string(io), "\n") {
			if v, ok := strings.CutPrefix(line, "syscw: "); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				calls += n
			}
		}
	}
	return cpu, calls, nil
}

// start runs a server process, stopped with SIGTERM (then killed after 30 s); done closes when it exited.
func start(ctx context.Context, name string, args []string, logFile string) (cmd *exec.Cmd, stop func(), done chan struct{}, err error) {
	log, err := os.Create(logFile)
	if err != nil {
		return nil, nil, nil, err
	}
	cmd = exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, nil, nil, err
	}
	done = make(chan struct{})
	go func() { cmd.Wait(); log.Close(); close(done) }()
	stop = func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	return cmd, stop, done, nil
}

// waitHTTP waits (at most 90 s) until url answers 200, or the server exited.
func waitHTTP(url string, done chan struct{}, logFile string) error {
	for range 180 {
		select {
		case <-done:
			return fmt.Errorf("exited before %s answered; log:\n%s", url, tail(logFile))
		default:
		}
		if res, err := http.Get(url); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer within 90 s; log:\n%s", url, tail(logFile))
}

func tail(file string) string {
	b, _ := os.ReadFile(file)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

func startNix8sd(ctx context.Context, prog, tmp, images string) (*server, error) {
	var ports [3]int
	for i, network := range []string{"tcp", "udp", "udp"} {
		p, err := daemon.FreePort(network)
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	api := fmt.Sprintf("127.0.0.1:%d", ports[0])
	logFile := filepath.Join(tmp, "nix8sd.log")
	cmd, stop, done, err := start(ctx, prog, []string{"serve", "--listen", api, "--state-dir", filepath.Join(tmp, "state"),
		"--log-format", "text", "--pxe-interface", "lo", "--pxe-ip", "127.0.0.1", "--pxe-images", images,
		"--dhcp-port", strconv.Itoa(ports[1]), "--tftp-port", strconv.Itoa(ports[2])}, logFile)
	if err != nil {
		return nil, err
	}
	base := "http://" + api
	if err := waitHTTP(base+"/readyz", done, logFile); err != nil {
		stop()
		return nil, fmt.Errorf("nix8sd: %w", err)
	}
	pid := cmd.Process.Pid
	return &server{name: "nix8sd", url: base + "/boot/images/discovery/initrd", base: base,
		pids: func() []int { return []int{pid} }, stop: stop}, nil
}

// counted reads nix8sd's initrd byte counter, waiting (at most 10 s) for the last handler to count.
func (s *server) counted(want int64) (float64, error) {
	var v float64
	for range 20 {
		res, err := http.Get(s.base + "/metrics")
		if err != nil {
			return 0, err
		}
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			if f, ok := strings.CutPrefix(sc.Text(), `nix8s_pxe_http_bytes_total{kind="initrd"} `); ok {
				v, _ = strconv.ParseFloat(f, 64)
			}
		}
		res.Body.Close()
		if v == float64(want) {
			return v, nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return v, fmt.Errorf("nix8sd counted %.0f initrd bytes, the clients downloaded %d", v, want)
}

const nginxConf = `# A private nginx for bench/images: loopback only, everything in %[1]s.
daemon off;
master_process on;
worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
	# Debian's nginx.conf: sendfile on, tcp_nopush on.
	sendfile on;
	tcp_nopush on;
	types { }
	default_type application/octet-stream;
	access_log %[1]s/access.log;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server {
		listen 127.0.0.1:%[2]d;
		location /boot/images/ { alias %[3]s/; }
	}
}
`

func startNginx(ctx context.Context, prog, tmp, images string) (*server, error) {
	dir := filepath.Join(tmp, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	port, err := daemon.FreePort("tcp")
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(nginxConf, dir, port, images)), 0o644); err != nil {
		return nil, err
	}
	logFile := filepath.Join(dir, "stderr.log")
	cmd, stop, done, err := start(ctx, prog, []string{"-e", filepath.Join(dir, "error.log"), "-p", dir, "-c", conf}, logFile)
	if err != nil {
		return nil, err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/boot/images/discovery/initrd", port)
	if err := waitHTTP(url, done, filepath.Join(dir, "error.log")); err != nil {
		stop()
		return nil, fmt.Errorf("nginx: %w", err)
	}
	master := cmd.Process.Pid
	workers := children(master)
	if len(workers) == 0 {
		stop()
		return nil, errors.New("nginx: no worker processes found")
	}
	return &server{name: "nginx", url: url, pids: func() []int { return append([]int{master}, children(master)...) }, stop: stop}, nil
}

// children lists the processes whose parent is pid.
func children(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

func median(r []measure, f func(measure) float64) float64 {
	v := make([]float64, len(r))
	for i, m := range r {
		v[i] = f(m)
	}
	slices.Sort(v)
	return v[len(v)/2]
}
