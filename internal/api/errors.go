package api

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/store"
)

// Problem is one finding with its dotted config path.
type Problem = core.Problem

// Error is the body of every error response.
type Error struct {
	// Code is stable and machine-readable: bad_request, unauthorized, forbidden, not_found, conflict,
	// invalid_config, unsupported_media_type, internal, unavailable, not_implemented.
	Code    string    `json:"code"`
	Message string    `json:"message"`
	Details []Problem `json:"details"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string, details []Problem) {
	if details == nil {
		details = []Problem{}
	}
	writeJSON(w, status, Error{Code: code, Message: msg, Details: details})
}

// fail answers err with the status its kind calls for.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var inv *store.InvalidError
	var rej *rejected
	var hinted *httpError
	switch {
	case errors.As(err, &hinted):
		writeError(w, hinted.status, hinted.code, hinted.msg, hinted.details)
	case errors.As(err, &rej):
		writeError(w, http.StatusUnprocessableEntity, "invalid_config", rej.Error(), rej.report.Errors)
	case errors.As(err, &inv):
		writeError(w, http.StatusUnprocessableEntity, "invalid_config", inv.Error(), []Problem{{Path: inv.Path, Message: inv.Msg}})
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", err.Error(), nil)
	case errors.Is(err, store.ErrConflict):
		writeError(w, http.StatusConflict, "conflict", err.Error(), nil)
	default:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal", "internal error; see the daemon's log", nil)
	}
}

// httpError is an error with its response.
type httpError struct {
	status    int
	code, msg string
	details   []Problem
}

func (e *httpError) Error() string { return e.msg }

func badRequest(msg string, details ...Problem) error {
	return &httpError{status: http.StatusBadRequest, code: "bad_request", msg: msg, details: details}
}

func notFound(msg string) error {
	return &httpError{status: http.StatusNotFound, code: "not_found", msg: msg}
}

// rejected is a config the core found errors in.
type rejected struct{ report core.Report }

func (e *rejected) Error() string {
	if len(e.report.Errors) == 1 {
		return "the config has 1 error; nothing was stored"
	}
	return "the config has errors; nothing was stored"
}
