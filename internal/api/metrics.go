package api

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/nix8s/nix8s/internal/store"
)

type metrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	transitions *prometheus.CounterVec
	jobDuration *prometheus.HistogramVec
	jobFailures *prometheus.CounterVec
	stateTime   *prometheus.HistogramVec
	failures    *prometheus.CounterVec
	locks       *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry, st *store.Store) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nix8s_api_requests_total", Help: "API requests by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nix8s_api_request_duration_seconds", Help: "API request latency by route pattern and method.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route", "method"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nix8s_machine_transitions_total", Help: "Machine state transitions made by this daemon.",
		}, []string{"from", "to"}),
		jobDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nix8s_job_duration_seconds", Help: "Duration of finished jobs by kind and final status.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}, []string{"kind", "status"}),
		jobFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nix8s_job_failures_total", Help: "Jobs that ended failed, by kind.",
		}, []string{"kind"}),
		stateTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nix8s_machine_state_duration_seconds",
			Help:    "How long machines stayed in a state before leaving it, by state and next state (state=\"installing\": install durations; to=\"install_failed\": failed installs).",
			Buckets: prometheus.ExponentialBuckets(10, 2, 12),
		}, []string{"state", "to"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nix8s_machine_failures_total",
			Help: "Machines moved to a failed state by this daemon, by state and cause (installer, deadline, job, operator, daemon).",
		}, []string{"state", "cause"}),
		locks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nix8s_machine_locks_total",
			Help: "Machines this daemon locked for a conflict, by cause (identity: a report from other hardware; two-clients: two clients in one install; discovery: a discovery report for a machine that is installing).",
		}, []string{"cause"}),
	}
	reg.MustRegister(m.requests, m.duration, m.transitions, m.jobDuration, m.jobFailures, m.stateTime, m.failures, m.locks,
		&dbCollector{st: st}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) transition(from, to string) { m.transitions.WithLabelValues(from, to).Inc() }

func (m *metrics) failed(state, cause string) { m.failures.WithLabelValues(state, cause).Inc() }

func (m *metrics) locked(cause string) { m.locks.WithLabelValues(cause).Inc() }

func (m *metrics) left(state, to string, seconds float64) {
	m.stateTime.WithLabelValues(state, to).Observe(seconds)
}

func (m *metrics) jobFinished(kind, status string, seconds float64) {
	m.jobDuration.WithLabelValues(kind, status).Observe(seconds)
	if status == "failed" {
		m.jobFailures.WithLabelValues(kind).Inc()
	}
}

// observe counts every request by its route pattern (not its path, to keep label values bounded) and logs it.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		next.ServeHTTP(ww, r)
		route := "unmatched"
		if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
			route = rc.RoutePattern()
		}
		code := ww.Status()
		if code == 0 {
			code = http.StatusOK
		}
		d := time.Since(start)
		s.m.requests.WithLabelValues(route, r.Method, strconv.Itoa(code)).Inc()
		s.m.duration.WithLabelValues(route, r.Method).Observe(d.Seconds())
		s.log.LogAttrs(r.Context(), levelFor(code), "request",
			slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("route", route),
			slog.Int("status", code), slog.Duration("duration", d), slog.String("request_id", middleware.GetReqID(r.Context())))
	})
}

// dbCollector reads machine and job counts from the database at scrape time, so that every daemon sharing the
// database reports the same numbers.
type dbCollector struct{ st *store.Store }

var (
	machinesDesc = prometheus.NewDesc("nix8s_machines", "Machines by state and assigned cluster (\"\" when unassigned).", []string{"state", "cluster"}, nil)
	jobsDesc     = prometheus.NewDesc("nix8s_jobs", "Jobs by kind and status.", []string{"kind", "status"}, nil)
	upDesc       = prometheus.NewDesc("nix8s_database_up", "1 when the inventory database answered the last scrape.", nil, nil)
	awaitingDesc = prometheus.NewDesc("nix8s_machines_awaiting_approval", "Machines whose secrets wait for POST /v1/machines/{mac}/approve (provisioning.pxe.approve).", nil, nil)
)

func (c *dbCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- machinesDesc
	ch <- jobsDesc
	ch <- upDesc
	ch <- awaitingDesc
}

func (c *dbCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ms, err := c.st.MachineCounts(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, 0)
		return
	}
	js, err := c.st.JobCounts(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, 0)
		return
	}
	awaiting, err := c.st.AwaitingApproval(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(awaitingDesc, prometheus.GaugeValue, float64(awaiting))
	for _, m := range ms {
		ch <- prometheus.MustNewConstMetric(machinesDesc, prometheus.GaugeValue, float64(m.N), string(m.State), m.Cluster)
	}
	for _, j := range js {
		ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(j.N), j.Kind, j.Status)
	}
}
