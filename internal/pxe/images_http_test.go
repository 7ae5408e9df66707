package pxe

// Images and iPXE binaries over real TCP connections on loopback: net/http's real ResponseWriter, so that
// sendfile(2) is what a booting machine gets, and the byte counters checked against what the clients received
// and, under strace, against what the kernel accepted.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nix8s/nix8s/internal/pxetest"
)

// fileImages writes image "img" (a kernel and an initrd of the given sizes, random bytes) and an ipxe.efi.
func fileImages(t *testing.T, kernel, initrd int) (images, ipxe string) {
	dir := t.TempDir()
	images, ipxe = filepath.Join(dir, "images"), filepath.Join(dir, "ipxe")
	os.MkdirAll(filepath.Join(images, "img"), 0o755)
	os.MkdirAll(ipxe, 0o755)
	for path, n := range map[string]int{filepath.Join(images, "img", "bzImage"): kernel,
		filepath.Join(images, "img", "initrd"): initrd, filepath.Join(ipxe, "ipxe.efi"): 300 << 10} {
		b := make([]byte, n)
		rand.Read(b)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return images, ipxe
}

// rawGet sends one request on its own connection and reads the response raw, so the header's length on the
// wire is known. abortAfter > 0: read that many body bytes, then reset the connection (a client gone mid
// download). It returns the client's port (the server sees the connection by it), header and body bytes.
func rawGet(t *testing.T, addr, method, path, header string, abortAfter int) (port, head, body int) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	port = c.LocalAddr().(*net.TCPAddr).Port
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: nix8s\r\nConnection: close\r\n%s\r\n", method, path, header)
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		head += len(line)
		if err != nil {
			t.Fatalf("%s %s: reading the header: %v", method, path, err)
		}
		if line == "\r\n" {
			break
		}
	}
	if abortAfter > 0 {
		n, err := io.CopyN(io.Discard, br, int64(abortAfter))
		if err != nil {
			t.Fatalf("%s %s: %v after %d body bytes", method, path, err, n)
		}
		c.(*net.TCPConn).SetLinger(0) // close with a reset, as a machine that rebooted mid download
		return port, head, int(n)
	}
	n, err := io.Copy(io.Discard, br)
	if err != nil {
		t.Fatalf("%s %s: %v after %d body bytes", method, path, err, n)
	}
	return port, head, int(n)
}

