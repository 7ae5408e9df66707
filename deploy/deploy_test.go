// Package deploy holds the daemon's deployment files (a NixOS module, a systemd unit); its tests check them.
package deploy

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func evalModule(t *testing.T, settings string) map[string]any {
	t.Helper()
	nix, err := exec.LookPath("nix-instantiate")
	if err != nil {
		t.Skip("nix-instantiate not installed")
	}
	// The JSON is stdout; stderr carries Nix's messages (on a machine without the nixbld group, a warning).
	var stderr bytes.Buffer
	cmd := exec.Command(nix, "--eval", "--strict", "--json", "--readonly-mode", "--expr",
		"import ./testdata/eval-module.nix ("+settings+")")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("evaluating the module: %v\n%s", err, stderr.Bytes())
	}
	var cfg map[string]any
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatalf("decoding nix-instantiate's stdout %q: %v", out, err)
	}
	return cfg
}

func get(m map[string]any, path ...string) any {
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[p]
	}
	return v
}

func TestNixOSModuleLocalDatabase(t *testing.T) {
	cfg := evalModule(t, `{ enable = true; package = "/nix/store/x-nix8sd"; openFirewall = true; adminTokenFile = "/run/secrets/admin"; }`)
	svc := get(cfg, "systemd", "services", "nix8sd", "serviceConfig").(map[string]any)
	exec := svc["ExecStart"].(string)
	for _, want := range []string{"/nix/store/x-nix8sd/bin/nix8sd 'serve' '--listen' '0.0.0.0:8080'", "'--admin-token-file' '%d/admin-token'"} {
		if !strings.Contains(exec, want) {
			t.Errorf("ExecStart %q lacks %q", exec, want)
		}
	}
	if lc, _ := svc["LoadCredential"].([]any); len(lc) != 1 || lc[0] != "admin-token:/run/secrets/admin" {
		t.Errorf("LoadCredential %v", svc["LoadCredential"])
	}
	if get(cfg, "systemd", "services", "nix8sd", "environment", "DATABASE_URL") != "postgres:///nix8sd?host=/run/postgresql" {
		t.Errorf("environment %v", get(cfg, "systemd", "services", "nix8sd", "environment"))
	}
	if get(cfg, "services", "postgresql", "enable") != true {
		t.Error("no local PostgreSQL")
	}
	users, _ := get(cfg, "services", "postgresql", "ensureUsers").([]any)
	if len(users) != 1 || get(users[0].(map[string]any), "name") != "nix8sd" {
		t.Errorf("ensureUsers %v", users)
	}
	udp, _ := get(cfg, "networking", "firewall", "allowedUDPPorts").([]any)
	tcp, _ := get(cfg, "networking", "firewall", "allowedTCPPorts").([]any)
	if len(udp) != 2 || udp[0] != 67.0 || udp[1] != 69.0 || len(tcp) != 1 || tcp[0] != 8080.0 {
		t.Errorf("firewall udp %v tcp %v", udp, tcp)
	}
}

func TestNixOSModuleRemoteDatabase(t *testing.T) {
	cfg := evalModule(t, `{ enable = true; package = "/p"; database = { createLocally = false; urlFile = "/run/secrets/db"; }; }`)
	if get(cfg, "services", "postgresql") != nil && len(get(cfg, "services", "postgresql").(map[string]any)) != 0 {
		t.Errorf("local PostgreSQL configured: %v", get(cfg, "services", "postgresql"))
	}
	if env := get(cfg, "systemd", "services", "nix8sd", "serviceConfig", "EnvironmentFile").([]any); len(env) != 1 || env[0] != "/run/secrets/db" {
		t.Errorf("EnvironmentFile %v", env)
	}
	if _, set := get(cfg, "systemd", "services", "nix8sd", "environment").(map[string]any)["DATABASE_URL"]; set {
		t.Error("DATABASE_URL set beside urlFile")
	}
	if get(cfg, "networking", "firewall") != nil && len(get(cfg, "networking", "firewall").(map[string]any)) != 0 {
		t.Error("firewall opened without openFirewall")
	}
}

func TestNixOSModuleDisabled(t *testing.T) {
	if cfg := evalModule(t, `{ }`); len(cfg) != 0 {
		t.Errorf("a disabled module sets %v", cfg)
	}
}

func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile("nix8sd.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{"ExecStart=/usr/local/bin/nix8sd serve", "StateDirectory=nix8sd", "User=nix8sd", "LoadCredential=admin-token:", "WantedBy=multi-user.target"} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %s", want)
		}
	}
}

