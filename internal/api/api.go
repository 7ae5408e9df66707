// Package api is nix8sd's HTTP surface: the operators' REST API under /v1 (bearer tokens, read and admin
// scopes), health and metrics endpoints, and the placeholder of the machine-facing API under /machine/v1.
// The contract is openapi/nix8s.yaml; a test checks real responses against it.
package api

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nix8s/nix8s/internal/inventory"
	"github.com/nix8s/nix8s/internal/store"
	"github.com/nix8s/nix8s/openapi"
)

// Options configure a Server.
type Options struct {
	Store *store.Store
	// Inventory is the stored inventory with its plans, shared with the daemon's other readers (the jobs,
	// network boot, the node watcher): the config endpoints change it, the plan and operation endpoints read
	// it.
	Inventory *inventory.Inventory
	// Logger gets one line per request; default slog.Default().
	Logger *slog.Logger
	// Registry gets the daemon's metrics; default a new registry (served at /metrics either way).
	Registry *prometheus.Registry
	// MaxBody bounds request bodies; default 16 MiB.
	MaxBody int64
	// Operations run install, rollout and kubeconfig (internal/jobs); nil answers their endpoints with 501.
	Operations Operations
	// Boot serves /boot/ and /machine/v1/ (internal/pxe's HTTP); nil answers them with 501.
	Boot http.Handler
	// OnReinstall, when set, runs after POST /v1/machines/{mac}/reinstall armed an install.
	OnReinstall func(ctx context.Context, m *store.Machine)
}

// Server serves the API.
type Server struct {
	st      *store.Store
	inv     *inventory.Inventory
	log     *slog.Logger
	reg     *prometheus.Registry
	m       *metrics
	ops     Operations
	boot    http.Handler
	onArm   func(ctx context.Context, m *store.Machine)
	maxBody int64
	handler http.Handler
}

// New builds the server and installs the store's metric hooks.
func New(o Options) *Server {
	s := &Server{st: o.Store, inv: o.Inventory, log: o.Logger, reg: o.Registry, ops: o.Operations, maxBody: o.MaxBody,
		boot: o.Boot, onArm: o.OnReinstall}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
	}
	if s.maxBody == 0 {
		s.maxBody = 16 << 20
	}
	s.m = newMetrics(s.reg, s.st)
	s.st.Hooks.Transition = s.m.transition
	s.st.Hooks.Left = s.m.left
	s.st.Hooks.Failed = s.m.failed
	s.st.Hooks.Locked = s.m.locked
	s.st.Hooks.JobFinished = s.m.jobFinished
	s.handler = s.routes()
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.RequestID, s.observe, middleware.Recoverer)
	r.Use(checkInput) // NUL and invalid UTF-8 in paths and queries: 400, not PostgreSQL's 500
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.URL.Path, nil)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on "+r.URL.Path, nil)
	})

	r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]string{"status": "ok"}) })
	r.Get("/readyz", s.readyz)
	r.Method(http.MethodGet, "/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	r.Get("/v1/openapi.yaml", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(openapi.Spec)
	})

	r.Route("/v1", func(r chi.Router) {
		r.Group(func(r chi.Router) {
			r.Use(s.auth(store.ScopeRead))
			r.Get("/config", s.getConfig)
			r.Get("/nodes", s.listObjects(store.KindNode))
			r.Get("/nodes/{name}", s.getObject(store.KindNode))
			r.Get("/clusters", s.listObjects(store.KindCluster))
			r.Get("/clusters/{name}", s.getObject(store.KindCluster))
			r.Get("/clusters/{cluster}/members", s.listObjects(store.KindMember))
			r.Get("/clusters/{cluster}/members/{name}", s.getObject(store.KindMember))
			r.Get("/clusters/{name}/plan", s.getPlan)
			r.Get("/clusters/{name}/cozystack/status", s.getCozystackStatus)
			r.Get("/provisioning", s.listObjects(store.KindProvisioning))
			r.Get("/provisioning/{name}", s.getObject(store.KindProvisioning))
			r.Get("/machines", s.listMachines)
			r.Get("/machines/{mac}", s.getMachine)
			r.Get("/machines/{mac}/events", s.listEvents)
			r.Get("/machine-states", s.listStates)
			r.Get("/jobs", s.listJobs)
			r.Get("/jobs/{id}", s.getJob)
		})
		r.Group(func(r chi.Router) {
			r.Use(s.auth(store.ScopeAdmin))
			r.Put("/config", s.putConfig)
			r.Put("/nodes/{name}", s.putObject(store.KindNode))
			r.Delete("/nodes/{name}", s.deleteObject(store.KindNode))
			r.Put("/clusters/{name}", s.putObject(store.KindCluster))
			r.Delete("/clusters/{name}", s.deleteObject(store.KindCluster))
			r.Put("/clusters/{cluster}/members/{name}", s.putObject(store.KindMember))
			r.Delete("/clusters/{cluster}/members/{name}", s.deleteObject(store.KindMember))
			r.Put("/provisioning/{name}", s.putObject(store.KindProvisioning))
			r.Delete("/provisioning/{name}", s.deleteObject(store.KindProvisioning))
			r.Post("/machines", s.createMachine)
			r.Post("/machines/{mac}/assign", s.assignMachine)
			r.Post("/machines/{mac}/unassign", s.unassignMachine)
			r.Post("/machines/{mac}/lock", s.lockMachine(true))
			r.Post("/machines/{mac}/unlock", s.lockMachine(false))
			r.Post("/machines/{mac}/transition", s.transitionMachine)
			r.Post("/machines/{mac}/reinstall", s.reinstallMachine)
			r.Post("/machines/{mac}/approve", s.approveMachine)
			r.Delete("/machines/{mac}", s.forgetMachine)
			r.Post("/clusters/{name}/install", s.postInstall)
			r.Post("/clusters/{name}/rollout", s.postRollout)
			r.Post("/clusters/{name}/cozystack/bootstrap", s.postCozystackBootstrap)
			r.Get("/clusters/{name}/kubeconfig", s.getKubeconfig)
		})
	})

	// What booting machines call (internal/pxe): boot scripts and images, discovery and install reports.
	// Separate from /v1: no operator tokens; a machine may only speak about itself (its MAC).
	boot := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.boot == nil {
			writeError(w, http.StatusNotImplemented, "not_implemented",
				"network boot is not enabled on this daemon; start nix8sd serve with --pxe (docs/pxe.md)", nil)
			return
		}
		s.boot.ServeHTTP(w, r)
	})
	r.Handle("/boot/*", boot)
	r.Handle("/machine/v1/*", boot)
	return r
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	// Unauthenticated: the answer says what is wrong, never how the database is reached (user, host, port,
	// name are in the connection error); those go to the log.
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	if err := s.st.Ping(ctx); err != nil {
		s.log.Error("not ready: the database does not answer", "err", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the database is unreachable; the daemon's log says why", nil)
		return
	}
	pending, err := s.st.Pending(ctx)
	if err != nil {
		s.log.Error("not ready: reading the applied migrations", "err", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the database's migrations could not be read; the daemon's log says why", nil)
		return
	}
	if pending {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "database migrations pending; run nix8sd migrate", nil)
		return
	}
	writeJSON(w, 200, map[string]string{"status": "ready"})
}
