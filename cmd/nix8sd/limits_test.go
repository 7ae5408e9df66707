package main

// nix8sd serve under connection floods on its one listener (operator API, /readyz and the machine-facing
// /boot and /machine/v1 endpoints): everything real, a PostgreSQL with the daemon's migrations, clients on
// loopback that bind their own source address (127.0.0.1 floods, 127.0.0.2 is the operator, 127.0.0.3 a second
// flooder), so the per-client caps see different clients. Every loop is bounded; the time bounds only say
// "did it happen at all".

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nix8s/nix8s/internal/pgtest"
	"github.com/nix8s/nix8s/internal/pxetest"
	"github.com/nix8s/nix8s/internal/store"
)

// clientFrom is an HTTP client whose connections come from the loopback address ip, one per request.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// get answers the status and body of GET path on addr from the loopback address ip (with tok as bearer
// token, if set), on a connection of its own that it reads until the daemon closes it: when get returns, the
// daemon no longer counts that connection, so the next one sees exact counts.
func get(t *testing.T, ip, addr, path, tok string) (int, string) {
	t.Helper()
	c := dialFrom(t, ip, addr, 1)[0]
	auth := ""
	if tok != "" {
		auth = "Authorization: Bearer " + tok + "\r\n"
	}
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: nix8sd\r\nConnection: close\r\n%s\r\n", path, auth)
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("GET %s from %s: %v", path, ip, err)
	}
	b, _ := io.ReadAll(res.Body)
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Fatalf("GET %s from %s: waiting for the daemon to close: %v", path, ip, err)
	}
	c.Close()
	return res.StatusCode, string(b)
}

// sampleBy reads one sample of /metrics from ip (0 when absent).
func sampleBy(t *testing.T, ip, addr, sample string) float64 {
	t.Helper()
	code, body := get(t, ip, addr, "/metrics", "")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return 0
}

// dialFrom opens n TCP connections from ip to addr, one after the other, and sends nothing on them.
func dialFrom(t *testing.T, ip, addr string, n int) []net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	cs := make([]net.Conn, 0, n)
	for range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d from %s: %v", len(cs), ip, err)
		}
		cs = append(cs, c)
	}
	t.Cleanup(func() {
		for _, c := range cs {
			c.Close()
		}
	})
	return cs
}

// closedWithin: the daemon closed c (EOF or reset) within d; data it sent first is skipped.
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// openSet reports which of cs the daemon has not closed: each is given 300 ms for a close to arrive.
func openSet(cs []net.Conn) []bool {
	open := make([]bool, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			_, err := c.Read(make([]byte, 1))
			var ne net.Error
			open[i] = errors.As(err, &ne) && ne.Timeout()
		})
	}
	wg.Wait()
	return open
}

func count(bs []bool, want bool) int {
	n := 0
	for _, b := range bs {
		if b == want {
			n++
		}
	}
	return n
}

func adminToken(t *testing.T, dir string) (string, string) {
	tok, _ := store.NewToken()
	f := filepath.Join(dir, "admin-token")
	os.WriteFile(f, []byte(tok), 0o600)
	return tok, f
}

