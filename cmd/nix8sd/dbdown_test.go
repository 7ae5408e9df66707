package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix8s/nix8s/internal/pgembed"
)

// The machine-facing endpoints of a running nix8sd whose PostgreSQL (a private one, really stopped) went
// away: boot scripts are wait scripts that ask again (never `exit 1`, which would send a machine to its next
// boot device, maybe an old disk), reports are 503 with Retry-After, so the discovery image and the installer
// send them again; images, iPXE binaries and TFTP need no database and keep being served. No answer names
// the database; the log does.
func TestServeMachineEndpointsWhileTheDatabaseIsDown(t *testing.T) {
	requireServeBoot(t)
	ctx := context.Background()
	pgdir, err := os.MkdirTemp("", "nix8s-pgdown-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pgdir) })
	_ = os.Chmod(pgdir, 0o711) // the server runs as an unprivileged user when the test runs as root
	const pgport, dbname = 5498, "nix8s_down_boot"
	pg, err := pgembed.Start(ctx, pgembed.Options{Dir: pgdir, Port: pgport})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Stop() })
	dbURL, err := pg.CreateDatabase(ctx, dbname)
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	images := filepath.Join(dir, "images")
	os.MkdirAll(filepath.Join(images, "discovery"), 0o755)
	os.WriteFile(filepath.Join(images, "discovery", "bzImage"), []byte("kernel"), 0o644)
	os.WriteFile(filepath.Join(images, "discovery", "initrd"), []byte("initrd"), 0o644)
	port := func() string {
		c, _ := net.ListenPacket("udp4", "127.0.0.1:0")
		defer c.Close()
		return fmt.Sprint(c.LocalAddr().(*net.UDPAddr).Port)
	}
	tftpPort := port()
	maddr := freeAddr(t)
	_, stop := serve(t, map[string]string{"DATABASE_URL": dbURL}, "--state-dir", dir,
		"--pxe-interface", "lo", "--pxe-ip", "127.0.0.1", "--pxe-images", images, "--dhcp-port", port(), "--tftp-port", tftpPort,
		"--machine-listen", maddr, "--pxe-wait", "7s")
	stopped := false
	var stderr string
	defer func() {
		if !stopped {
			var code int
			code, stderr = stop()
			if t.Failed() {
				t.Logf("nix8sd exited %d:\n%s", code, tail(stderr, 8000))
			}
		}
	}()
	base := "http://" + maddr
	type answer struct {
		code   int
		header http.Header
		body   string
	}
	do := func(method, path, token, body string) answer {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		res, err := clientFrom("127.0.0.5").Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return answer{res.StatusCode, res.Header, string(b)}
	}
	const mac = "52:54:00:cc:02:01"
	if a := do("GET", "/boot/ipxe?mac="+mac, "", ""); a.code != 200 || !strings.Contains(a.body, "images/discovery/bzImage") {
		t.Fatalf("boot script with the database up: %d\n%s", a.code, a.body)
	}
	// A known machine: discovered while the database was up.
	if a := do("POST", "/machine/v1/discover?mac="+mac, "", `{"mac": "`+mac+`"}`); a.code != 204 {
		t.Fatalf("discover report with the database up: %d\n%s", a.code, a.body)
	}

	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	secrets := []string{pgdir, dbname, fmt.Sprint(pgport), "user=", pgembed.Superuser + "@", "dial", "failed to connect", "SQLSTATE", "postgres"}
	leaks := func(t *testing.T, a answer) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(a.body, s) {
				t.Errorf("the answer names %q:\n%s", s, a.body)
			}
		}
	}
	// Twice each: the pool's idle connections die with the server, then there is no server to dial.
	for i := range 2 {
		t.Run(fmt.Sprintf("boot script of a new machine %d", i), func(t *testing.T) {
			a := do("GET", "/boot/ipxe?mac=52:54:00:cc:02:0"+fmt.Sprint(2+i), "", "")
			if a.code != 200 || !strings.HasPrefix(a.body, "#!ipxe\n") || !strings.Contains(a.body, "sleep 7") ||
				!strings.Contains(a.body, "chain --replace --autofree "+base+"/boot/ipxe?mac=") || strings.Contains(a.body, "\nexit") {
				t.Errorf("%d, want a wait script:\n%s", a.code, a.body)
			}
			leaks(t, a)
		})
		t.Run(fmt.Sprintf("boot script of a known machine %d", i), func(t *testing.T) {
			a := do("GET", "/boot/ipxe?mac="+mac, "", "")
			if a.code != 200 || !strings.Contains(a.body, "chain --replace --autofree "+base+"/boot/ipxe?mac="+mac) || strings.Contains(a.body, "\nexit") {
				t.Errorf("%d, want a wait script:\n%s", a.code, a.body)
			}
			leaks(t, a)
		})
		t.Run(fmt.Sprintf("discover report %d", i), func(t *testing.T) {
			a := do("POST", "/machine/v1/discover?mac="+mac, "", `{"mac": "`+mac+`"}`)
			if a.code != 503 || a.header.Get("Retry-After") == "" || !strings.Contains(a.body, `"code":"unavailable"`) {
				t.Errorf("%d (Retry-After %q), want 503 unavailable with Retry-After:\n%s", a.code, a.header.Get("Retry-After"), a.body)
			}
			leaks(t, a)
		})
		t.Run(fmt.Sprintf("progress report %d", i), func(t *testing.T) {
			a := do("POST", "/machine/v1/progress?mac="+mac, "nix8s_install_token", `{"generation": 1, "phase": "disko"}`)
			if a.code != 503 || a.header.Get("Retry-After") == "" || !strings.Contains(a.body, `"code":"unavailable"`) {
				t.Errorf("%d (Retry-After %q), want 503 unavailable with Retry-After:\n%s", a.code, a.header.Get("Retry-After"), a.body)
			}
			leaks(t, a)
		})
	}
	// What needs no database is still served.
	if a := do("GET", "/boot/images/discovery/bzImage", "", ""); a.code != 200 || a.body != "kernel" {
		t.Errorf("image download with the database down: %d %q", a.code, a.body)
	}
	if a := do("GET", "/boot/undionly.kpxe", "", ""); a.code != 200 || len(a.body) == 0 {
		t.Errorf("iPXE binary over HTTP with the database down: %d, %d bytes", a.code, len(a.body))
	}
	want, _ := os.ReadFile("/usr/lib/ipxe/undionly.kpxe")
	out, err := exec.Command("curl", "-sS", "--max-time", "30", "tftp://127.0.0.1:"+tftpPort+"/undionly.kpxe").Output()
	if err != nil || string(out) != string(want) {
		t.Errorf("undionly.kpxe over TFTP with the database down: %v, %d bytes of %d", err, len(out), len(want))
	}

	// The log has what the answers leave out.
	var code int
	code, stderr = stop()
	stopped = true
	if !strings.Contains(stderr, pgdir) {
		t.Errorf("the log does not say how the database was reached (exit %d):\n%s", code, tail(stderr, 8000))
	}
}
