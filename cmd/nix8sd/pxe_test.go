package main

// nix8sd serve with network boot, end to end under QEMU (software emulation), everything real but the
// images: a PostgreSQL with the daemon's migrations, a kube-apiserver with etcd, the DHCP/TFTP/HTTP services
// on a veth into a network namespace whose bridge carries the VMs, QEMU's iPXE ROM. NixOS netboot images
// cannot be built here (no nixpkgs), so the images served are stand-ins: a Debian kernel and a busybox
// initramfs that prints a marker, plays the installer's or discovery image's phone-home calls and powers off.
// No kubelet runs either: the test registers each member's Node in the API server when its stand-in
// installer reports done, as k3s would when the installed system boots.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nix8s/nix8s/internal/k8stest"
	"github.com/nix8s/nix8s/internal/pgtest"
	"github.com/nix8s/nix8s/internal/pxetest"
	"github.com/nix8s/nix8s/internal/secrets"
	"github.com/nix8s/nix8s/internal/store"
)

const labConfig = `nodes:
  vm:
    install:
      disk: /dev/vda
clusters:
  lab:
    k3s:
      version: "v1.34.2+k3s1"
    members:
      s1: { node: vm, role: server, ip: PREFIX11, network: { mac: "52:54:00:ab:00:01" } }
      a1: { node: vm, role: agent, ip: PREFIX21, network: { mac: "52:54:00:ab:00:02" } }
provisioning:
  pxe:
    server:
      ip: PREFIX1
      interface: IFACE
      dhcp:
        mode: full
        range: PREFIX100-PREFIX150
        subnet: PREFIX0/24
`