// An idle flood from one address, then from a second one, beyond both caps (--http-max-client-conns 30,
// --http-max-conns 40): the daemon closes the longest-idle connections, never holds more than its cap, counts
// each closed one, and the operator (another address) and even a newcomer from the flooding address are
// answered at once. The timeouts are long here, so that only the caps close connections.
func TestServeIdleFloodKeepsTheOperatorAPI(t *testing.T) {
	dir := t.TempDir()
	tok, tokFile := adminToken(t, dir)
	addr := freeAddr(t)
	_, stop := serveAt(t, addr, map[string]string{"DATABASE_URL": pgtest.Database(t)}, "--state-dir", dir, "--admin-token-file", tokFile,
		"--http-max-conns", "40", "--http-max-client-conns", "30", "--http-header-timeout", "10m", "--http-idle-timeout", "10m")
	defer func() {
		if code, stderr := stop(); code != 0 || t.Failed() {
			t.Logf("nix8sd exited %d:\n%s", code, tail(stderr, 8000))
		}
	}()
	const op = "127.0.0.2"
	// serve's readiness check left a keep-alive connection from 127.0.0.1: close it, so the counts are exact.
	http.DefaultClient.CloseIdleConnections()
	pxetest.WaitFor(t, 10*time.Second, "the readiness check's connection to close", func() bool {
		return sampleBy(t, op, addr, "nix8s_http_connections") == 1 // the scrape's own
	})
	evicted := `nix8s_http_connections_refused_total{reason="evicted"}`
	before := sampleBy(t, op, addr, evicted)

	// 60 idle connections from 127.0.0.1: the per-client cap closes the oldest 30.
	as := dialFrom(t, "127.0.0.1", addr, 60)
	for i, c := range as[:30] {
		if !closedWithin(c, 30*time.Second) {
			t.Fatalf("idle connection %d of 60 from one address is still open over the per-client cap of 30", i)
		}
	}
	if open := openSet(as[30:]); count(open, true) != 30 {
		t.Fatalf("the 30 newest connections of the flood: %d open, want 30", count(open, true))
	}
	// A newcomer from the flooding address, at its cap, is answered: its oldest idle connection makes room.
	if code, body := get(t, "127.0.0.1", addr, "/readyz", ""); code != 200 {
		t.Errorf("/readyz from the flooding address: %d %s", code, body)
	}
	if !closedWithin(as[30], 30*time.Second) {
		t.Fatal("the oldest connection left of the flood is still open after a newcomer of its address came in")
	}
	// 30 more from 127.0.0.3: the overall cap of 40 closes the oldest idle ones, which are 127.0.0.1's.
	cs := dialFrom(t, "127.0.0.3", addr, 30)
	for i, c := range as[31:50] {
		if !closedWithin(c, 30*time.Second) {
			t.Fatalf("connection %d from 127.0.0.1 is still open over the overall cap of 40", 31+i)
		}
	}
	if open := openSet(append(as[50:], cs...)); count(open, true) != 40 {
		t.Fatalf("after both floods %d of the newest 40 connections are open, want 40", count(open, true))
	}

	// The operator, from another address, at a full listener: /readyz and an authenticated call answer.
	if code, body := get(t, op, addr, "/readyz", ""); code != 200 {
		t.Errorf("/readyz during the flood: %d %s", code, body)
	}
	if code, body := get(t, op, addr, "/v1/clusters", tok); code != 200 {
		t.Errorf("GET /v1/clusters during the flood: %d %s", code, body)
	}
	if n := sampleBy(t, op, addr, "nix8s_http_connections"); n > 40 {
		t.Errorf("%v connections open, over --http-max-conns 40", n)
	}
	// 30 + 1 by the per-client cap, 19 by the overall one, 1 for the operator's first call (the later ones find
	// the slot it freed).
	if n := sampleBy(t, op, addr, evicted) - before; n != 51 {
		t.Errorf("%s rose by %v, want 51", evicted, n)
	}
	// The flooders' connections the daemon kept are still theirs: the 30 from 127.0.0.3 are the newest.
	if open := openSet(cs); count(open, true) != 30 {
		t.Errorf("%d of 127.0.0.3's 30 connections open, want 30", count(open, true))
	}
}