func TestImageResponsesCounted(t *testing.T) {
	images, ipxe := fileImages(t, 1<<20, 32<<20)
	m := NewMetrics(prometheus.NewRegistry())
	h := &HTTP{Images: DirImages{Dir: images}, IPXEDir: ipxe, Metrics: m}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	defer srv.Close()
	url := "http://" + ln.Addr().String()
	future := time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)
	tests := []struct {
		name, method, path, header string
		kind                       string
		code, body                 int
	}{
		{"a kernel in full", "GET", "/boot/images/img/bzImage", "", "kernel", 200, 1 << 20},
		{"an initrd in full", "GET", "/boot/images/img/initrd", "", "initrd", 200, 32 << 20},
		{"a range", "GET", "/boot/images/img/initrd", "Range: bytes=1000-1999999", "initrd", 206, 1999000},
		{"the last bytes", "GET", "/boot/images/img/bzImage", "Range: bytes=-10", "kernel", 206, 10},
		{"HEAD sends no body", "HEAD", "/boot/images/img/initrd", "", "initrd", 200, 0},
		{"not modified", "GET", "/boot/images/img/bzImage", "If-Modified-Since: " + future, "kernel", 304, 0},
		{"a range past the end", "GET", "/boot/images/img/bzImage", "Range: bytes=9999999-", "kernel", 416, -1},
		{"an iPXE binary", "GET", "/boot/ipxe.efi", "", "efi", 200, 300 << 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bytes0 := counter(m.HTTPBytes.WithLabelValues(tc.kind))
			n0 := counter(m.HTTPTransfers.WithLabelValues(tc.kind, strconv.Itoa(tc.code)))
			req, _ := http.NewRequest(tc.method, url+tc.path, nil)
			if k, v, ok := strings.Cut(tc.header, ": "); ok {
				req.Header.Set(k, v)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tc.code || (tc.body >= 0 && len(got) != tc.body) {
				t.Fatalf("%d with %d bytes, want %d with %d", res.StatusCode, len(got), tc.code, tc.body)
			}
			// The handler counts after the last byte is written, the client may read it before.
			pxetest.WaitFor(t, 10*time.Second, "the transfer to be counted", func() bool {
				return counter(m.HTTPTransfers.WithLabelValues(tc.kind, strconv.Itoa(tc.code))) == n0+1
			})
			if d := counter(m.HTTPBytes.WithLabelValues(tc.kind)) - bytes0; d != float64(len(got)) {
				t.Errorf("counted %v bytes, the client received %d", d, len(got))
			}
		})
	}

	t.Run("a download broken off", func(t *testing.T) {
		bytes0 := counter(m.HTTPBytes.WithLabelValues("initrd"))
		n0 := counter(m.HTTPTransfers.WithLabelValues("initrd", "200"))
		_, _, got := rawGet(t, ln.Addr().String(), "GET", "/boot/images/img/initrd", "", 64<<10)
		pxetest.WaitFor(t, 30*time.Second, "the broken-off transfer to be counted", func() bool {
			return counter(m.HTTPTransfers.WithLabelValues("initrd", "200")) == n0+1
		})
		// What the kernel accepted lies between what the client read and the file; TestImagesSendfile
		// checks it to the byte.
		if d := counter(m.HTTPBytes.WithLabelValues("initrd")) - bytes0; d < float64(got) || d >= 32<<20 {
			t.Errorf("counted %v bytes of a download broken off after %d of %d", d, got, 32<<20)
		}
	})
}

