package pxe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// HTTP serves the boot and machine-facing endpoints:
//
//	GET  /boot/ipxe?mac=MAC                    iPXE script for that MAC (install, discover, local disk, exit)
//	GET  /boot/images/ID/{bzImage,initrd}      netboot images, with range requests
//	GET  /boot/ipxe.efi, /boot/undionly.kpxe   iPXE binaries for UEFI HTTP boot
//	POST /machine/v1/discover?mac=MAC          facts JSON from the discovery image
//	POST /machine/v1/progress?mac=MAC          install progress, Authorization: Bearer <one-time token>; the done
//	                                           report may carry the installed system's public host key
//
// Nothing here hands out secrets: what a boot script holds is derived from the MAC alone, except the
// one-time phone-home token, which is handed out once per armed install (see TokenClaimer).
type HTTP struct {
	Booter   Booter
	Machines Machines
	Images   ImageSource
	// BaseURL is how machines reach this server, e.g. http://10.0.0.1:8081 (no trailing slash).
	BaseURL string
	// IPXEDir holds undionly.kpxe and ipxe.efi.
	IPXEDir string
	// Files are the binaries of IPXEDir served under /boot/ for UEFI HTTP boot (BootFiles.Files; default
	// undionly.kpxe, ipxe.efi, snponly.efi).
	Files []string
	// ClientMAC maps a client IP to the MAC that leased it (full mode), to refuse reports for another MAC;
	// nil or false: no check beyond the request itself.
	ClientMAC func(ip net.IP) (net.HardwareAddr, bool)
	Metrics   *Metrics
	Logger    *slog.Logger
	// MaxReport bounds a machine's request body (default 64 KiB); ReportRate limits reports per client IP
	// (default 2/s, burst 10).
	MaxReport  int64
	ReportRate rate.Limit
	// DiscoverRate limits discover reports from all addresses together (default 10/s, burst 50): addresses are
	// cheap on a LAN, so the per-address limit alone does not bound how fast machines are created.
	DiscoverRate rate.Limit
	// MaxInFlight bounds the boot scripts and reports handled at once (default 8), below the database pool
	// (16), so that a flood of machines leaves the operator API and /readyz connections to the database. A
	// script over it is a wait script; a report is answered 503 and sent again.
	MaxInFlight int
	// WaitInterval is how long a waiting machine sleeps before asking again (default 15 s).
	WaitInterval time.Duration
	// Unavailable, when set, says whether an error of the Booter or Machines means that the database cannot
	// be reached (nix8sd: internal/api's check). Then a script is a wait script and a report 503 with
	// Retry-After, so the machine asks again instead of falling through to its next boot device or giving up.
	Unavailable func(ctx context.Context, err error) bool

	once        sync.Once
	mux         *http.ServeMux
	limitMu     sync.Mutex
	limiters    map[string]*rate.Limiter
	allDiscover *rate.Limiter
	inFlight    chan struct{}
}

// ErrFull is what Machines.Discovered answers for a new machine while as many as allowed wait in state
// discovered (503: the discovery image tries again).
var ErrFull = errors.New("too many machines wait in state discovered; assign or forget some")

func (h *HTTP) init() {
	h.once.Do(func() {
		if h.Logger == nil {
			h.Logger = slog.New(slog.DiscardHandler)
		}
		if h.MaxReport == 0 {
			h.MaxReport = 64 << 10
		}
		if h.ReportRate == 0 {
			h.ReportRate = 2
		}
		h.limiters = map[string]*rate.Limiter{}
		if h.DiscoverRate == 0 {
			h.DiscoverRate = 10
		}
		h.allDiscover = rate.NewLimiter(h.DiscoverRate, max(50, int(5*h.DiscoverRate)))
		if h.MaxInFlight <= 0 {
			h.MaxInFlight = 8
		}
		h.inFlight = make(chan struct{}, h.MaxInFlight)
		m := http.NewServeMux()
		m.HandleFunc("GET /boot/ipxe", h.script)
		m.HandleFunc("GET /boot/images/{id}/{file}", h.image)
		m.HandleFunc("GET /boot/{file}", h.ipxeBinary)
		m.HandleFunc("POST /machine/v1/discover", h.discover)
		m.HandleFunc("POST /machine/v1/progress", h.progress)
		// Everything else under /machine/v1/ answers in the same error shape as the endpoints, like /v1 does.
		for _, path := range []string{"/machine/v1/discover", "/machine/v1/progress"} {
			m.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Allow", http.MethodPost)
				machineError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path+"; use POST")
			})
		}
		m.HandleFunc("/machine/v1/", func(w http.ResponseWriter, r *http.Request) {
			machineError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path+"; the machine API has POST /machine/v1/discover and POST /machine/v1/progress")
		})
		h.mux = m
	})
}