func TestNixOSModuleOperations(t *testing.T) {
	execStart := func(cfg map[string]any) string {
		return get(cfg, "systemd", "services", "nix8sd", "serviceConfig", "ExecStart").(string)
	}
	// By default the jobs run nixos-anywhere and nixos-rebuild from pkgs, with ssh on PATH; the daemon's own
	// defaults hold for the rest.
	cfg := evalModule(t, `{ enable = true; package = "/p"; }`)
	exec := execStart(cfg)
	for _, want := range []string{"'--nixos-anywhere' '/nix/store/x-nixos-anywhere/bin/nixos-anywhere'", "'--nixos-rebuild' '/nix/store/x-nixos-rebuild/bin/nixos-rebuild'"} {
		if !strings.Contains(exec, want) {
			t.Errorf("ExecStart %q lacks %q", exec, want)
		}
	}
	for _, flag := range []string{"--secrets", "--known-hosts", "--ssh-config", "--jobs", "--job-timeout"} {
		if strings.Contains(exec, flag) {
			t.Errorf("ExecStart %q sets %s by default", exec, flag)
		}
	}
	if path, _ := get(cfg, "systemd", "services", "nix8sd", "path").([]any); len(path) != 2 || path[1] != "/nix/store/x-openssh" {
		t.Errorf("path %v, want nix and openssh", path)
	}

	cfg = evalModule(t, `{ enable = true; package = "/p"; operations = { nixosAnywhere = null; secretsDir = "/var/lib/nix8sd-secrets";
		knownHostsFile = "/etc/nix8sd/known_hosts"; sshConfigFile = "none"; jobs = 4; jobTimeout = "4h"; }; }`)
	exec = execStart(cfg)
	for _, want := range []string{"'--secrets' '/var/lib/nix8sd-secrets'", "'--known-hosts' '/etc/nix8sd/known_hosts'",
		"'--ssh-config' 'none'", "'--jobs' '4'", "'--job-timeout' '4h'"} {
		if !strings.Contains(exec, want) {
			t.Errorf("ExecStart %q lacks %q", exec, want)
		}
	}
	if strings.Contains(exec, "--nixos-anywhere") {
		t.Errorf("ExecStart %q names a nixos-anywhere though the option is null", exec)
	}
}

func TestNixOSModulePXE(t *testing.T) {
	cfg := evalModule(t, `{ enable = true; package = "/p"; }`)
	if exec := get(cfg, "systemd", "services", "nix8sd", "serviceConfig", "ExecStart").(string); strings.Contains(exec, "--pxe") {
		t.Errorf("network boot on by default: %s", exec)
	}
	cfg = evalModule(t, `{ enable = true; package = "/p"; openFirewall = true; pxe = { enable = true; clusters = [ "prod" "lab" ];
		interface = "eno1"; mode = "full"; autoInstall = false; bootFiles = { "11" = "snp-arm64.efi"; "6" = ""; }; }; }`)
	exec := get(cfg, "systemd", "services", "nix8sd", "serviceConfig", "ExecStart").(string)
	for _, want := range []string{"'--pxe' '--ipxe-dir' '/nix/store/x-ipxe' '--pxe-boot-file' '11=snp-arm64.efi' '--pxe-boot-file' '6=' '--pxe-cluster' 'prod' '--pxe-cluster' 'lab' '--pxe-interface' 'eno1' '--pxe-mode' 'full' '--no-auto-install'"} {
		if !strings.Contains(exec, want) {
			t.Errorf("ExecStart %q lacks %q", exec, want)
		}
	}
	if strings.Contains(exec, "--pxe-ip") || strings.Contains(exec, "--discovery") {
		t.Errorf("ExecStart %q sets flags left to the inventory", exec)
	}
	if udp, _ := get(cfg, "networking", "firewall", "allowedUDPPorts").([]any); len(udp) != 3 || udp[2] != 4011.0 {
		t.Errorf("firewall udp %v", udp)
	}
	if strings.Contains(exec, "--machine-listen") {
		t.Errorf("ExecStart %q has a machine listener by default", exec)
	}

	// A machine listener of its own: the flag, and its port opened beside the API's.
	cfg = evalModule(t, `{ enable = true; package = "/p"; openFirewall = true; listenAddress = "192.168.1.10";
		pxe = { enable = true; machinePort = 8081; machineListenAddress = "10.0.0.1"; }; }`)
	exec = get(cfg, "systemd", "services", "nix8sd", "serviceConfig", "ExecStart").(string)
	for _, want := range []string{"'--listen' '192.168.1.10:8080'", "'--machine-listen' '10.0.0.1:8081'"} {
		if !strings.Contains(exec, want) {
			t.Errorf("ExecStart %q lacks %q", exec, want)
		}
	}
	if tcp, _ := get(cfg, "networking", "firewall", "allowedTCPPorts").([]any); len(tcp) != 2 || tcp[0] != 8080.0 || tcp[1] != 8081.0 {
		t.Errorf("firewall tcp %v, want the API's and the machines' port", tcp)
	}
}

// A machine port equal to the API's port fails the evaluation's assertions, naming both fixes.
func TestNixOSModuleMachinePortClash(t *testing.T) {
	failed := func(settings string) []string {
		var msgs []string
		as, _ := get(evalModule(t, settings), "assertions").([]any)
		for _, a := range as {
			if m := a.(map[string]any); m["assertion"] == false {
				msgs = append(msgs, m["message"].(string))
			}
		}
		return msgs
	}
	if msgs := failed(`{ enable = true; package = "/p"; pxe = { enable = true; machinePort = 8081; }; }`); len(msgs) != 0 {
		t.Errorf("failed assertions with distinct ports: %q", msgs)
	}
	msgs := failed(`{ enable = true; package = "/p"; pxe = { enable = true; machinePort = 8080; }; }`)
	if want := "services.nix8sd: pxe.machinePort must differ from port (8080); set it to another port, or to null to serve machines on port"; len(msgs) != 1 || msgs[0] != want {
		t.Errorf("failed assertions %q, want %q", msgs, want)
	}
}