// All machines power on at once: the agent waits in iPXE for the server to be ready; the server installs,
// reports done, its node registers and turns Ready (joined, ready); then the agent installs and joins; an
// unknown machine boots discovery and shows up as discovered; an installed machine is sent to its disk
// until an operator arms a reinstall over REST.
func TestServeNetworkBootEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("QEMU boots take ~10-30 s each")
	}
	n := pxetest.NewNet(t)
	if _, err := os.Stat("/usr/lib/ipxe/undionly.kpxe"); err != nil {
		pxetest.Unavailable(t, "the ipxe package (/usr/lib/ipxe): %v", err)
	}
	kernel, e1000 := pxetest.Kernel(t)
	initrd := filepath.Join(t.TempDir(), "initrd")
	pxetest.Initramfs(t, initrd, e1000)
	images := t.TempDir()
	for id, role := range map[string]string{"lab-s1": "install", "lab-a1": "install", "discovery": "discover"} {
		d := filepath.Join(images, id)
		os.MkdirAll(d, 0o755)
		os.Symlink(kernel, filepath.Join(d, "bzImage"))
		os.Symlink(initrd, filepath.Join(d, "initrd"))
		os.WriteFile(filepath.Join(d, "cmdline"), []byte("console=ttyS0 quiet panic=-1 nix8s.role="+role+"\n"), 0o644)
	}

	k8s, err := k8stest.Start()
	if err != nil {
		pxetest.Unavailable(t, "kube-apiserver and etcd (.ci/tools-k8s.sh): %v", err)
	}
	t.Cleanup(func() { k8s.Stop() })
	kc, err := k8s.Kubeconfig("lab")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kcFile, cfgFile, tokFile := filepath.Join(dir, "kubeconfig"), filepath.Join(dir, "config.yaml"), filepath.Join(dir, "token")
	os.WriteFile(kcFile, kc, 0o600)
	cfg := strings.NewReplacer("PREFIX", n.Prefix, "IFACE", n.HostIf).Replace(labConfig)
	os.WriteFile(cfgFile, []byte(cfg), 0o644)
	tok, _ := store.NewToken()
	os.WriteFile(tokFile, []byte(tok), 0o600)

	l, err := net.Listen("tcp", n.ServerIP.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	db := pgtest.Database(t)
	// The cluster's tokens (nix8s gen-secrets, plaintext here): delivered over ssh once a member is installed.
	secretsDir := filepath.Join(dir, "secrets")
	if _, err := secrets.Generate(context.Background(), secrets.Options{Dir: secretsDir, Cluster: "lab"}); err != nil {
		t.Fatal(err)
	}
	url, stop := serveAt(t, addr, map[string]string{"DATABASE_URL": db},
		"--state-dir", dir, "--secrets", secretsDir, "--admin-token-file", tokFile, "--config", cfgFile, "--pxe-cluster", "lab",
		"--pxe-images", images, "--pxe-wait", "2s", "--node-watch-interval", "1s", "--kubeconfig", kcFile)
	defer func() {
		if code, stderr := stop(); code != 0 || t.Failed() {
			t.Logf("nix8sd exited %d:\n%s", code, tail(stderr, 20000))
		}
	}()

	const s1, a1, unknown = "52:54:00:ab:00:01", "52:54:00:ab:00:02", "52:54:00:ab:00:09"
	machine := func(mac string) map[string]any {
		var m map[string]any
		getJSON(t, url+"/v1/machines/"+mac, tok, &m)
		return m
	}
	if m := machine(a1); m["state"] != "discovered" || m["member"] != "a1" {
		t.Fatalf("the config's member was not made a machine: %v", m)
	}

	// Both power on at once.
	vmA := n.StartVM(t, pxetest.VMOptions{MAC: a1})
	vmS := n.StartVM(t, pxetest.VMOptions{MAC: s1})
	// iPXE prints on the VGA console, not the serial line: the agent's waiting shows in the boot metrics.
	pxetest.WaitFor(t, 90*time.Second, "the agent to be told to wait", func() bool {
		return metric(t, url, `nix8s_pxe_boots_total{outcome="wait"}`) >= 1
	})
	t.Logf("server installer marker after %v", vmS.WaitSerial(t, "NIX8S-BOOTED role=install mac="+s1, 90*time.Second))
	vmS.WaitSerial(t, "NIX8S-INSTALLED", 60*time.Second)
	vmS.Wait(t, 30*time.Second)
	if m := machine(s1); m["state"] != "installing" || m["installArmed"] != false || m["installGeneration"] != float64(1) {
		t.Fatalf("server after its installer reported done: %v", m)
	}
	if m := machine(a1); m["state"] != "discovered" {
		t.Fatalf("the agent did not wait for the server: %v", m)
	}
	// The daemon set out to deliver the server's token files over ssh; the stand-in installer reported no host
	// key (it has no ssh), so the delivery refuses to trust the installed system's key on first use.
	pxetest.WaitFor(t, 30*time.Second, "the delivery job to fail", func() bool {
		var page struct {
			Items []struct {
				Status string  `json:"status"`
				Member *string `json:"member"`
				Error  *string `json:"error"`
			} `json:"items"`
		}
		getJSON(t, url+"/v1/jobs?kind=deliver-secrets", tok, &page)
		return len(page.Items) == 1 && page.Items[0].Status == "failed" && *page.Items[0].Member == "s1" &&
			strings.Contains(*page.Items[0].Error, "reported no ssh host key")
	})
	// k3s on the installed server registers its node, which turns Ready.
	ctx := context.Background()
	if err := k8stest.AddNode(ctx, k8s.Client, "lab-s1", "v1.34.2+k3s1"); err != nil {
		t.Fatal(err)
	}
	if err := k8stest.SetNodeStatus(ctx, k8s.Client, "lab-s1", true, "v1.34.2+k3s1"); err != nil {
		t.Fatal(err)
	}
	pxetest.WaitFor(t, 30*time.Second, "the server to be ready", func() bool { return machine(s1)["state"] == "ready" })

	// The agent's next try installs it.
	t.Logf("agent installer marker after %v", vmA.WaitSerial(t, "NIX8S-BOOTED role=install mac="+a1, 120*time.Second))
	vmA.WaitSerial(t, "NIX8S-INSTALLED", 60*time.Second)
	vmA.Wait(t, 30*time.Second)
	// This one registers NotReady first (its CNI is still starting).
	if _, err := k8s.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "lab-a1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	k8stest.SetNodeStatus(ctx, k8s.Client, "lab-a1", false, "v1.34.2+k3s1")
	pxetest.WaitFor(t, 30*time.Second, "the agent to be joined", func() bool { return machine(a1)["state"] == "joined" })
	k8stest.SetNodeStatus(ctx, k8s.Client, "lab-a1", true, "v1.34.2+k3s1")
	pxetest.WaitFor(t, 30*time.Second, "the agent to be ready", func() bool { return machine(a1)["state"] == "ready" })

	// Full mode: each member's machine leased its plan address, kept in PostgreSQL.
	st, err := store.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for mac, ip := range map[string]string{s1: n.Prefix + "11", a1: n.Prefix + "21"} {
		if l, err := st.LeaseByMAC(ctx, mac); err != nil || l == nil || l.IP.String() != ip {
			t.Errorf("lease of %s: %+v, %v; want its plan IP %s", mac, l, err, ip)
		}
	}

	// An unknown machine boots discovery and shows up with its facts.
	vmU := n.StartVM(t, pxetest.VMOptions{MAC: unknown})
	vmU.WaitSerial(t, "NIX8S-DISCOVERED", 120*time.Second)
	vmU.Wait(t, 30*time.Second)
	if m := machine(unknown); m["state"] != "discovered" || m["facts"].(map[string]any)["cpus"] != float64(1) {
		t.Fatalf("discovered machine: %v", m)
	}

	// Installed: its disk on every network boot, until an operator arms a reinstall.
	script := func(mac string) string { return bootScript(t, url, mac) }
	if s := script(s1); !strings.Contains(s, "sanboot") {
		t.Fatalf("installed server's script:\n%s", s)
	}
	req, _ := http.NewRequest("POST", url+"/v1/machines/"+s1+"/reinstall", strings.NewReader(`{"reason": "new disk"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("reinstall: %v %v", res, err)
	}
	res.Body.Close()
	if s := script(s1); !strings.Contains(s, "images/lab-s1/bzImage") || !strings.Contains(s, "nix8s.generation=2") || !strings.Contains(s, "nix8s.token=") {
		t.Fatalf("script after reinstall:\n%s", s)
	}
	// The reinstall removed the old node (k3s would refuse the new one's password).
	pxetest.WaitFor(t, 30*time.Second, "the old node to be removed", func() bool {
		_, err := k8s.Client.CoreV1().Nodes().Get(ctx, "lab-s1", metav1.GetOptions{})
		return err != nil
	})

	// The audit trail of the server: armed by its boot, the installer's reports, joined and ready from the
	// cluster's API, armed again by the operator.
	var page struct {
		Items []struct {
			Kind, Actor, Reason string
			NewState            *string `json:"newState"`
		} `json:"items"`
	}
	getJSON(t, url+"/v1/machines/"+s1+"/events", tok, &page)
	var got []string
	for _, e := range page.Items {
		if e.Kind == "armed" || e.Kind == "progress" || e.Kind == "state" {
			got = append(got, fmt.Sprintf("%s:%s", e.Kind, *e.NewState))
		}
	}
	want := "state:installing armed:installing progress:installing progress:installing state:joined state:ready state:installing armed:installing"
	if strings.Join(got, " ") != want {
		t.Errorf("events of the server:\n got %s\nwant %s", strings.Join(got, " "), want)
	}
}

// bootScript is the iPXE script nix8sd answers for mac.
func bootScript(t *testing.T, url, mac string) string {
	t.Helper()
	res, err := http.Get(url + "/boot/ipxe?mac=" + mac)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// metric reads one sample of the daemon's /metrics (0 when absent).
func metric(t *testing.T, url, sample string) float64 {
	t.Helper()
	res, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return 0
}

func getJSON(t *testing.T, url, tok string, v any) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("GET %s: %d %s", url, res.StatusCode, b)
	}
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

const badBase = `nodes: { vm: { install: { disk: /dev/vda } } }
clusters:
  lab:
    members:
      s1: { node: vm, role: server, ip: 127.0.0.11, network: { mac: "52:54:00:ab:00:01" } }
      a1: { node: vm, role: agent, ip: 127.0.0.21, network: { mac: "A1MAC" } }
provisioning:
  pxe:
    server: { ip: 127.0.0.1, interface: lo, dhcp: DHCP }
`

// Network boot refuses to start, before anything is stored or served, on a config that cannot be served
// (errors with their config paths), an interface without the address, and a port in use: no config is
// stored, no machine made.
func TestServeNetworkBootRefusesToStart(t *testing.T) {
	requireServeBoot(t)
	db := pgtest.Database(t)
	dir := t.TempDir()
	busy, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := fmt.Sprint(busy.LocalAddr().(*net.UDPAddr).Port)
	free := func() string {
		c, _ := net.ListenPacket("udp4", "127.0.0.1:0")
		defer c.Close()
		return fmt.Sprint(c.LocalAddr().(*net.UDPAddr).Port)
	}
	good := strings.NewReplacer("A1MAC", "52:54:00:ab:00:02", "DHCP", "{}").Replace(badBase)
	tests := []struct {
		name, config string
		args         []string
		want         []string
	}{
		{"members sharing a MAC", strings.NewReplacer("A1MAC", "52:54:00:AB:00:01", "DHCP", "{}").Replace(badBase), nil,
			[]string{"clusters.lab.members.", "network.mac"}},
		{"a member without a MAC", strings.NewReplacer(`, network: { mac: "A1MAC" }`, "", "DHCP", "{}").Replace(badBase), nil,
			[]string{"clusters.lab.members.a1"}},
		{"a plan IP outside the DHCP subnet", strings.NewReplacer("A1MAC", "52:54:00:ab:00:02",
			"DHCP", "{ mode: full, subnet: 127.0.0.0/28, range: 127.0.0.2-127.0.0.9 }").Replace(badBase), nil,
			[]string{"clusters.lab.members.", ".ip", "127.0.0.0/28"}},
		// The core's rules (once DHCP.Check's, without a config path).
		{"a DHCP range that starts after it ends", strings.NewReplacer("A1MAC", "52:54:00:ab:00:02",
			"DHCP", "{ mode: full, subnet: 127.0.0.0/24, range: 127.0.0.9-127.0.0.2 }").Replace(badBase), nil,
			[]string{`provisioning.pxe.server.dhcp.range: "127.0.0.9-127.0.0.2" starts after it ends`}},
		{"a gateway outside the DHCP subnet", strings.NewReplacer("A1MAC", "52:54:00:ab:00:02",
			"DHCP", "{ mode: full, subnet: 127.0.0.0/24, range: 127.0.0.100-127.0.0.120, gateway: 10.0.0.1 }").Replace(badBase), nil,
			[]string{`provisioning.pxe.server.dhcp.gateway: "10.0.0.1" is outside dhcp.subnet`}},
		{"an interface without the address", good, []string{"--pxe-ip", "10.250.0.1"},
			[]string{"does not have the server address 10.250.0.1", "provisioning.pxe.server.ip"}},
		{"a port in use", good, []string{"--tftp-port", busyPort}, []string{"address already in use", "--tftp-port"}},
		{"a boot file for an architecture nix8s does not boot", good, []string{"--pxe-boot-file", "10=ipxe-arm32.efi"},
			[]string{`--pxe-boot-file "10=ipxe-arm32.efi": architecture 10 is not one nix8s boots; known: 0 (x86 BIOS)`}},
		{"a boot file missing from the iPXE directory", good, []string{"--pxe-boot-file", "11=snp-arm64.efi"},
			[]string{"the boot file of architecture 11 (ARM64 UEFI), /usr/lib/ipxe/snp-arm64.efi, is missing", "--pxe-boot-file ARCH=FILE"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			os.WriteFile(f, []byte(tc.config), 0o644)
			args := append([]string{"serve", "--listen", freeAddr(t), "--state-dir", dir, "--config", f, "--pxe-cluster", "lab",
				"--pxe-images", dir, "--dhcp-port", free(), "--tftp-port", free()}, tc.args...)
			code, _, stderr := runCmd(t, context.Background(), map[string]string{"DATABASE_URL": db}, args...)
			if code != 1 {
				t.Fatalf("exit %d, want 1:\n%s", code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if strings.Contains(stderr, "nix8sd serving") {
				t.Errorf("served before refusing:\n%s", stderr)
			}
			st, err := store.Open(context.Background(), db)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if ms, _ := st.Machines(context.Background(), store.MachineFilter{Limit: 10}); len(ms) != 0 {
				t.Errorf("machines were created by a refused start: %d", len(ms))
			}
			if snap, _ := st.Snapshot(context.Background()); snap != nil && len(snap.Config) != 0 {
				t.Errorf("the refused config was stored: %v", snap.Config)
			}
		})
	}
}

// The daemon's own workflow, without a config file: it starts with network boot on an empty inventory
// (settings from the flags), the config comes over REST with a member that has no MAC, a machine appears
// through the discovery endpoint, an operator assigns it over REST, and its next boot script installs it.
func TestServeNetworkBootDiscoverAssignInstall(t *testing.T) {
	requireServeBoot(t)
	dir := t.TempDir()
	images := filepath.Join(dir, "images")
	for _, id := range []string{"lab-w1", "discovery"} {
		os.MkdirAll(filepath.Join(images, id), 0o755)
		os.WriteFile(filepath.Join(images, id, "bzImage"), []byte("k"), 0o644)
		os.WriteFile(filepath.Join(images, id, "initrd"), []byte("i"), 0o644)
	}
	tok, _ := store.NewToken()
	tokFile := filepath.Join(dir, "token")
	os.WriteFile(tokFile, []byte(tok), 0o600)
	port := func() string {
		c, _ := net.ListenPacket("udp4", "127.0.0.1:0")
		defer c.Close()
		return fmt.Sprint(c.LocalAddr().(*net.UDPAddr).Port)
	}
	url, stop := serve(t, map[string]string{"DATABASE_URL": pgtest.Database(t)}, "--state-dir", dir, "--admin-token-file", tokFile,
		"--pxe-interface", "lo", "--pxe-ip", "127.0.0.1", "--pxe-images", images, "--dhcp-port", port(), "--tftp-port", port())
	defer func() {
		if code, stderr := stop(); code != 0 || t.Failed() {
			t.Logf("nix8sd exited %d:\n%s", code, tail(stderr, 8000))
		}
	}()
	cfg := `{"nodes": {"vm": {"install": {"disk": "/dev/vda"}}}, "clusters": {"lab": {"members": {
		"w1": {"node": "vm", "role": "server", "ip": "127.0.0.31"}}}}, "provisioning": {"pxe": {"server": {"ip": "127.0.0.1"}}}}`
	if code := put(t, url+"/v1/config", tok, "application/json", []byte(cfg)); code != 200 {
		t.Fatalf("PUT /v1/config: %d", code)
	}
	post := func(path, token, body string) int {
		req, _ := http.NewRequest("POST", url+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	script := func(mac string) string { return bootScript(t, url, mac) }
	const mac = "52:54:00:ab:01:01"
	if s := script(mac); !strings.Contains(s, "images/discovery/bzImage") {
		t.Fatalf("unknown machine's script:\n%s", s)
	}
	if code := post("/machine/v1/discover?mac="+mac, "", `{"mac": "`+mac+`", "cpus": 4}`); code != 204 {
		t.Fatalf("discover: %d", code)
	}
	if code := post("/v1/machines/"+mac+"/assign", tok, `{"cluster": "lab", "member": "w1"}`); code != 200 {
		t.Fatalf("assign: %d", code)
	}
	s := script(mac)
	if !strings.Contains(s, "images/lab-w1/bzImage") || !strings.Contains(s, "nix8s.generation=1") || !strings.Contains(s, "nix8s.token=") {
		t.Fatalf("assigned machine's script:\n%s", s)
	}
	var m map[string]any
	getJSON(t, url+"/v1/machines/"+mac, tok, &m)
	if m["state"] != "installing" || m["installArmed"] != true || m["facts"].(map[string]any)["cpus"] != float64(4) {
		t.Fatalf("machine: %v", m)
	}
}

// requireServeBoot skips (or under CI=true fails) a test of nix8sd serving network boot where it cannot run:
// binding DHCP to an interface needs root, and the daemon serves Debian's iPXE binaries.
func requireServeBoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		pxetest.Unavailable(t, "binding DHCP to an interface needs root (SO_BINDTODEVICE)")
	}
	if _, err := os.Stat("/usr/lib/ipxe/undionly.kpxe"); err != nil {
		pxetest.Unavailable(t, "the ipxe package (/usr/lib/ipxe): %v", err)
	}
}
