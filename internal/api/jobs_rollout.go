package api

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/nix8s/nix8s/internal/jobs"
)

func (s *Server) postRollout(w http.ResponseWriter, r *http.Request) {
	if !s.operations(w, r) {
		return
	}
	var p jobs.RolloutParams
	if err := s.decodeStrict(w, r, &p); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := p.Check(); err != nil {
		s.fail(w, r, paramError(err))
		return
	}
	c, _, err := s.ClusterPlan(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := selection(c, p.Members); err != nil {
		s.fail(w, r, err)
		return
	}
	s.queue(w, r, jobs.KindRollout, c.Name, p.DryRun, p)
}
