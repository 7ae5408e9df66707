package storeboot

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/time/rate"

	"github.com/nix8s/nix8s/internal/pxe"
)

// Discovery spam against the real handler on PostgreSQL: the same facts again write no event, and new MACs
// beyond the cap of machines in state discovered are refused with 503 and counted.
func TestDiscoverSpamIsBounded(t *testing.T) {
	st, a := setup(t)
	a.MaxDiscovered, a.MaxDiscoveredPerSegment = 5, -1 // the overall cap; per segment: TestDiscoveryIsBoundedPerSegment
	ctx := t.Context()
	metrics := pxe.NewMetrics(nil)
	h := &pxe.HTTP{Booter: a, Machines: a, BaseURL: "http://10.0.0.1:8080", ReportRate: rate.Inf, DiscoverRate: rate.Inf, Metrics: metrics}
	srv := httptest.NewServer(h)
	defer srv.Close()
	post := func(mac, facts string) (int, string) {
		t.Helper()
		res, err := http.Post(srv.URL+"/machine/v1/discover?mac="+mac, "application/json", strings.NewReader(facts))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return res.StatusCode, string(b)
	}
	const mac = "52:54:00:dd:00:01"
	for i := range 50 {
		// Key order differs: the facts are compared as JSON values.
		facts := `{"mac":"` + mac + `","cpus":4}`
		if i%2 == 1 {
			facts = `{"cpus":4,"mac":"` + mac + `"}`
		}
		if code, body := post(mac, facts); code != 204 {
			t.Fatalf("report %d: %d %s", i, code, body)
		}
	}
	events, err := st.Events(ctx, mac, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].Kind != "created" {
		t.Fatalf("50 reports of the same facts: want only the created event, got %d: %+v", len(events), events)
	}
	m, _ := st.Machine(ctx, mac)
	if m.Version != 1 {
		t.Errorf("unchanged facts were written: version %d", m.Version)
	}
	if code, _ := post(mac, `{"mac":"`+mac+`","cpus":8}`); code != 204 {
		t.Fatalf("changed facts: %d", code)
	}
	if events, _ = st.Events(ctx, mac, 0, 1000); len(events) != 2 || events[1].Kind != "facts" {
		t.Fatalf("changed facts: want a facts event, got %+v", events)
	}

	created := 1
	refused := 0
	for i := 2; i <= 20; i++ {
		hw := fmt.Sprintf("52:54:00:dd:00:%02x", i)
		code, body := post(hw, `{"mac":"`+hw+`"}`)
		switch code {
		case 204:
			created++
		case 503:
			refused++
			if !strings.Contains(body, `"code":"unavailable"`) || !strings.Contains(body, "state discovered") {
				t.Errorf("refusal body: %s", body)
			}
		default:
			t.Fatalf("new machine %s: %d %s", hw, code, body)
		}
	}
	if created != 5 || refused != 15 {
		t.Errorf("cap 5: created %d, refused %d; want 5 and 15", created, refused)
	}
	if n := counter(t, metrics.Reports.WithLabelValues("discover", "full")); n != 15 {
		t.Errorf("nix8s_pxe_machine_reports_total{kind=discover,result=full} = %v, want 15", n)
	}
	// A known machine still reports under the cap.
	if code, _ := post(mac, `{"mac":"`+mac+`","cpus":16}`); code != 204 {
		t.Errorf("known machine at the cap: %d", code)
	}
}

func counter(t *testing.T, c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
