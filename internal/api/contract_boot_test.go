package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"golang.org/x/time/rate"

	"github.com/nix8s/nix8s/internal/pxe"
	"github.com/nix8s/nix8s/openapi"
)

// failingMachines is a pxe.Machines whose store is down: what makes the machine-facing endpoints answer 500.
type failingMachines struct{ *pxe.Memory }

func (failingMachines) Discovered(context.Context, net.HardwareAddr, json.RawMessage) error {
	return errors.New("the database is down")
}
func (failingMachines) Progress(context.Context, net.HardwareAddr, string, pxe.Progress) error {
	return errors.New("the database is down")
}

// fullMachines refuses every new machine: as many as allowed wait in state discovered (503).
type fullMachines struct{ *pxe.Memory }

func (fullMachines) Discovered(context.Context, net.HardwareAddr, json.RawMessage) error {
	return pxe.ErrFull
}

// heldMachines holds every discover report until held is closed, saying on entered that one is held: with
// MaxInFlight 1, one held report leaves every other one busy (503).
type heldMachines struct {
	*pxe.Memory
	entered chan struct{}
	held    chan struct{}
}

func (m heldMachines) Discovered(ctx context.Context, _ net.HardwareAddr, _ json.RawMessage) error {
	m.entered <- struct{}{}
	<-m.held
	return nil
}

