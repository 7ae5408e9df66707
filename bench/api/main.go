// Command api is a load test of nix8sd's REST API against a real PostgreSQL and the real Nix core: it runs the
// API in-process on a generated inventory, drives read and write endpoints from concurrent clients and reports
// requests per second and latency percentiles per endpoint.
//
//	go run ./bench/api -duration 10s -concurrency 16
//
// With DATABASE_URL unset it starts a private PostgreSQL (internal/pgembed) in a temporary directory.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nix8s/nix8s"
	"github.com/nix8s/nix8s/internal/api"
	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/inventory"
	"github.com/nix8s/nix8s/internal/pgembed"
	"github.com/nix8s/nix8s/internal/store"
)

type options struct {
	duration    time.Duration
	concurrency int
	members     int
	machines    int
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "how long each scenario runs")
	flag.IntVar(&o.concurrency, "concurrency", 16, "concurrent clients")
	flag.IntVar(&o.members, "members", 200, "members in the generated cluster")
	flag.IntVar(&o.machines, "machines", 1000, "machines in the database")
	flag.Parse()
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "bench: error:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		dir, err := os.MkdirTemp("", "nix8s-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		os.Chmod(dir, 0o711)
		srv, err := pgembed.Start(ctx, pgembed.Options{Dir: dir})
		if err != nil {
			return err
		}
		defer srv.Stop()
		if url, err = srv.CreateDatabase(ctx, "bench"); err != nil {
			return err
		}
	}
	st, err := store.Open(ctx, url)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		return err
	}
	cacheDir, _ := os.MkdirTemp("", "nix8s-bench-core-")
	defer os.RemoveAll(cacheDir)
	ev, err := core.New(core.Options{Lib: nix8s.Lib, CacheDir: cacheDir})
	if err != nil {
		return err
	}
	hs := httptest.NewServer(api.New(api.Options{Store: st, Inventory: inventory.New(inventory.Options{Store: st, Core: ev})}))
	defer hs.Close()
	token, err := st.CreateToken(ctx, "bench", store.ScopeAdmin)
	if err != nil {
		return err
	}
	c := &client{base: hs.URL, token: token, http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.concurrency * 2}}}

	// The inventory: one cluster of o.members members, and o.machines machines, a member's worth assigned.
	cfg := fmt.Sprintf(`{"nodes": {"std": {"install": {"disk": "/dev/sda"}}}, "clusters": {"bench": {"members": {%s}}}}`, members(o.members))
	if code, body := c.do("PUT", "/v1/config", []byte(cfg)); code != 200 {
		return fmt.Errorf("loading the inventory: %d %s", code, body)
	}
	for i := 0; i < o.machines; i++ {
		mac := macOf(i)
		if code, body := c.do("POST", "/v1/machines", []byte(`{"mac": "`+mac+`", "facts": {"cpus": 8}}`)); code != 201 {
			return fmt.Errorf("creating machine: %d %s", code, body)
		}
	}
	fmt.Printf("nix8sd API load test: %d clients, %s per scenario, %d members, %d machines\n\n", o.concurrency, o.duration, o.members, o.machines)
	fmt.Printf("%-44s %9s %9s %9s %9s %9s %7s\n", "scenario", "req/s", "p50", "p90", "p99", "max", "errors")

	var n atomic.Int64
	scenarios := []struct {
		name string
		req  func(worker int) (string, string, []byte, int)
	}{
		{"GET /v1/config", func(int) (string, string, []byte, int) { return "GET", "/v1/config", nil, 200 }},
		{"GET /v1/clusters/bench/members/{m}", func(w int) (string, string, []byte, int) {
			return "GET", fmt.Sprintf("/v1/clusters/bench/members/m%d", int(n.Add(1))%o.members), nil, 200
		}},
		{"GET /v1/machines?state=discovered&limit=100", func(int) (string, string, []byte, int) {
			return "GET", "/v1/machines?state=discovered&limit=100", nil, 200
		}},
		{"GET /v1/machines/{mac}", func(int) (string, string, []byte, int) {
			return "GET", "/v1/machines/" + macOf(int(n.Add(1))%o.machines), nil, 200
		}},
		{"GET /v1/clusters/bench/plan (cached)", func(int) (string, string, []byte, int) {
			return "GET", "/v1/clusters/bench/plan", nil, 200
		}},
		{"POST /v1/machines/{mac}/lock|unlock (write)", func(int) (string, string, []byte, int) {
			i := int(n.Add(1))
			action := "lock"
			if (i/o.machines)%2 == 1 {
				action = "unlock"
			}
			return "POST", "/v1/machines/" + macOf(i%o.machines) + "/" + action, []byte(`{"reason": "bench"}`), 200
		}},
		{"PUT /v1/nodes/{n} (write, core validation)", func(w int) (string, string, []byte, int) {
			return "PUT", fmt.Sprintf("/v1/nodes/n%d", w), []byte(fmt.Sprintf(`{"install": {"disk": "/dev/sd%c"}}`, 'a'+int(n.Add(1))%20)), 0
		}},
	}
	for _, sc := range scenarios {
		res := drive(c, o, sc.req)
		fmt.Printf("%-44s %9.1f %9s %9s %9s %9s %7d\n", sc.name, res.rate, ms(res.p(50)), ms(res.p(90)), ms(res.p(99)), ms(res.p(100)), res.errors)
	}
	return nil
}

type client struct {
	base, token string
	http        *http.Client
}

func (c *client) do(method, path string, body []byte) (int, []byte) {
	req, _ := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.http.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

type result struct {
	rate      float64
	latencies []time.Duration
	errors    int64
}

func (r result) p(q float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	i := int(float64(len(r.latencies)-1) * q / 100)
	return r.latencies[i]
}

func drive(c *client, o options, req func(worker int) (string, string, []byte, int)) result {
	var mu sync.Mutex
	var all []time.Duration
	var errs atomic.Int64
	stop := time.Now().Add(o.duration)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < o.concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(stop) {
				method, path, body, want := req(w)
				t0 := time.Now()
				code, _ := c.do(method, path, body)
				mine = append(mine, time.Since(t0))
				if (want != 0 && code != want) || code == 0 || code >= 500 {
					errs.Add(1)
				}
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	return result{rate: float64(len(all)) / elapsed.Seconds(), latencies: all, errors: errs.Load()}
}

func members(n int) string {
	var b bytes.Buffer
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		role := "agent"
		if i == 0 {
			role = "server"
		}
		fmt.Fprintf(&b, `"m%d": {"node": "std", "role": "%s", "ip": "10.%d.%d.%d"}`, i, role, i/65536%256, i/256%256, i%256+1)
	}
	return b.String()
}

func macOf(i int) string {
	return fmt.Sprintf("02:00:00:%02x:%02x:%02x", (i>>16)&255, (i>>8)&255, i&255)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }
