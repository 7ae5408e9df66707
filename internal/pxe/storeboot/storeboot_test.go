package storeboot

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nix8s/nix8s/internal/pgtest"
	"github.com/nix8s/nix8s/internal/pxe"
	"github.com/nix8s/nix8s/internal/store"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type images struct{}

func (images) Installer(_ context.Context, cluster, member string) (string, net.IP, error) {
	if cluster == "dev" && member == "server" {
		return "installer-dev-server", net.ParseIP("192.168.1.10"), nil
	}
	return "", nil, errors.New("no such member")
}

const cfg = `{"clusters": {"dev": {"members": {"server": {"role": "server", "ip": "192.168.1.10", "network": {"mac": "52:54:00:ee:00:01"}}}}}}`

// The adapter on a real PostgreSQL with the daemon's migrations: the boot decision follows the machine's
// state in the database, discovery creates machines, progress needs the armed generation's token.
func TestAdapterOnTheStore(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, pgtest.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	json.Unmarshal([]byte(cfg), &c)
	if _, err := st.Modify(ctx, "test", func(*store.Snapshot) (map[string]any, error) { return c, nil }); err != nil {
		t.Fatal(err)
	}
	arming := &MemArming{}
	a := &Adapter{Store: st, Arming: arming, Images: images{}, DiscoveryImage: "discovery"}
	hw, _ := net.ParseMAC("52:54:00:ee:00:01")
	mac := hw.String()
	boot := func(want pxe.Action) pxe.Boot {
		t.Helper()
		b, err := a.Boot(ctx, hw, pxe.FirmwareIPXE)
		if err != nil || b.Action != want {
			t.Fatalf("boot: %+v, %v; want %s", b, err, want)
		}
		return b
	}
	boot(pxe.ActionDiscover)
	if err := a.Discovered(ctx, hw, json.RawMessage(`{"mac":"52:54:00:ee:00:01","cpus":4}`)); err != nil {
		t.Fatal(err)
	}
	if m, err := st.Machine(ctx, mac); err != nil || m.State != "discovered" || !strings.Contains(string(m.Facts), `"cpus": 4`) {
		t.Fatalf("after discovery: %+v %v", m, err)
	}
	if err := a.Discovered(ctx, hw, json.RawMessage(`{"mac":"52:54:00:ee:00:01","cpus":8}`)); err != nil {
		t.Fatalf("facts refresh: %v", err)
	}
	// The operator assigns and arms the install (what POST /v1/machines/{mac}/reinstall or the install job do).
	installing := "installing"
	if _, err := st.UpdateMachine(ctx, "op", mac, store.MachineChange{Assign: &[2]string{"dev", "server"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateMachine(ctx, "op", mac, store.MachineChange{State: &installing}); err != nil {
		t.Fatal(err)
	}
	boot(pxe.ActionLocal) // installing but not armed: never wipe on our own
	tok, gen, _ := arming.Arm(ctx, mac)
	b := boot(pxe.ActionInstall)
	if b.Image != "installer-dev-server" || b.Generation != gen || !b.IP.Equal(net.ParseIP("192.168.1.10")) || b.Member != "dev-server" {
		t.Fatalf("install boot: %+v", b)
	}

	h := &pxe.HTTP{Booter: a, Machines: a, Images: pxe.DirImages{Dir: t.TempDir()}, BaseURL: "http://10.97.0.1"}
	post := func(tok, body string) int {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/machine/v1/progress?mac="+mac, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	if code := post("wrong", `{"generation":1,"phase":"disko"}`); code != http.StatusForbidden {
		t.Errorf("wrong token: %d", code)
	}
	if code := post(tok, `{"generation":1,"phase":"disko"}`); code != http.StatusNoContent {
		t.Errorf("progress: %d", code)
	}
	if code := post(tok, `{"generation":1,"phase":"reboot","done":true}`); code != http.StatusNoContent {
		t.Errorf("done: %d", code)
	}
	if code := post(tok, `{"generation":1,"phase":"again"}`); code != http.StatusForbidden {
		t.Errorf("token after done: %d", code)
	}
	boot(pxe.ActionLocal) // done: the next network boot goes to the disk

	// A failed install, reported: the machine moves to install_failed and boots its disk.
	tok, _, _ = arming.Arm(ctx, mac)
	if code := post(tok, `{"generation":2,"phase":"disko","error":"no disk /dev/sda"}`); code != http.StatusNoContent {
		t.Errorf("error report: %d", code)
	}
	if m, _ := st.Machine(ctx, mac); m.State != "install_failed" {
		t.Errorf("state after a reported failure: %s", m.State)
	}
	boot(pxe.ActionLocal)
	// Discovery cannot rewrite the facts of a machine that is no longer discovered.
	a.Discovered(ctx, hw, json.RawMessage(`{"mac":"52:54:00:ee:00:01","cpus":1}`))
	if m, _ := st.Machine(ctx, mac); !strings.Contains(string(m.Facts), `"cpus": 8`) {
		t.Errorf("facts rewritten in state %s: %s", m.State, m.Facts)
	}
}