// ServeHTTP implements http.Handler.
func (h *HTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.init()
	// The client's address goes with the request to the Booter and Machines (ClientIP): two clients in one
	// install conversation are a conflict (internal/pxe/storeboot, conflict.go).
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if ip := net.ParseIP(host); ip != nil {
			r = r.WithContext(WithClient(r.Context(), ip))
		}
	}
	h.mux.ServeHTTP(w, r)
}

func (h *HTTP) waitInterval() time.Duration {
	if h.WaitInterval < time.Second {
		return 15 * time.Second
	}
	return h.WaitInterval
}

// ScriptURL is the script URL for where it must be static (an embedded iPXE script, a site DHCP server's
// config): iPXE expands ${netX/mac} to the MAC of the NIC it configured last, the one it booted from. DHCP
// hands out the URL with the requesting MAC itself.
func (h *HTTP) ScriptURL() string { return h.BaseURL + "/boot/ipxe?mac=${netX/mac}" }

// acquire takes one of the MaxInFlight slots, waiting up to 2 s; false: none came free (release is not called).
func (h *HTTP) acquire(ctx context.Context) bool {
	select {
	case h.inFlight <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	select {
	case h.inFlight <- struct{}{}:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

func (h *HTTP) release() { <-h.inFlight }

func (h *HTTP) script(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	mac, err := ParseMAC(r.URL.Query().Get("mac"))
	if err != nil {
		h.Metrics.boot("error")
		h.Metrics.http("script", http.StatusBadRequest, 0)
		http.Error(w, "#!ipxe\necho nix8s: bad mac\nexit 1\n", http.StatusBadRequest)
		return
	}
	if !h.acquire(r.Context()) {
		// Busy: the machine asks again later, with no database call spent on it now.
		h.Metrics.boot("busy")
		s, _ := h.render(r.Context(), mac, Boot{Action: ActionWait, Message: "the server is busy, asking again shortly"})
		n, _ := io.WriteString(w, s)
		h.Metrics.http("script", http.StatusOK, int64(n))
		return
	}
	defer h.release()
	b, err := ScriptBoot(r.Context(), h.Booter, mac)
	var s string
	if err == nil {
		s, err = h.render(r.Context(), mac, b)
	}
	if err != nil && h.unavailable(r.Context(), err) {
		h.Logger.Error("boot decision: the database is unavailable; the machine asks again", "mac", mac.String(), "err", err)
		h.Metrics.boot("unavailable")
		s, _ = h.render(r.Context(), mac, Boot{Action: ActionWait, Message: "the server cannot reach its database, asking again shortly"})
	} else if err != nil {
		h.Logger.Error("boot decision", "mac", mac.String(), "err", err)
		h.Metrics.boot("error")
		// A script, so iPXE prints why and falls through instead of retrying forever.
		s = "#!ipxe\necho nix8s: no boot decision for this machine; see the daemon's log\nexit 1\n"
	} else {
		h.Metrics.boot(string(b.Action))
		h.Logger.Info("boot", "mac", mac.String(), "action", b.Action, "member", b.Member, "image", b.Image)
	}
	n, _ := io.WriteString(w, s)
	h.Metrics.http("script", http.StatusOK, int64(n))
}

// render writes the iPXE script of a decision. Every value comes from a validated set: the MAC is parsed and
// re-printed, image IDs and kernel arguments match conservative patterns, the base URL is checked at start.
func (h *HTTP) render(ctx context.Context, mac net.HardwareAddr, b Boot) (string, error) {
	var sb strings.Builder
	sb.WriteString("#!ipxe\n")
	switch b.Action {
	case ActionIgnore:
		sb.WriteString("echo nix8s: this machine is not known here; trying the next boot device\nexit 1\n")
		return sb.String(), nil
	case ActionLocal:
		// BIOS: hand over to the first disk. UEFI: exit with a failure, so the firmware tries its next boot
		// entry, the disk. Not `exit 0`: iPXE returns the exit status to the firmware (efiprefix.c, EFIRC), and
		// EDK2's boot manager (BdsDxe BootBootOptions) shows its menu after a boot option that returned
		// EFI_SUCCESS instead of going on; exit 1 reaches it as an EFI error status.
		sb.WriteString("echo nix8s: installed; booting from the local disk\n")
		sb.WriteString("iseq ${platform} efi && exit 1 ||\n")
		sb.WriteString("sanboot --no-describe --drive 0x80 || exit 0\n")
		return sb.String(), nil
	case ActionWait:
		msg := b.Message
		if !ValidMessage(msg) {
			h.Logger.Warn("wait message is not plain words; not printed", "mac", mac.String(), "message", msg)
			msg = "waiting"
		}
		// Ask again after a while; --replace keeps iPXE from stacking scripts across the retries.
		fmt.Fprintf(&sb, "echo nix8s: %s\n", msg)
		fmt.Fprintf(&sb, "sleep %d\n", int(h.waitInterval().Seconds()))
		fmt.Fprintf(&sb, "chain --replace --autofree %s/boot/ipxe?mac=%s || exit 1\n", h.BaseURL, mac.String())
		return sb.String(), nil
	case ActionInstall, ActionDiscover:
	default:
		return "", fmt.Errorf("unknown boot action %q", b.Action)
	}
	if !ValidImageID(b.Image) {
		return "", fmt.Errorf("image ID %q is not a plain name", b.Image)
	}
	img, err := h.Images.Image(ctx, b.Image)
	if err != nil {
		return "", err
	}
	args := []string{"initrd=initrd"}
	args = append(args, img.Cmdline...)
	args = append(args, b.Cmdline...)
	args = append(args, "nix8s.server="+h.BaseURL, "nix8s.mac="+mac.String())
	if b.Action == ActionInstall {
		args = append(args, "nix8s.generation="+strconv.FormatInt(b.Generation, 10))
		if tc, ok := h.Machines.(TokenClaimer); ok {
			if tok, err := tc.ClaimToken(ctx, mac, b.Generation); err == nil {
				args = append(args, "nix8s.token="+tok)
			}
		}
	}
	if err := ValidateCmdline(args); err != nil {
		return "", err
	}
	base := h.BaseURL + "/boot/images/" + b.Image
	fmt.Fprintf(&sb, "echo nix8s: %s\n", map[Action]string{ActionInstall: "installing", ActionDiscover: "discovery"}[b.Action])
	fmt.Fprintf(&sb, "kernel %s/bzImage %s\n", base, strings.Join(args, " "))
	fmt.Fprintf(&sb, "initrd --name initrd %s/initrd\n", base)
	sb.WriteString("boot\n")
	return sb.String(), nil
}

// serveFile serves a netboot image or iPXE binary with range requests, HEAD and If-Modified-Since
// (http.ServeContent), the body by sendfile(2) (fileResponse), counting the status and the bytes sent.
func (h *HTTP) serveFile(w http.ResponseWriter, r *http.Request, kind, path string) {
	cw := &fileResponse{ResponseWriter: w}
	defer func() { h.Metrics.http(kind, cw.status(), cw.n) }()
	f, err := os.Open(path)
	if err != nil {
		http.NotFound(cw, r)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		http.NotFound(cw, r)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	// The server's read timeout is for reading requests; a download of minutes keeps only the least rate
	// (fileResponse.ReadFrom).
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	http.ServeContent(cw, r, "", st.ModTime(), f)
}

func (h *HTTP) image(w http.ResponseWriter, r *http.Request) {
	id, file := r.PathValue("id"), r.PathValue("file")
	if !ValidImageID(id) || (file != "bzImage" && file != "initrd") {
		h.Metrics.http("image", http.StatusNotFound, 0)
		http.NotFound(w, r)
		return
	}
	img, err := h.Images.Image(r.Context(), id)
	if err != nil {
		h.Metrics.http("image", http.StatusNotFound, 0)
		http.NotFound(w, r)
		return
	}
	if file == "bzImage" {
		h.serveFile(w, r, "kernel", img.Kernel)
	} else {
		h.serveFile(w, r, "initrd", img.Initrd)
	}
}

func (h *HTTP) ipxeBinary(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	files := h.Files
	if files == nil {
		files = []string{"undionly.kpxe", "ipxe.efi", "snponly.efi"}
	}
	if !slices.Contains(files, file) || h.IPXEDir == "" {
		h.Metrics.http("efi", http.StatusNotFound, 0)
		http.NotFound(w, r)
		return
	}
	h.serveFile(w, r, "efi", filepath.Join(h.IPXEDir, file))
}

func (h *HTTP) allow(r *http.Request) bool {
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	h.limitMu.Lock()
	defer h.limitMu.Unlock()
	l := h.limiters[host]
	if l == nil {
		if len(h.limiters) > 10000 { // bounded: forget everyone rather than grow without end
			h.limiters = map[string]*rate.Limiter{}
		}
		l = rate.NewLimiter(h.ReportRate, 10)
		h.limiters[host] = l
	}
	return l.Allow()
}

// machineMAC reads ?mac= and checks it against the client's lease, if known. A MAC that does not parse is a
// bad request (400), one the client holds no lease for is forbidden (403).
func (h *HTTP) machineMAC(r *http.Request) (net.HardwareAddr, int, error) {
	mac, err := ParseMAC(r.URL.Query().Get("mac"))
	if err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("mac: %w", err)
	}
	if h.ClientMAC != nil {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if leased, ok := h.ClientMAC(net.ParseIP(host)); ok && leased.String() != mac.String() {
			return nil, http.StatusForbidden, fmt.Errorf("client %s holds the lease of %s, not %s", host, leased, mac)
		}
	}
	return mac, 0, nil
}

// errorCodes are the codes of the /v1 API (internal/api, the spec's Error schema) for the statuses the
// machine-facing endpoints answer; 413 is bad_request there too.
var errorCodes = map[int]string{
	http.StatusBadRequest:            "bad_request",
	http.StatusUnauthorized:          "unauthorized",
	http.StatusForbidden:             "forbidden",
	http.StatusNotFound:              "not_found",
	http.StatusMethodNotAllowed:      "method_not_allowed",
	http.StatusRequestEntityTooLarge: "bad_request",
	http.StatusTooManyRequests:       "too_many_requests",
	http.StatusInternalServerError:   "internal",
	http.StatusServiceUnavailable:    "unavailable",
}

// unavailable: err means the database cannot be reached (Unavailable).
func (h *HTTP) unavailable(ctx context.Context, err error) bool {
	return h.Unavailable != nil && h.Unavailable(ctx, err)
}

// machineUnavailable answers a report 503 while the database cannot be reached, with no word of how it is
// reached (the log has that), as the /v1 API does.
func machineUnavailable(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "5")
	machineError(w, http.StatusServiceUnavailable, "the database is unavailable; retry later (the daemon's log says why)")
}

// machineError answers a /machine/v1 request with the /v1 API's error body: {"code", "message", "details": []}.
func machineError(w http.ResponseWriter, status int, msg string) {
	code, ok := errorCodes[status]
	if !ok {
		code = "internal"
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(struct {
		Code    string   `json:"code"`
		Message string   `json:"message"`
		Details []string `json:"details"`
	}{code, msg, []string{}})
}

// tooLarge says whether err is a body that exceeded its http.MaxBytesReader.
func tooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

func (h *HTTP) discover(w http.ResponseWriter, r *http.Request) {
	if !h.allow(r) {
		h.Metrics.report("discover", "refused")
		machineError(w, http.StatusTooManyRequests, "too many reports from this address")
		return
	}
	if !h.allDiscover.Allow() {
		h.Metrics.report("discover", "limited")
		w.Header().Set("Retry-After", "10")
		machineError(w, http.StatusTooManyRequests, "too many discover reports from all addresses; try again")
		return
	}
	mac, status, err := h.machineMAC(r)
	if err != nil {
		outcome := "refused"
		if status == http.StatusBadRequest {
			outcome = "bad"
		}
		h.Metrics.report("discover", outcome)
		machineError(w, status, err.Error())
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.MaxReport))
	if err != nil {
		h.Metrics.report("discover", "bad")
		if tooLarge(err) {
			machineError(w, http.StatusRequestEntityTooLarge, "facts larger than "+strconv.FormatInt(h.MaxReport, 10)+" bytes")
		} else {
			machineError(w, http.StatusBadRequest, "reading the facts: "+err.Error())
		}
		return
	}
	var facts map[string]json.RawMessage
	if err := json.Unmarshal(body, &facts); err != nil || facts == nil {
		h.Metrics.report("discover", "bad")
		machineError(w, http.StatusBadRequest, "facts must be a JSON object")
		return
	}
	var factMAC string
	if err := json.Unmarshal(facts["mac"], &factMAC); err != nil {
		h.Metrics.report("discover", "bad")
		machineError(w, http.StatusBadRequest, `facts must name the boot interface's "mac"`)
		return
	}
	if fm, err := ParseMAC(factMAC); err != nil || fm.String() != mac.String() {
		h.Metrics.report("discover", "refused")
		machineError(w, http.StatusForbidden, "a machine can report only for its own MAC")
		return
	}
	if !h.acquire(r.Context()) {
		h.Metrics.report("discover", "busy")
		w.Header().Set("Retry-After", "10")
		machineError(w, http.StatusServiceUnavailable, "the server is busy; try again")
		return
	}
	defer h.release()
	if err := h.Machines.Discovered(r.Context(), mac, body); errors.Is(err, ErrFull) {
		h.Logger.Warn("discover report of a new machine refused", "mac", mac.String(), "err", err)
		h.Metrics.report("discover", "full")
		h.Metrics.discoverFull(segmentOfErr(err))
		w.Header().Set("Retry-After", "60")
		machineError(w, http.StatusServiceUnavailable, err.Error())
		return
	} else if errors.Is(err, ErrLocked) {
		h.Metrics.report("discover", "refused")
		machineError(w, http.StatusForbidden, err.Error())
		return
	} else if err != nil && h.unavailable(r.Context(), err) {
		h.Logger.Error("recording discovered machine: the database is unavailable", "mac", mac.String(), "err", err)
		h.Metrics.report("discover", "unavailable")
		machineUnavailable(w)
		return
	} else if err != nil {
		h.Logger.Error("recording discovered machine", "mac", mac.String(), "err", err)
		h.Metrics.report("discover", "error")
		machineError(w, http.StatusInternalServerError, "could not record the facts; see the daemon's log")
		return
	}
	h.Logger.Info("machine discovered", "mac", mac.String())
	h.Metrics.report("discover", "ok")
	w.WriteHeader(http.StatusNoContent)
}

func (h *HTTP) progress(w http.ResponseWriter, r *http.Request) {
	if !h.allow(r) {
		h.Metrics.report("progress", "refused")
		machineError(w, http.StatusTooManyRequests, "too many reports from this address")
		return
	}
	mac, status, err := h.machineMAC(r)
	if err != nil {
		outcome := "refused"
		if status == http.StatusBadRequest {
			outcome = "bad"
		}
		h.Metrics.report("progress", outcome)
		machineError(w, status, err.Error())
		return
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		h.Metrics.report("progress", "refused")
		machineError(w, http.StatusUnauthorized, "a phone-home token is required (Authorization: Bearer <nix8s.token>)")
		return
	}
	var p Progress
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, h.MaxReport))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		h.Metrics.report("progress", "bad")
		if tooLarge(err) {
			machineError(w, http.StatusRequestEntityTooLarge, "progress larger than "+strconv.FormatInt(h.MaxReport, 10)+" bytes")
			return
		}
		machineError(w, http.StatusBadRequest, "progress must be {generation, phase (<= 64 bytes), done, error, hostKey (with done)}")
		return
	}
	if err := p.Check(); err != nil {
		h.Metrics.report("progress", "bad")
		machineError(w, http.StatusBadRequest, "progress: "+err.Error())
		return
	}
	if !h.acquire(r.Context()) {
		h.Metrics.report("progress", "busy")
		w.Header().Set("Retry-After", "5")
		machineError(w, http.StatusServiceUnavailable, "the server is busy; try again")
		return
	}
	defer h.release()
	if err := h.Machines.Progress(r.Context(), mac, tok, p); err != nil {
		if errors.Is(err, ErrToken) || errors.Is(err, ErrLocked) {
			h.Metrics.report("progress", "refused")
			machineError(w, http.StatusForbidden, err.Error())
			return
		}
		if h.unavailable(r.Context(), err) {
			h.Logger.Error("recording progress: the database is unavailable", "mac", mac.String(), "err", err)
			h.Metrics.report("progress", "unavailable")
			machineUnavailable(w)
			return
		}
		h.Logger.Error("recording progress", "mac", mac.String(), "err", err)
		h.Metrics.report("progress", "error")
		machineError(w, http.StatusInternalServerError, "could not record the progress; see the daemon's log")
		return
	}
	h.Logger.Info("install progress", "mac", mac.String(), "phase", p.Phase, "done", p.Done, "error", p.Error, "hostKey", p.HostKey != "")
	h.Metrics.report("progress", "ok")
	w.WriteHeader(http.StatusNoContent)
}

// CheckBaseURL validates a base URL machines are given: http(s)://host[:port] with nothing iPXE would expand.
func CheckBaseURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" ||
		strings.ContainsAny(s, " \t\n\"'$;&|<>\\") {
		return fmt.Errorf("base URL %q: must be http://host[:port] with no path", s)
	}
	return nil
}
