package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/inventory"
	"github.com/nix8s/nix8s/internal/jobs"
	"github.com/nix8s/nix8s/internal/store"
)

// Operations run the operations for the API; *jobs.Runner implements it.
type Operations interface {
	// Wake has the queue looked at now, after a job was queued.
	Wake()
	// Kubeconfig fetches cluster c's admin kubeconfig (the YAML) and says from which server.
	Kubeconfig(ctx context.Context, c core.Cluster) ([]byte, string, error)
}

var _ Operations = (*jobs.Runner)(nil)

var _ jobs.Planner = (*inventory.Inventory)(nil)

// clusterPlan is inventory.Inventory.ClusterPlan with its errors as the API answers them.
func (s *Server) clusterPlan(ctx context.Context, name string) (core.Cluster, error) {
	c, err := s.inv.ClusterPlan(ctx, name)
	return c, inventoryError(err)
}

// operations answers 501 when this server runs no operations (a daemon without a job runner).
func (s *Server) operations(w http.ResponseWriter, r *http.Request) bool {
	if s.ops == nil {
		s.fail(w, r, &httpError{status: http.StatusNotImplemented, code: "not_implemented", msg: "this nix8sd runs no operations"})
		return false
	}
	return true
}

// paramError is a 400 naming the bad field of a job's parameters.
func paramError(err error) error {
	var pe *jobs.ParamError
	if errors.As(err, &pe) {
		return badRequest(pe.Msg, Problem{Path: pe.Path, Message: pe.Msg})
	}
	return badRequest(err.Error())
}

// selection checks a job's members against the plan: unknown members are 422 with their index.
func selection(c core.Cluster, members []string) error {
	var unknown *core.UnknownMembersError
	if !errors.As(c.CheckMembers(members), &unknown) {
		return nil
	}
	var details []Problem
	for i, at := range unknown.Index {
		details = append(details, Problem{Path: fmt.Sprintf("members[%d]", at), Message: unknown.One(i)})
	}
	return &httpError{status: http.StatusUnprocessableEntity, code: "invalid_config",
		msg: fmt.Sprintf("unknown members of cluster %q; nothing was queued", c.Name), details: details}
}

// queue answers 202 with a new job of kind for cluster c, or 409 while another job of c is queued or running:
// two operations on one cluster at once (two installs racing through the waves, a rollout draining nodes
// an install waits for) help nobody. Dry runs touch nothing and always queue.
func (s *Server) queue(w http.ResponseWriter, r *http.Request, kind, cluster string, dryRun bool, params any) {
	if !dryRun {
		busy, err := s.st.ActiveJob(r.Context(), cluster)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if busy != nil {
			s.fail(w, r, &httpError{status: http.StatusConflict, code: "conflict",
				msg: fmt.Sprintf("cluster %q has job %d (%s) %s; wait until it has finished (GET /v1/jobs/%d)", cluster, busy.ID, busy.Kind, busy.Status, busy.ID)})
			return
		}
	}
	data, err := json.Marshal(params)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	j, err := s.st.NewJob(r.Context(), kind, &cluster, nil, data)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.ops.Wake()
	s.log.Info("job queued", "job", j.ID, "kind", kind, "cluster", cluster, "by", actor(r))
	w.Header().Set("Location", fmt.Sprintf("/v1/jobs/%d", j.ID))
	writeJSON(w, http.StatusAccepted, j)
}

func (s *Server) postInstall(w http.ResponseWriter, r *http.Request) {
	var p jobs.InstallParams
	s.postOperation(w, r, jobs.KindInstall, &p, &p.Members, &p.DryRun)
}

func (s *Server) postRollout(w http.ResponseWriter, r *http.Request) {
	var p jobs.RolloutParams
	s.postOperation(w, r, jobs.KindRollout, &p, &p.Members, &p.DryRun)
}

// postOperation queues a job of kind after decoding and checking its parameters into p; members and dryRun
// point into p, so they are read after decoding.
func (s *Server) postOperation(w http.ResponseWriter, r *http.Request, kind string, p interface{ Check() error }, members *[]string, dryRun *bool) {
	if !s.operations(w, r) {
		return
	}
	if err := s.decodeStrict(w, r, p); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := p.Check(); err != nil {
		s.fail(w, r, paramError(err))
		return
	}
	c, err := s.clusterPlan(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := selection(c, *members); err != nil {
		s.fail(w, r, err)
		return
	}
	s.queue(w, r, kind, c.Name, *dryRun, p)
}

// getKubeconfig fetches the cluster's admin kubeconfig while the client waits. It holds the cluster's admin
// credentials: admin scope only, and it is neither logged nor stored.
func (s *Server) getKubeconfig(w http.ResponseWriter, r *http.Request) {
	if !s.operations(w, r) {
		return
	}
	c, err := s.clusterPlan(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	data, from, err := s.ops.Kubeconfig(r.Context(), c)
	if err != nil {
		s.fail(w, r, &httpError{status: http.StatusServiceUnavailable, code: "unavailable", msg: err.Error()})
		return
	}
	s.log.Info("kubeconfig handed out", "cluster", c.Name, "from", from, "by", actor(r))
	w.Header().Set("Content-Type", "application/yaml")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(data)
}

// jobWithResult is a job as GET /v1/jobs/{id} answers it: with what it produced.
type jobWithResult struct {
	*store.Job
	Result json.RawMessage `json:"result"`
}
