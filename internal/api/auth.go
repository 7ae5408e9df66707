package api

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/nix8s/nix8s/internal/store"
)

type ctxKey int

const scopeKey ctxKey = 0

// auth admits requests with a bearer token of at least scope: 401 without a valid token, 403 with a read token
// on an admin endpoint.
func (s *Server) auth(scope string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := r.Header.Get("Authorization")
			tok, ok := strings.CutPrefix(h, "Bearer ")
			if !ok || tok == "" {
				w.Header().Set("WWW-Authenticate", `Bearer realm="nix8sd"`)
				writeError(w, http.StatusUnauthorized, "unauthorized", "missing bearer token; create one with nix8sd token create", nil)
				return
			}
			got, err := s.st.TokenScope(r.Context(), strings.TrimSpace(tok))
			if errors.Is(err, store.ErrNotFound) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="nix8sd", error="invalid_token"`)
				writeError(w, http.StatusUnauthorized, "unauthorized", "invalid or revoked token", nil)
				return
			}
			if err != nil {
				s.fail(w, r, err)
				return
			}
			if scope == store.ScopeAdmin && got != store.ScopeAdmin {
				writeError(w, http.StatusForbidden, "forbidden", "this endpoint needs a token with scope admin; yours has scope "+got, nil)
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), scopeKey, got)))
		})
	}
}

// actor names who made a change in the machine event log.
func actor(r *http.Request) string {
	return "api:" + r.RemoteAddr
}
