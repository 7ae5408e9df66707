package api

import (
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/nix8s/nix8s/internal/store"
)

var jobStatuses = map[string]bool{"queued": true, "running": true, "succeeded": true, "failed": true, "cancelled": true}

func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	limit, after, err := pageParams(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	f := store.JobFilter{Status: q.Get("status"), Kind: q.Get("kind"), Limit: limit + 1}
	if f.Status != "" && !jobStatuses[f.Status] {
		s.fail(w, r, badRequest("unknown status "+strconv.Quote(f.Status), Problem{Path: "status", Message: "one of queued, running, succeeded, failed, cancelled"}))
		return
	}
	if after != "" {
		if f.Before, err = strconv.ParseInt(after, 10, 64); err != nil {
			s.fail(w, r, badRequest("after must be a job id", Problem{Path: "after", Message: "not a number"}))
			return
		}
	}
	jobs, err := s.st.Jobs(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	page := Page[*store.Job]{Items: jobs}
	if len(jobs) > limit {
		page.Items = jobs[:limit]
		n := strconv.FormatInt(jobs[limit-1].ID, 10)
		page.Next = &n
	}
	writeJSON(w, http.StatusOK, page)
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil {
		s.fail(w, r, badRequest("a job id is a number", Problem{Path: "id", Message: "not a number"}))
		return
	}
	j, err := s.st.Job(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	result, err := s.st.JobResult(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, jobWithResult{Job: j, Result: result})
}