// TestMachineFacingContract sends the machine-facing endpoints (/boot/*, /machine/v1/*) through the API
// server, as nix8sd mounts them, a request for every status the spec documents for them; every answer is
// checked against openapi/nix8s.yaml (e.req), and every documented status must have been answered, so the spec
// lists no status the server never sends. The machines are pxe's in-memory model (the PostgreSQL-backed one,
// storeboot, is tested with the real store in its own package; the HTTP layer is the same).
func TestMachineFacingContract(t *testing.T) {
	var current atomic.Pointer[pxe.HTTP]
	e := newEnv(t, func(_ *env, o *Options) {
		o.Boot = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { current.Load().ServeHTTP(w, r) })
	})

	images, ipxeDir := t.TempDir(), t.TempDir()
	os.MkdirAll(filepath.Join(images, "inst1"), 0o755)
	os.WriteFile(filepath.Join(images, "inst1", "bzImage"), []byte("kernel"+strings.Repeat("k", 5000)), 0o644)
	os.WriteFile(filepath.Join(images, "inst1", "initrd"), []byte("initrd"), 0o644)
	os.WriteFile(filepath.Join(ipxeDir, "ipxe.efi"), []byte("MZ-ipxe"), 0o644)

	mem := &pxe.Memory{}
	const m1, m2 = "52:54:00:00:00:01", "52:54:00:00:00:02"
	mem.Assign(m1, "prod-server1", "inst1", nil)
	tok, _, err := mem.ArmInstall(m1)
	if err != nil {
		t.Fatal(err)
	}
	var leasedTo atomic.Pointer[net.HardwareAddr] // the MAC the test client (127.0.0.1) holds a lease of; nil: none
	newHTTP := func(machines pxe.Machines, r rate.Limit) *pxe.HTTP {
		return &pxe.HTTP{Booter: mem, Machines: machines, Images: pxe.DirImages{Dir: images}, IPXEDir: ipxeDir,
			BaseURL: "http://10.97.0.1:8081", ReportRate: r,
			ClientMAC: func(net.IP) (net.HardwareAddr, bool) {
				if hw := leasedTo.Load(); hw != nil {
					return *hw, true
				}
				return nil, false
			}}
	}
	normal, failing, limited := newHTTP(mem, rate.Inf), newHTTP(failingMachines{mem}, rate.Inf), newHTTP(mem, rate.Every(time.Hour))
	full := newHTTP(fullMachines{mem}, rate.Inf)
	allLimited := newHTTP(mem, rate.Inf)
	allLimited.DiscoverRate = rate.Every(time.Hour) // reports from all addresses together: a burst of 50
	// busy's one slot is held by a discover report for the whole test.
	hold := heldMachines{mem, make(chan struct{}, 1), make(chan struct{})}
	busy := newHTTP(hold, rate.Inf)
	busy.MaxInFlight = 1
	go busy.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/machine/v1/discover?mac="+m2, strings.NewReader(`{"mac":"`+m2+`"}`)))
	<-hold.entered
	t.Cleanup(func() { close(hold.held) })
	hw2, _ := net.ParseMAC(m2)
	future := time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)
	past := time.Unix(0, 0).UTC().Format(http.TimeFormat)
	progress := "/machine/v1/progress?mac=" + m1
	discover := "/machine/v1/discover?mac=" + m1
	big := `{"mac":"` + m1 + `","x":"` + strings.Repeat("a", 70000) + `"}`

	type step struct {
		name, method, route, path, token string
		body                             any
		headers                          []string
		status                           int
		code                             string // the Error code of a JSON error
		h                                *pxe.HTTP
		leased                           *net.HardwareAddr
		times                            int // send it this often, the last answer counts (rate limits); default 1
	}
	steps := []step{
		{name: "a boot script", method: "GET", route: "/boot/ipxe", path: "/boot/ipxe?mac=" + m1, status: 200},
		{name: "a boot script for a bad MAC", method: "GET", route: "/boot/ipxe", path: "/boot/ipxe?mac=nope", status: 400},
		{name: "a kernel", method: "GET", route: "/boot/images/{id}/{file}", path: "/boot/images/inst1/bzImage", status: 200},
		{name: "part of a kernel", method: "GET", route: "/boot/images/{id}/{file}", path: "/boot/images/inst1/bzImage", headers: []string{"Range: bytes=0-99"}, status: 206},
		{name: "an unchanged kernel", method: "GET", route: "/boot/images/{id}/{file}", path: "/boot/images/inst1/bzImage", headers: []string{"If-Modified-Since: " + future}, status: 304},
		{name: "a kernel changed since", method: "GET", route: "/boot/images/{id}/{file}", path: "/boot/images/inst1/bzImage", headers: []string{"If-Unmodified-Since: " + past}, status: 412},
		{name: "a range beyond the kernel", method: "GET", route: "/boot/images/{id}/{file}", path: "/boot/images/inst1/bzImage", headers: []string{"Range: bytes=900000-"}, status: 416},
		{name: "an unknown image", method: "GET", route: "/boot/images/{id}/{file}", path: "/boot/images/nope/initrd", status: 404},
		{name: "an image name with a NUL", method: "GET", route: "/boot/images/{id}/{file}", path: "/boot/images/inst1/a%00", status: 400},
		{name: "an iPXE binary", method: "GET", route: "/boot/{file}", path: "/boot/ipxe.efi", status: 200},
		{name: "part of an iPXE binary", method: "GET", route: "/boot/{file}", path: "/boot/ipxe.efi", headers: []string{"Range: bytes=0-1"}, status: 206},
		{name: "an unchanged iPXE binary", method: "GET", route: "/boot/{file}", path: "/boot/ipxe.efi", headers: []string{"If-Modified-Since: " + future}, status: 304},
		{name: "an iPXE binary changed since", method: "GET", route: "/boot/{file}", path: "/boot/ipxe.efi", headers: []string{"If-Unmodified-Since: " + past}, status: 412},
		{name: "a range beyond the iPXE binary", method: "GET", route: "/boot/{file}", path: "/boot/ipxe.efi", headers: []string{"Range: bytes=900-"}, status: 416},
		{name: "an iPXE binary that is not there", method: "GET", route: "/boot/{file}", path: "/boot/snponly.efi", status: 404},
		{name: "an iPXE binary name that is not UTF-8", method: "GET", route: "/boot/{file}", path: "/boot/%ff.efi", status: 400},

		{name: "facts", method: "POST", route: "/machine/v1/discover", path: "/machine/v1/discover?mac=" + m2, body: `{"mac":"` + m2 + `"}`, status: 204},
		{name: "facts for a bad MAC", method: "POST", route: "/machine/v1/discover", path: "/machine/v1/discover?mac=nope", body: `{"mac":"nope"}`, status: 400, code: "bad_request"},
		{name: "facts not an object", method: "POST", route: "/machine/v1/discover", path: discover, body: `[1]`, status: 400, code: "bad_request"},
		{name: "facts for another MAC", method: "POST", route: "/machine/v1/discover", path: discover, body: `{"mac":"` + m2 + `"}`, status: 403, code: "forbidden"},
		{name: "facts from a client leased another MAC", method: "POST", route: "/machine/v1/discover", path: discover, body: `{"mac":"` + m1 + `"}`, leased: &hw2, status: 403, code: "forbidden"},
		{name: "facts too large", method: "POST", route: "/machine/v1/discover", path: discover, body: big, status: 413, code: "bad_request"},
		{name: "facts too often", method: "POST", route: "/machine/v1/discover", path: "/machine/v1/discover?mac=" + m2, body: `{"mac":"` + m2 + `"}`, h: limited, times: 11, status: 429, code: "too_many_requests"},
		{name: "facts not recorded", method: "POST", route: "/machine/v1/discover", path: discover, body: `{"mac":"` + m1 + `"}`, h: failing, status: 500, code: "internal"},
		{name: "facts too often from all addresses", method: "POST", route: "/machine/v1/discover", path: "/machine/v1/discover?mac=" + m2, body: `{"mac":"` + m2 + `"}`, h: allLimited, times: 51, status: 429, code: "too_many_requests"},
		{name: "facts of a new machine while too many wait discovered", method: "POST", route: "/machine/v1/discover", path: discover, body: `{"mac":"` + m1 + `"}`, h: full, status: 503, code: "unavailable"},
		{name: "facts while the server is busy", method: "POST", route: "/machine/v1/discover", path: discover, body: `{"mac":"` + m1 + `"}`, h: busy, status: 503, code: "unavailable"},

		{name: "progress for a bad MAC", method: "POST", route: "/machine/v1/progress", path: "/machine/v1/progress?mac=nope", token: tok, body: `{"generation":1,"phase":"disko"}`, status: 400, code: "bad_request"},
		{name: "progress without a token", method: "POST", route: "/machine/v1/progress", path: progress, body: `{"generation":1,"phase":"disko"}`, status: 401, code: "unauthorized"},
		{name: "progress with a wrong token", method: "POST", route: "/machine/v1/progress", path: progress, token: "x" + tok, body: `{"generation":1,"phase":"disko"}`, status: 403, code: "forbidden"},
		{name: "progress from a client leased another MAC", method: "POST", route: "/machine/v1/progress", path: progress, token: tok, body: `{"generation":1,"phase":"disko"}`, leased: &hw2, status: 403, code: "forbidden"},
		{name: "progress with unknown fields", method: "POST", route: "/machine/v1/progress", path: progress, token: tok, body: `{"generation":1,"phase":"disko","state":"ready"}`, status: 400, code: "bad_request"},
		{name: "progress too large", method: "POST", route: "/machine/v1/progress", path: progress, token: tok, body: `{"generation":1,"phase":"` + strings.Repeat("a", 70000) + `"}`, status: 413, code: "bad_request"},
		{name: "progress too often", method: "POST", route: "/machine/v1/progress", path: progress, token: tok, body: `{"generation":1,"phase":"disko"}`, h: limited, times: 11, status: 429, code: "too_many_requests"},
		{name: "progress not recorded", method: "POST", route: "/machine/v1/progress", path: progress, token: tok, body: `{"generation":1,"phase":"disko"}`, h: failing, status: 500, code: "internal"},
		{name: "progress while the server is busy", method: "POST", route: "/machine/v1/progress", path: progress, token: tok, body: `{"generation":1,"phase":"disko"}`, h: busy, status: 503, code: "unavailable"},
		{name: "progress", method: "POST", route: "/machine/v1/progress", path: progress, token: tok, body: `{"generation":1,"phase":"disko"}`, status: 204},
	}
	answered := map[string]bool{} // "METHOD route status"
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			h := s.h
			if h == nil {
				h = normal
			}
			current.Store(h)
			leasedTo.Store(s.leased)
			var r resp
			for range max(s.times, 1) {
				r = e.req(s.method, s.path, s.token, s.body, s.headers...)
			}
			if r.status != s.status {
				t.Fatalf("status %d, want %d: %s", r.status, s.status, r.body)
			}
			if strings.HasPrefix(s.route, "/machine/v1/") && s.status >= 400 {
				expect(t, r, s.status, s.code)
			}
			answered[fmt.Sprintf("%s %s %d", s.method, s.route, s.status)] = true
		})
	}

	// Without --pxe every machine-facing endpoint answers 501 (the API server's own answer).
	bare := httptest.NewServer(New(Options{Store: e.st, Inventory: e.inv}))
	t.Cleanup(bare.Close)
	off := *e
	off.url = bare.URL
	for _, s := range []struct{ method, route, path string }{
		{"GET", "/boot/ipxe", "/boot/ipxe?mac=" + m1}, {"GET", "/boot/images/{id}/{file}", "/boot/images/inst1/initrd"},
		{"GET", "/boot/{file}", "/boot/ipxe.efi"}, {"POST", "/machine/v1/discover", discover}, {"POST", "/machine/v1/progress", progress},
	} {
		expect(t, off.req(s.method, s.path, tok, `{}`), 501, "not_implemented")
		answered[fmt.Sprintf("%s %s 501", s.method, s.route)] = true
	}

	doc, err := openapi3.NewLoader().LoadFromData(openapi.Spec)
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for path, item := range doc.Paths.Map() {
		if !strings.HasPrefix(path, "/boot/") && !strings.HasPrefix(path, "/machine/") {
			continue
		}
		for method, op := range item.Operations() {
			for status := range op.Responses.Map() {
				documented = append(documented, fmt.Sprintf("%s %s %s", method, path, status))
			}
		}
	}
	slices.Sort(documented)
	for _, d := range documented {
		if !answered[d] {
			t.Errorf("the spec documents %s, which no request here was answered with", d)
		}
	}
	if len(documented) < len(answered) {
		t.Errorf("%d answers seen, only %d documented: %v", len(answered), len(documented), documented)
	}
}
