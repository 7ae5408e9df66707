// HA on the servers, checked with the real programs: Debian's haproxy validates and runs the config the core
// renders for the HA example, Debian's keepalived validates the keepalived.conf nixpkgs assembles from the core's
// values, and the real kube-apiserver (.ci/tools-k8s.sh) reads the authentication config that lets haproxy's
// /readyz check through. The inputs come from tests/golden/ha.nixos.json, which TestGoldenExamples keeps equal to
// what the core renders.
package tests

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nix8s/nix8s/internal/k8stest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// haSettings is the part of a member's rendered NixOS settings these tests read.
type haSettings struct {
	Environment struct {
		Etc map[string]struct{ Text string }
	}
	Services struct {
		Haproxy    struct{ Config string }
		Keepalived struct {
			EnableScriptSecurity bool
			VrrpInstances        map[string]vrrpInstance
		}
	}
}

type vrrpInstance struct {
	Interface       string
	State           string
	Priority        int
	VirtualRouterID int `json:"virtualRouterId"`
	VirtualIps      []struct{ Addr string }
	UnicastSrcIP    string `json:"unicastSrcIp"`
	UnicastPeers    []string
	ExtraConfig     string
}

// haServers reads the rendered settings of the HA example's servers (the members running haproxy), by host name.
func haServers(t *testing.T) map[string]haSettings {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("golden", "ha.nixos.json"))
	if err != nil {
		t.Fatal(err)
	}
	var all map[string]struct{ Settings haSettings }
	if err := json.Unmarshal(raw, &all); err != nil {
		t.Fatal(err)
	}
	servers := map[string]haSettings{}
	for host, m := range all {
		if m.Settings.Services.Haproxy.Config != "" {
			servers[host] = m.Settings
		}
	}
	if len(servers) != 3 {
		t.Fatalf("want haproxy on the HA example's 3 servers, got %d", len(servers))
	}
	return servers
}

// nixpkgsHAProxyConfig is the file nixpkgs' haproxy module writes (nixos/modules/services/networking/haproxy.nix):
// its own global section with the stats socket, then services.haproxy.config verbatim.
func nixpkgsHAProxyConfig(socket, config string) string {
	return "global\n" +
		"  # needed for hot-reload to work without dropping packets in multi-worker mode\n" +
		"  stats socket " + socket + " mode 600 expose-fd listeners level user\n" +
		config
}

func lookPath(t *testing.T, bin, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		t.Fatalf("%s not found: install it (Debian: apt-get install %s; listed in .ci/packages-ha.txt)", bin, pkg)
	}
	return p
}

func TestHAProxyAcceptsTheRenderedConfig(t *testing.T) {
	haproxy := lookPath(t, "haproxy", "haproxy")
	check := func(t *testing.T, config string) (string, error) {
		f := filepath.Join(t.TempDir(), "haproxy.cfg")
		if err := os.WriteFile(f, []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(haproxy, "-c", "-f", f).CombinedOutput()
		return string(out), err
	}
	for host, s := range haServers(t) {
		t.Run(host, func(t *testing.T) {
			cfg := nixpkgsHAProxyConfig("/run/haproxy/haproxy.sock", s.Services.Haproxy.Config)
			out, err := check(t, cfg)
			if err != nil {
				t.Fatalf("haproxy -c refuses the config: %v\n%s\n%s", err, out, cfg)
			}
			if strings.Contains(out, "[WARNING]") || strings.Contains(out, "[ALERT]") {
				t.Errorf("haproxy -c warns:\n%s", out)
			}
		})
	}
	// The check must be able to fail: without `verify none` haproxy wants a CA file for check-ssl.
	t.Run("without verify none", func(t *testing.T) {
		for _, s := range haServers(t) {
			cfg := strings.Replace(nixpkgsHAProxyConfig("/run/haproxy/haproxy.sock", s.Services.Haproxy.Config), " verify none", "", 1)
			if out, err := check(t, cfg); err == nil || !strings.Contains(out, "no CA file specified") {
				t.Errorf("haproxy -c accepted check-ssl without a CA file or verify none (err %v):\n%s", err, out)
			}
			break
		}
	})
}

// tlsBackend stands for one k3s server's port 6443: /readyz answers 200 while ready, 500 (as kube-apiserver does
// when a check fails) otherwise; every other path names the backend, so a client sees where haproxy sent it.
type tlsBackend struct {
	name   string
	ready  atomic.Bool
	served atomic.Int64 // non-health requests
	mu     sync.Mutex
	checks []string // method, path and TLS of the health checks received
	srv    *httptest.Server
}

func newTLSBackend(t *testing.T, name string, ready bool) *tlsBackend {
	b := &tlsBackend{name: name}
	b.ready.Store(ready)
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			b.mu.Lock()
			b.checks = append(b.checks, fmt.Sprintf("%s %s tls=%v", r.Method, r.URL.Path, r.TLS != nil))
			b.mu.Unlock()
			if b.ready.Load() {
				fmt.Fprint(w, "ok")
			} else {
				http.Error(w, "[-]etcd failed: reason withheld\nreadyz check failed", http.StatusInternalServerError)
			}
			return
		}
		b.served.Add(1)
		fmt.Fprint(w, b.name)
	}))
	b.srv.StartTLS()
	t.Cleanup(b.srv.Close)
	return b
}

