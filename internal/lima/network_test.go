package lima

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// MAC is Lima's: the vectors are the output of limayaml.MACAddress from lima-vm/lima v1.2.2 (the newest the
// Go module proxy here serves; the function is the same in v2.2) for these instance directories on a host
// whose /etc/machine-id was 3d1219c7c4c5404aaa1f6d2a48adfda4.
func TestMACIsLimas(t *testing.T) {
	const id = "3d1219c7c4c5404aaa1f6d2a48adfda4"
	for dir, want := range map[string]string{
		"/home/dev/.lima/nix8s-dev-server":  "52:55:55:51:d1:a0",
		"/Users/dev/.lima/nix8s-dev-agent1": "52:55:55:db:ff:13",
	} {
		if got := MAC(id, dir); got != want {
			t.Errorf("MAC(%s) = %s, want %s", dir, got, want)
		}
	}
}

// Reserve keeps other addresses' entries (Lima's gateway, other clusters), moves a MAC that held another address
// and says when nothing changed.
func TestReserve(t *testing.T) {
	file := filepath.Join(t.TempDir(), "_networks", "nix8s-dev", "leases.json")
	for _, tc := range []struct {
		name    string
		have    string // file content; empty: no file
		want    map[string]string
		changed bool
		after   map[string]string
	}{
		{"no file yet", "", map[string]string{"192.168.107.10": "52:55:55:00:00:01"}, true,
			map[string]string{"192.168.107.10": "52:55:55:00:00:01"}},
		{"the gateway and others stay, a moved MAC loses its old address",
			`{"192.168.107.2":"5a:94:ef:e4:0c:dd","192.168.107.3":"52:55:55:00:00:01","192.168.107.4":"52:55:55:99:99:99"}`,
			map[string]string{"192.168.107.10": "52:55:55:00:00:01"}, true,
			map[string]string{"192.168.107.2": "5a:94:ef:e4:0c:dd", "192.168.107.4": "52:55:55:99:99:99", "192.168.107.10": "52:55:55:00:00:01"}},
		{"already reserved", `{"192.168.107.2":"5a:94:ef:e4:0c:dd","192.168.107.10":"52:55:55:00:00:01"}`,
			map[string]string{"192.168.107.10": "52:55:55:00:00:01"}, false,
			map[string]string{"192.168.107.2": "5a:94:ef:e4:0c:dd", "192.168.107.10": "52:55:55:00:00:01"}},
		{"written by Lima with no leases", "null\n", map[string]string{"192.168.107.10": "52:55:55:00:00:01"}, true,
			map[string]string{"192.168.107.10": "52:55:55:00:00:01"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.RemoveAll(filepath.Dir(file))
			if tc.have != "" {
				os.MkdirAll(filepath.Dir(file), 0o755)
				os.WriteFile(file, []byte(tc.have), 0o644)
			}
			changed, err := Reserve(file, tc.want)
			if err != nil {
				t.Fatal(err)
			}
			if changed != tc.changed {
				t.Errorf("changed = %v, want %v", changed, tc.changed)
			}
			var got map[string]string
			b, _ := os.ReadFile(file)
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if !slicesEqualMap(got, tc.after) {
				t.Errorf("leases %v, want %v", got, tc.after)
			}
		})
	}
}

// limactl's --json output is read as a stream: one object a line (stdout not a terminal), indented objects
// (a terminal), or nothing (no instances).
func TestDecodeStream(t *testing.T) {
	for in, want := range map[string]int{
		"": 0,
		`{"name":"a","status":"Running"}` + "\n" + `{"name":"b"}` + "\n": 2,
		"{\n    \"name\": \"a\",\n    \"sshLocalPort\": 60022\n}\n":      1,
	} {
		got, err := decodeStream[Instance]([]byte(in))
		if err != nil || len(got) != want {
			t.Errorf("%q: %d instances (%v), want %d", in, len(got), err, want)
		}
	}
}