// Short timeouts (--http-header-timeout 1s, --http-idle-timeout 1s, --http-read-timeout 2s): a connection that
// never sends, a keep-alive connection after its request, a header that never ends (slowloris: a line every
// 200 ms) and a body that never ends are all closed, and the daemon holds none of them afterwards.
func TestServeTimeoutsCloseSlowAndIdleConnections(t *testing.T) {
	dir := t.TempDir()
	tok, tokFile := adminToken(t, dir)
	addr := freeAddr(t)
	_, stop := serveAt(t, addr, map[string]string{"DATABASE_URL": pgtest.Database(t)}, "--state-dir", dir, "--admin-token-file", tokFile,
		"--http-max-conns", "40", "--http-max-client-conns", "30", "--http-header-timeout", "1s", "--http-idle-timeout", "1s", "--http-read-timeout", "2s")
	defer func() {
		if code, stderr := stop(); code != 0 || t.Failed() {
			t.Logf("nix8sd exited %d:\n%s", code, tail(stderr, 8000))
		}
	}()
	const op = "127.0.0.2"

	silent := dialFrom(t, "127.0.0.1", addr, 5)
	for i, c := range silent {
		if !closedWithin(c, 30*time.Second) {
			t.Errorf("a connection that never sent a request (%d) is open after 30s", i)
		}
	}

	keep := dialFrom(t, "127.0.0.1", addr, 1)[0]
	io.WriteString(keep, "GET /healthz HTTP/1.1\r\nHost: nix8sd\r\n\r\n")
	keep.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b := make([]byte, 12); func() bool { _, err := io.ReadFull(keep, b); return err != nil || string(b) != "HTTP/1.1 200" }() {
		t.Fatalf("keep-alive request: %q", b)
	}
	if !closedWithin(keep, 30*time.Second) {
		t.Error("an idle keep-alive connection is open after 30s")
	}

	slow := dialFrom(t, "127.0.0.1", addr, 1)[0]
	io.WriteString(slow, "GET /healthz HTTP/1.1\r\nHost: nix8sd\r\n")
	cut := false
	for i := 0; i < 150 && !cut; i++ {
		if _, err := fmt.Fprintf(slow, "X-Slow-%d: still sending\r\n", i); err != nil {
			cut = true
			break
		}
		cut = closedWithin(slow, 200*time.Millisecond)
	}
	if !cut {
		t.Error("a header that never ends (a line every 200 ms) was not cut in 30s")
	}

	body := dialFrom(t, "127.0.0.1", addr, 1)[0]
	fmt.Fprintf(body, "PUT /v1/config HTTP/1.1\r\nHost: nix8sd\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{", tok)
	cut = false
	for i := 0; i < 150 && !cut; i++ {
		if _, err := io.WriteString(body, " "); err != nil {
			cut = true
			break
		}
		cut = closedWithin(body, 200*time.Millisecond)
	}
	if !cut {
		t.Error("a body that never ends (a byte every 200 ms) was not cut in 30s")
	}

	pxetest.WaitFor(t, 30*time.Second, "the daemon to hold no connection but the scrape's", func() bool {
		return sampleBy(t, op, addr, "nix8s_http_connections") == 1
	})
	if code, _ := get(t, op, addr, "/v1/clusters", tok); code != 200 {
		t.Errorf("GET /v1/clusters after the slow clients: %d", code)
	}
}