func (b *tlsBackend) port() string {
	_, p, _ := net.SplitHostPort(b.srv.Listener.Addr().String())
	return p
}

// serverStates asks haproxy's stats socket for each server of backend k3s-servers: its status and last check result.
func serverStates(socket string) (map[string][2]string, error) {
	c, err := net.DialTimeout("unix", socket, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "show stat\n"); err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(bufio.NewReader(c))
	if err != nil {
		return nil, err
	}
	rows, err := csv.NewReader(strings.NewReader(strings.TrimPrefix(string(raw), "# "))).ReadAll()
	if err != nil || len(rows) < 2 {
		return nil, fmt.Errorf("unexpected show stat answer (%v): %q", err, raw)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	states := map[string][2]string{}
	for _, r := range rows[1:] {
		if len(r) > col["check_status"] && r[col["pxname"]] == "k3s-servers" && r[col["svname"]] != "BACKEND" {
			states[r[col["svname"]]] = [2]string{r[col["status"]], r[col["check_status"]]}
		}
	}
	return states, nil
}

// waitStates polls haproxy until every server's status is the wanted one; running out of time is an error.
func waitStates(t *testing.T, socket string, want map[string]string) map[string][2]string {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var last map[string][2]string
	var err error
	for time.Now().Before(deadline) {
		last, err = serverStates(socket)
		ok := err == nil
		for name, status := range want {
			ok = ok && last[name][0] == status
		}
		if ok {
			return last
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for haproxy's servers to be %v; last seen %v (err %v)", want, last, err)
	return nil
}

// The rendered haproxy, run for real: a server whose /readyz fails, or whose port is closed, gets no traffic; once
// its /readyz answers 200 it joins the pool. What the test substitutes, and nothing else: the frontend's
// `bind <vip>:6443` and each `server <name> <ip>:6443` become loopback ports (the VIP and server addresses are not
// on this machine), and the stats socket of nixpkgs' global section moves into the test's directory.
func TestHAProxyRoutesOnlyToReadyServers(t *testing.T) {
	haproxy := lookPath(t, "haproxy", "haproxy")
	servers := haServers(t)
	var hosts []string
	for h := range servers {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	config := servers[hosts[0]].Services.Haproxy.Config

	ready := newTLSBackend(t, "server1", true)
	joining := newTLSBackend(t, "server2", false)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, closedPort, _ := net.SplitHostPort(closed.Addr().String())
	closed.Close()
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	frontAddr := front.Addr().String()
	front.Close()

	ports := map[string]string{"server1": ready.port(), "server2": joining.port(), "server3": closedPort}
	bindRe := regexp.MustCompile(`(?m)^  bind \S+:6443$`)
	serverRe := regexp.MustCompile(`(?m)^  server (\S+) \S+:6443$`)
	if n, m := len(bindRe.FindAllString(config, -1)), len(serverRe.FindAllString(config, -1)); n != 1 || m != 3 {
		t.Fatalf("want 1 bind and 3 server lines to point at loopback, found %d and %d in:\n%s", n, m, config)
	}
	config = bindRe.ReplaceAllString(config, "  bind "+frontAddr)
	config = serverRe.ReplaceAllStringFunc(config, func(line string) string {
		name := serverRe.FindStringSubmatch(line)[1]
		return "  server " + name + " 127.0.0.1:" + ports[name]
	})
	dir := t.TempDir()
	socket := filepath.Join(dir, "haproxy.sock")
	cfgFile := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgFile, []byte(nixpkgsHAProxyConfig(socket, config)), 0o644); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(haproxy, "-db", "-f", cfgFile)
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy's output:\n%s", log.String())
		}
	})

	states := waitStates(t, socket, map[string]string{"server1": "UP", "server2": "DOWN", "server3": "DOWN"})
	// Down for the right reasons: a wrong HTTP status (L7STS) from the server that is not ready, a refused
	// connection (L4CON) from the one that is not listening.
	if states["server2"][1] != "L7STS" || states["server3"][1] != "L4CON" {
		t.Errorf("want server2 down on its /readyz status (L7STS) and server3 on a refused connection (L4CON), got %v", states)
	}

	transport := ready.srv.Client().Transport.(*http.Transport).Clone()
	transport.DisableKeepAlives = true // one connection per request, so haproxy balances every request
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}
	through := func(n int) map[string]int {
		got := map[string]int{}
		for i := 0; i < n; i++ {
			resp, err := client.Get("https://" + frontAddr + "/version")
			if err != nil {
				t.Fatalf("request %d through haproxy: %v", i, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got[string(body)]++
		}
		return got
	}
	if got := through(12); got["server1"] != 12 {
		t.Errorf("want all 12 requests on the ready server1, got %v", got)
	}
	if n := joining.served.Load(); n != 0 {
		t.Errorf("the server that is not ready got %d API requests", n)
	}
	joining.mu.Lock()
	checks := append([]string(nil), joining.checks...)
	joining.mu.Unlock()
	if len(checks) == 0 || checks[0] != "GET /readyz tls=true" {
		t.Errorf("want haproxy's checks as GET /readyz over TLS, got %q", checks)
	}

	// The joining server turns ready: after `rise` good checks it takes its share.
	joining.ready.Store(true)
	waitStates(t, socket, map[string]string{"server1": "UP", "server2": "UP", "server3": "DOWN"})
	if got := through(12); got["server1"] == 0 || got["server2"] == 0 || got["server1"]+got["server2"] != 12 {
		t.Errorf("want the 12 requests spread over server1 and server2 once both are ready, got %v", got)
	}
}

// nixpkgsKeepalivedConfig assembles keepalived.conf from option values the way nixpkgs' keepalived module does
// (nixos/modules/services/networking/keepalived/default.nix; vrrp_script defaults from vrrp-script-options.nix).
func nixpkgsKeepalivedConfig(scriptSecurity bool, scriptName, script string, interval int, user string, name string, i vrrpInstance) string {
	var b strings.Builder
	b.WriteString("global_defs {\n")
	if scriptSecurity {
		b.WriteString("  enable_script_security\n")
	}
	b.WriteString("}\n\n")
	fmt.Fprintf(&b, "vrrp_script %s {\n  script \"%s\"\n  interval %d\n  fall 3\n  rise 5\n  timeout 5\n  weight 0\n  user %s \n\n}\n\n",
		scriptName, script, interval, user)
	fmt.Fprintf(&b, "vrrp_instance %s {\n  interface %s\n  state %s\n  virtual_router_id %d\n  priority %d\n\n",
		name, i.Interface, i.State, i.VirtualRouterID, i.Priority)
	if i.UnicastSrcIP != "" {
		fmt.Fprintf(&b, "  unicast_src_ip %s\n", i.UnicastSrcIP)
	}
	if len(i.UnicastPeers) > 0 {
		fmt.Fprintf(&b, "  unicast_peer {\n    %s\n  }\n", strings.Join(i.UnicastPeers, "\n    "))
	}
	b.WriteString("\n  virtual_ipaddress {\n")
	for _, ip := range i.VirtualIps {
		fmt.Fprintf(&b, "    %s\n", ip.Addr)
	}
	b.WriteString("  }\n\n")
	b.WriteString(i.ExtraConfig)
	b.WriteString("}\n")
	return b.String()
}

// keepalived -t on the config of each server, in a network namespace of the test's own whose `eth0` (a veth) is the
// interface the config names. The vrrp_script is the one modules/nixos/ha.nix defines, with Debian's pgrep in place
// of the store path (`${pkgs.procps}/bin/pgrep`, not on this machine). Without script security the same config
// makes keepalived report the SECURITY VIOLATION the core's enableScriptSecurity removes.
func TestKeepalivedAcceptsTheRenderedConfig(t *testing.T) {
	keepalived := lookPath(t, "keepalived", "keepalived")
	lookPath(t, "unshare", "util-linux")
	lookPath(t, "ip", "iproute2")
	pgrep := lookPath(t, "pgrep", "procps")
	test := func(t *testing.T, iface, conf string) (string, error) {
		f := filepath.Join(t.TempDir(), "keepalived.conf")
		if err := os.WriteFile(f, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		script := fmt.Sprintf("ip link add %s type veth peer name nix8s-peer && ip link set %s up && exec %s -t -l -n -f %s",
			iface, iface, keepalived, f)
		out, err := exec.Command("unshare", "--net", "sh", "-c", script).CombinedOutput()
		return string(out), err
	}
	for host, s := range haServers(t) {
		t.Run(host, func(t *testing.T) {
			k := s.Services.Keepalived
			if !k.EnableScriptSecurity || len(k.VrrpInstances) != 1 {
				t.Fatalf("want script security and one VRRP instance, got %+v", k)
			}
			for name, inst := range k.VrrpInstances {
				if !strings.Contains(inst.ExtraConfig, "track_script {\n  nix8s-haproxy\n}") {
					t.Fatalf("the instance does not track nix8s-haproxy: %q", inst.ExtraConfig)
				}
				conf := nixpkgsKeepalivedConfig(true, "nix8s-haproxy", pgrep+" --exact haproxy", 2, "root", name, inst)
				if out, err := test(t, inst.Interface, conf); err != nil || out != "" {
					t.Errorf("keepalived -t: %v\n%s\n%s", err, out, conf)
				}
				insecure := nixpkgsKeepalivedConfig(false, "nix8s-haproxy", pgrep+" --exact haproxy", 2, "root", name, inst)
				if out, err := test(t, inst.Interface, insecure); err == nil || !strings.Contains(out, "SECURITY VIOLATION") {
					t.Errorf("want keepalived -t to report the root script without script security, got %v\n%s", err, out)
				}
			}
		})
	}
}

// anonymousGet starts a real kube-apiserver (and etcd) with the given flags and returns a GET without credentials.
func anonymousGet(t *testing.T, flags map[string]string) func(path string) (int, string) {
	t.Helper()
	assets, err := k8stest.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	env := &envtest.Environment{BinaryAssetsDirectory: assets, ControlPlaneStartTimeout: 2 * time.Minute, ControlPlaneStopTimeout: time.Minute}
	for k, v := range flags {
		env.ControlPlane.GetAPIServer().Configure().Set(k, v)
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("kube-apiserver with %v: %v", flags, err)
	}
	t.Cleanup(func() { env.Stop() })
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cfg.CAData)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	return func(path string) (int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(cfg.Host, "/")+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
}

// The authentication config the core gives HA servers, read by a real kube-apiserver (no --anonymous-auth flag, as
// k3s runs it when --authentication-config is set): anonymous GET /readyz, /livez and /healthz answer 200 and every
// other anonymous request 401. Authorization is RBAC (envtest's), whose default system:public-info-viewer role lets
// anonymous users read those paths, as on k3s (Node,RBAC). (Without the file k3s' --anonymous-auth=false makes that
// /readyz answer 401, k3s-io/k3s#3576; envtest cannot start such a server, it polls /readyz anonymously.)
func TestAPIServerAnswersHealthAnonymouslyWithTheCoreAuthConfig(t *testing.T) {
	var text string
	for _, s := range haServers(t) {
		// The HA example runs Cozystack too, whose LVM filter is the other /etc file.
		f, ok := s.Environment.Etc["nix8s/kube-apiserver-authentication.json"]
		if !ok {
			t.Fatalf("no nix8s/kube-apiserver-authentication.json among an HA server's /etc files %v", s.Environment.Etc)
		}
		text = f.Text
	}
	file := filepath.Join(t.TempDir(), "authentication.json")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}

	get := anonymousGet(t, map[string]string{"authentication-config": file})
	for _, path := range []string{"/readyz", "/livez", "/healthz"} {
		if code, body := get(path); code != http.StatusOK || body != "ok" {
			t.Errorf("anonymous GET %s: %d %q, want 200 \"ok\"", path, code, body)
		}
	}
	for _, path := range []string{"/version", "/api", "/api/v1/namespaces/default/secrets"} {
		if code, body := get(path); code != http.StatusUnauthorized {
			t.Errorf("anonymous GET %s: %d %q, want 401", path, code, body)
		}
	}
}
