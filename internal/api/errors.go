package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

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
	case s.dbUnavailable(r.Context(), err):
		s.log.Error("request failed: the database is unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
		writeUnavailable(w)
	default:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal", "internal error; see the daemon's log", nil)
	}
}

// writeUnavailable answers 503 when the database cannot be reached. The message names no database user, host,
// port or name (the connection error does): those go to the daemon's log only.
func writeUnavailable(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "5")
	writeError(w, http.StatusServiceUnavailable, "unavailable", "the database is unavailable; retry later (the daemon's log says why)", nil)
}

// dbUnavailable says whether err means the database could not be reached or lost the connection, rather than
// refusing this request: connection errors, the server shutting down or out of connections, a closed pool.
// For any other unexpected error the database is pinged: a database that does not answer is unavailable.
func (s *Server) dbUnavailable(ctx context.Context, err error) bool {
	var ce *pgconn.ConnectError
	var pe *pgconn.PgError
	var ne net.Error
	switch {
	case errors.As(err, &ce), errors.As(err, &ne), errors.Is(err, pgconn.ErrConnClosed),
		errors.Is(err, io.ErrUnexpectedEOF):
		return true
	case errors.As(err, &pe):
		// 08: connection exception; 53: insufficient resources (too many connections, disk full); 57P01..03:
		// admin or crash shutdown, cannot connect now.
		class := pe.Code[:min(2, len(pe.Code))]
		return class == "08" || class == "53" || pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03"
	}
	if ctx.Err() != nil {
		return false // the client went away; nothing to tell it
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	return s.st.Ping(pctx) != nil
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
	return (&core.InvalidError{Report: e.report}).Error() + "; nothing was stored"
}
