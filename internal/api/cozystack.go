package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/cozystack"
	"github.com/nix8s/nix8s/internal/jobs"
)

// cozystackStatuser is what of Operations reads a Cozystack platform's state; *jobs.Runner has it. Kept out of
// Operations so that its other implementations need not.
type cozystackStatuser interface {
	CozystackStatus(ctx context.Context, c core.Cluster) (*cozystack.Report, error)
}

var _ cozystackStatuser = (*jobs.Runner)(nil)

// cozystackPlan is the plan of the cluster in the path when it runs Cozystack with both manifests pinned; a
// cluster without Cozystack, or with a manifest that bootstrap would refuse, is 422 naming the setting.
func (s *Server) cozystackPlan(r *http.Request, pinned bool) (core.Cluster, error) {
	c, err := s.clusterPlan(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		return c, err
	}
	if c.Cozystack == nil {
		return c, &httpError{status: http.StatusUnprocessableEntity, code: "invalid_config",
			msg:     fmt.Sprintf("cluster %q has no Cozystack", c.Name),
			details: []Problem{{Path: "clusters." + c.Name + ".cozystack.enable", Message: "set clusters." + c.Name + ".cozystack.enable = true"}}}
	}
	if pinned {
		if err := cozystack.CheckPinned(c); err != nil {
			return c, &httpError{status: http.StatusUnprocessableEntity, code: "invalid_config",
				msg:     fmt.Sprintf("cluster %q's Cozystack manifests are not pinned; nothing was queued", c.Name),
				details: []Problem{{Path: "clusters." + c.Name + ".cozystack.manifests", Message: err.Error()}}}
		}
	}
	return c, nil
}

// postCozystackBootstrap queues a cozystack-bootstrap job (internal/jobs/cozystack.go), as install and rollout
// queue theirs: 202 with the job, 409 while another job of the cluster is queued or running.
func (s *Server) postCozystackBootstrap(w http.ResponseWriter, r *http.Request) {
	if !s.operations(w, r) {
		return
	}
	var p jobs.CozystackParams
	if err := s.decodeStrict(w, r, &p); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := p.Check(); err != nil {
		s.fail(w, r, paramError(err))
		return
	}
	c, err := s.cozystackPlan(r, true)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.queue(w, r, jobs.KindCozystackBootstrap, c.Name, false, p)
}

// getCozystackStatus reads the platform's state now, while the client waits (nix8s cozystack status): 200
// with the report whether or not it is ready, 503 when the cluster's API server could not be reached.
func (s *Server) getCozystackStatus(w http.ResponseWriter, r *http.Request) {
	if !s.operations(w, r) {
		return
	}
	st, ok := s.ops.(cozystackStatuser)
	if !ok {
		s.fail(w, r, &httpError{status: http.StatusNotImplemented, code: "not_implemented", msg: "this nix8sd cannot read Cozystack's state"})
		return
	}
	c, err := s.cozystackPlan(r, false)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rep, err := st.CozystackStatus(r.Context(), c)
	if err != nil {
		s.fail(w, r, &httpError{status: http.StatusServiceUnavailable, code: "unavailable", msg: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, rep)
}