// TestImagesSendfile runs the image handler in a child process under strace and checks, connection by
// connection, that every body byte went out by sendfile(2), the header alone by write(2), and that the byte
// counters equal what the kernel accepted: for whole files, a range, HEAD, and a download broken off.
func TestImagesSendfile(t *testing.T) {
	strace, err := exec.LookPath("strace")
	if err != nil {
		pxetest.Unavailable(t, "the sendfile test needs strace")
	}
	if out, err := exec.Command(strace, "-qq", "-o", "/dev/null", "true").CombinedOutput(); err != nil {
		pxetest.Unavailable(t, "strace cannot trace here (ptrace refused?): %v: %s", err, out)
	}
	const kernel, initrd = 4 << 20, 32 << 20
	images, ipxe := fileImages(t, kernel, initrd)
	trace := filepath.Join(t.TempDir(), "trace")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, strace, "-f", "-ff", "-qq", "-yy", "-e", "trace=write,writev,sendfile", "-o", trace,
		"--", os.Args[0], "-test.run=^TestImageServerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "NIX8S_TEST_IMAGE_SERVER="+images+string(os.PathListSeparator)+ipxe)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	out := bufio.NewReader(stdout)
	addr, err := out.ReadString('\n')
	if err != nil {
		t.Fatalf("the server process printed no address: %v", err)
	}
	addr = strings.TrimSpace(strings.TrimPrefix(addr, "addr "))

	type conn struct {
		name, kind string
		head, body int
		full       bool // the client read the whole response
	}
	conns := map[int]conn{}
	for _, r := range []struct {
		name, method, path, header, kind string
		abort                            int
		want                             int
	}{
		{"kernel", "GET", "/boot/images/img/bzImage", "", "kernel", 0, kernel},
		{"initrd", "GET", "/boot/images/img/initrd", "", "initrd", 0, initrd},
		{"range", "GET", "/boot/images/img/initrd", "Range: bytes=1000-1999999\r\n", "initrd", 0, 1999000},
		{"HEAD", "HEAD", "/boot/images/img/initrd", "", "initrd", 0, 0},
		{"iPXE binary", "GET", "/boot/ipxe.efi", "", "efi", 0, 300 << 10},
		{"broken off", "GET", "/boot/images/img/initrd", "", "initrd", 64 << 10, -1},
	} {
		port, head, body := rawGet(t, addr, r.method, r.path, r.header, r.abort)
		if r.want >= 0 && body != r.want {
			t.Errorf("%s: received %d body bytes, want %d", r.name, body, r.want)
		}
		conns[port] = conn{r.name, r.kind, head, body, r.abort == 0}
	}
	stdin.Close() // the server process shuts down (waiting for its handlers), then prints its counters
	var counted map[string]float64
	if err := json.NewDecoder(out).Decode(&counted); err != nil {
		t.Fatalf("reading the server process's counters: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the server process: %v", err)
	}

	// Lines of strace -yy: sendfile(7<TCP:[127.0.0.1:40001->127.0.0.1:52114]>, 8</tmp/.../initrd>, NULL, 4194304) = 4194304
	call := regexp.MustCompile(`^(write|writev|sendfile)\(\d+<TCP:\[[0-9.]+:\d+->[0-9.]+:(\d+)\]>, .*\) = (\d+)$`)
	written, sent := map[int]int{}, map[int]int{}
	files, _ := filepath.Glob(trace + ".*")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			m := call.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			port, _ := strconv.Atoi(m[2])
			n, _ := strconv.Atoi(m[3])
			if m[1] == "sendfile" {
				sent[port] += n
			} else {
				written[port] += n
			}
		}
	}
	if len(files) == 0 {
		t.Fatal("strace wrote no trace")
	}
	byKind := map[string]int{}
	for port, c := range conns {
		if written[port] != c.head {
			t.Errorf("%s: write(2) sent %d bytes, the header is %d: the body was not all sendfile's", c.name, written[port], c.head)
		}
		if c.full && sent[port] != c.body {
			t.Errorf("%s: sendfile(2) sent %d bytes, the client received a body of %d", c.name, sent[port], c.body)
		}
		if !c.full && (sent[port] < c.body || sent[port] >= initrd) {
			t.Errorf("%s: sendfile(2) sent %d bytes of a download broken off after %d of %d", c.name, sent[port], c.body, initrd)
		}
		byKind[c.kind] += written[port] + sent[port] - c.head
	}
	for _, kind := range []string{"kernel", "initrd", "efi"} {
		if counted[kind] != float64(byKind[kind]) {
			t.Errorf("%s: counted %v bytes, the kernel accepted %d body bytes", kind, counted[kind], byKind[kind])
		}
	}
	if t.Failed() {
		var sb bytes.Buffer
		for _, f := range files {
			b, _ := os.ReadFile(f)
			sb.Write(b)
		}
		t.Logf("trace (%d bytes), first lines:\n%s", sb.Len(), firstBytes(sb.String(), 4000))
	}
}

func firstBytes(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// TestImageServerProcess is the server of TestImagesSendfile, run by it in a child process under strace (a
// process of its own, so that the trace holds only the server's system calls). It serves images on a
// loopback port it prints, and, once its stdin closes, prints the byte counters as JSON.
func TestImageServerProcess(t *testing.T) {
	dirs, ok := os.LookupEnv("NIX8S_TEST_IMAGE_SERVER")
	if !ok {
		t.Skip("the server half of TestImagesSendfile")
	}
	images, ipxe, _ := strings.Cut(dirs, string(os.PathListSeparator))
	m := NewMetrics(nil)
	h := &HTTP{Images: DirImages{Dir: images}, IPXEDir: ipxe, Metrics: m}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	fmt.Printf("addr %s\n", ln.Addr())
	io.Copy(io.Discard, os.Stdin)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	counted := map[string]float64{}
	for _, kind := range []string{"kernel", "initrd", "efi"} {
		counted[kind] = counter(m.HTTPBytes.WithLabelValues(kind))
	}
	json.NewEncoder(os.Stdout).Encode(counted)
}