// A flood of boot-script requests while the machines table is locked (a stalled database, as under a flood of
// slow queries): MaxInFlight of them (pxe.HTTP's default 8) hold their database connections, the rest are
// told to wait and ask again (a busy wait script, counted) instead of queueing for the database, and /readyz
// and the operator API keep answering from the pool's other connections. When the lock goes, the held ones
// get their scripts.
func TestServeBootFloodKeepsTheOperatorAPI(t *testing.T) {
	requireServeBoot(t)
	dir := t.TempDir()
	images := filepath.Join(dir, "images")
	os.MkdirAll(filepath.Join(images, "discovery"), 0o755)
	os.WriteFile(filepath.Join(images, "discovery", "bzImage"), []byte("k"), 0o644)
	os.WriteFile(filepath.Join(images, "discovery", "initrd"), []byte("i"), 0o644)
	tok, tokFile := adminToken(t, dir)
	port := func() string {
		c, _ := net.ListenPacket("udp4", "127.0.0.1:0")
		defer c.Close()
		return fmt.Sprint(c.LocalAddr().(*net.UDPAddr).Port)
	}
	db := pgtest.Database(t)
	url, stop := serve(t, map[string]string{"DATABASE_URL": db}, "--state-dir", dir, "--admin-token-file", tokFile,
		"--pxe-interface", "lo", "--pxe-ip", "127.0.0.1", "--pxe-images", images, "--dhcp-port", port(), "--tftp-port", port(),
		"--http-max-conns", "40", "--http-max-client-conns", "30")
	defer func() {
		if code, stderr := stop(); code != 0 || t.Failed() {
			t.Logf("nix8sd exited %d:\n%s", code, tail(stderr, 8000))
		}
	}()
	const op = "127.0.0.2"
	addr := strings.TrimPrefix(url, "http://")
	busy := `nix8s_pxe_boots_total{outcome="busy"}`
	before := sampleBy(t, op, addr, busy)

	ctx := context.Background()
	pg, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(ctx)
	lock, err := pg.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.Exec(ctx, "LOCK TABLE machines IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	unlocked := false
	defer func() {
		if !unlocked {
			lock.Rollback(ctx)
		}
	}()

	// 30 machines at once from one address (its cap), beyond the 8 in flight.
	const flood, inFlight = 30, 8
	type answer struct {
		code int
		body string
		err  error
	}
	answers := make(chan answer, flood)
	machines := clientFrom("127.0.0.3")
	for i := range flood {
		go func() {
			res, err := machines.Get(fmt.Sprintf("%s/boot/ipxe?mac=52:54:00:cc:00:%02x", url, i))
			if err != nil {
				answers <- answer{err: err}
				return
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			answers <- answer{code: res.StatusCode, body: string(b)}
		}()
	}
	next := func(what string) answer {
		t.Helper()
		select {
		case a := <-answers:
			if a.err != nil || a.code != 200 || !strings.HasPrefix(a.body, "#!ipxe\n") {
				t.Fatalf("%s: %d %v\n%s", what, a.code, a.err, a.body)
			}
			return a
		case <-time.After(60 * time.Second):
			t.Fatalf("%s: no answer within 60s", what)
		}
		return answer{}
	}
	for i := range flood - inFlight {
		if a := next(fmt.Sprintf("busy answer %d", i)); !strings.Contains(a.body, "busy") || !strings.Contains(a.body, "chain --replace") {
			t.Fatalf("busy answer %d is not a wait script:\n%s", i, a.body)
		}
	}
	// The 8 in flight wait for the lock; the operator does not.
	if code, body := get(t, op, addr, "/readyz", ""); code != 200 {
		t.Errorf("/readyz during the boot flood: %d %s", code, body)
	}
	if code, body := get(t, op, addr, "/v1/clusters", tok); code != 200 {
		t.Errorf("GET /v1/clusters during the boot flood: %d %s", code, body)
	}
	select {
	case a := <-answers:
		t.Fatalf("a request in flight was answered while the machines table was locked: %+v", a)
	default:
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	unlocked = true
	for i := range inFlight {
		if a := next(fmt.Sprintf("held request %d", i)); !strings.Contains(a.body, "images/discovery/bzImage") {
			t.Errorf("held request %d did not get the discovery script:\n%s", i, a.body)
		}
	}
	if n := sampleBy(t, op, addr, busy) - before; n != flood-inFlight {
		t.Errorf("%s rose by %v, want %d", busy, n, flood-inFlight)
	}
}

// Many addresses on the provisioning LAN each holding busy image downloads (read at a rate above the least one,
// so nothing times them out) fill the machine listener (--machine-listen): newcomers there are closed and
// counted, but the operator listener (--listen) is another budget: /readyz and an authenticated /v1 call
// answer. The machine listener never serves /v1 or /readyz, the operator listener never /boot, and the boot
// scripts name the machine listener's port.
func TestServeBusyMachineFloodKeepsTheOperatorAPI(t *testing.T) {
	requireServeBoot(t)
	dir := t.TempDir()
	images := filepath.Join(dir, "images")
	os.MkdirAll(filepath.Join(images, "discovery"), 0o755)
	// A kernel of 1 GiB (sparse): no download of it ends while the test runs.
	if f, err := os.Create(filepath.Join(images, "discovery", "bzImage")); err != nil || f.Truncate(1<<30) != nil || f.Close() != nil {
		t.Fatalf("the big kernel: %v", err)
	}
	os.WriteFile(filepath.Join(images, "discovery", "initrd"), []byte("i"), 0o644)
	tok, tokFile := adminToken(t, dir)
	port := func() string {
		c, _ := net.ListenPacket("udp4", "127.0.0.1:0")
		defer c.Close()
		return fmt.Sprint(c.LocalAddr().(*net.UDPAddr).Port)
	}
	addr, maddr := freeAddr(t), freeAddr(t)
	const maxConns, perClient = 20, 2
	_, stop := serveAt(t, addr, map[string]string{"DATABASE_URL": pgtest.Database(t)}, "--state-dir", dir, "--admin-token-file", tokFile,
		"--pxe-interface", "lo", "--pxe-ip", "127.0.0.1", "--pxe-images", images, "--dhcp-port", port(), "--tftp-port", port(),
		"--http-max-conns", "40", "--http-max-client-conns", "30",
		"--machine-listen", maddr, "--machine-http-max-conns", fmt.Sprint(maxConns), "--machine-http-max-client-conns", fmt.Sprint(perClient))
	defer func() {
		if code, stderr := stop(); code != 0 || t.Failed() {
			t.Logf("nix8sd exited %d:\n%s", code, tail(stderr, 8000))
		}
	}()
	const op = "127.0.0.2"

	// Each listener serves its side only; the boot script sends machines to the machine listener.
	_, mport, _ := net.SplitHostPort(maddr)
	if code, body := get(t, "127.0.0.3", maddr, "/boot/ipxe?mac=52:54:00:cc:01:01", ""); code != 200 ||
		!strings.Contains(body, "http://127.0.0.1:"+mport+"/boot/images/discovery/bzImage") {
		t.Errorf("boot script on the machine listener: %d\n%s", code, body)
	}
	for _, path := range []string{"/v1/clusters", "/readyz", "/metrics", "/v1/openapi.yaml", "/boot/../v1/clusters", "/%62oot/x"} {
		if code, body := get(t, "127.0.0.3", maddr, path, tok); code != 404 || !strings.Contains(body, `"code":"not_found"`) {
			t.Errorf("GET %s with an admin token on the machine listener: %d %s", path, code, body)
		}
	}
	if code, body := get(t, op, addr, "/boot/ipxe?mac=52:54:00:cc:01:01", ""); code != 404 || !strings.Contains(body, "--machine-listen") {
		t.Errorf("boot script on the operator listener: %d %s", code, body)
	}

	// The flood: perClient downloads from each of maxConns/perClient addresses, each read slowly for good.
	var flood []net.Conn
	stopReading := make(chan struct{})
	var readers sync.WaitGroup
	var downloading atomic.Int32
	defer func() {
		close(stopReading)
		for _, c := range flood {
			c.Close()
		}
		readers.Wait()
	}()
	for i := range maxConns / perClient {
		ip := fmt.Sprintf("127.0.0.%d", 10+i)
		for _, c := range dialFrom(t, ip, maddr, perClient) {
			flood = append(flood, c)
			fmt.Fprint(c, "GET /boot/images/discovery/bzImage HTTP/1.1\r\nHost: nix8sd\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			br := bufio.NewReader(c)
			res, err := http.ReadResponse(br, nil)
			if err != nil || res.StatusCode != 200 {
				t.Fatalf("download from %s: %v %v", ip, res, err)
			}
			c.SetReadDeadline(time.Time{})
			downloading.Add(1)
			readers.Go(func() {
				defer downloading.Add(-1)
				buf := make([]byte, 64<<10)
				for {
					select {
					case <-stopReading:
						return
					case <-time.After(500 * time.Millisecond):
					}
					if _, err := io.ReadFull(res.Body, buf); err != nil {
						return
					}
				}
			})
		}
	}
	pxetest.WaitFor(t, 30*time.Second, "the machine listener to hold the flood's downloads", func() bool {
		return sampleBy(t, op, addr, "nix8s_machine_http_connections") == maxConns
	})
	full := `nix8s_machine_http_connections_refused_total{reason="full"}`
	before := sampleBy(t, op, addr, full)

	// Newcomers to the full machine listener, from a new address and from a flooding one: closed unanswered.
	for _, ip := range []string{"127.0.0.30", "127.0.0.10"} {
		c := dialFrom(t, ip, maddr, 1)[0]
		fmt.Fprint(c, "GET /boot/ipxe?mac=52:54:00:cc:01:02 HTTP/1.1\r\nHost: nix8sd\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if b, err := io.ReadAll(c); len(b) > 0 || isTimeout(err) {
			t.Errorf("a newcomer from %s to the full machine listener: %q %v, want it closed unanswered", ip, b, err)
		}
	}
	if n := sampleBy(t, op, addr, full) - before; n != 2 {
		t.Errorf("%s rose by %v, want 2", full, n)
	}

	// The operator listener is untouched: /readyz and an authenticated call answer at once.
	if code, body := get(t, op, addr, "/readyz", ""); code != 200 {
		t.Errorf("/readyz during the machine flood: %d %s", code, body)
	}
	if code, body := get(t, op, addr, "/v1/clusters", tok); code != 200 {
		t.Errorf("GET /v1/clusters during the machine flood: %d %s", code, body)
	}
	if n := sampleBy(t, op, addr, "nix8s_machine_http_connections"); n != maxConns {
		t.Errorf("%v connections open on the machine listener after the operator's calls, want the flood's %d", n, maxConns)
	}
	if n := downloading.Load(); n != maxConns {
		t.Errorf("%d of the flood's %d downloads still going, want all", n, maxConns)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
