package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/nix8s/nix8s/internal/store"
)

type ctxKey int

const tokenKey ctxKey = 0

// auth admits requests with a bearer token of at least scope: 401 without a valid token, 403 with a read token
// on an admin endpoint, 503 when the database that holds the tokens is unavailable.
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
			got, err := s.st.LookupToken(r.Context(), strings.TrimSpace(tok))
			if errors.Is(err, store.ErrNotFound) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="nix8sd", error="invalid_token"`)
				writeError(w, http.StatusUnauthorized, "unauthorized", "invalid or revoked token", nil)
				return
			}
			if err != nil {
				// The token table cannot be read: a wrong token cannot be told from a right one, so every
				// authenticated call answers 503 unavailable (never 401, which would tell a client holding a
				// good token to throw it away). Tokens that are not nix8s tokens at all got 401 above.
				s.fail(w, r, err)
				return
			}
			if scope == store.ScopeAdmin && got.Scope != store.ScopeAdmin {
				writeError(w, http.StatusForbidden, "forbidden", "this endpoint needs a token with scope admin; yours has scope "+got.Scope, nil)
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), tokenKey, got)))
		})
	}
}

// actor names who made a change, for the machine event log: the token (by id and name), never the token itself.
func actor(r *http.Request) string {
	t, ok := r.Context().Value(tokenKey).(*store.Token)
	if !ok {
		return "api:anonymous"
	}
	if t.Name == "" {
		return fmt.Sprintf("api:token/%d", t.ID)
	}
	return fmt.Sprintf("api:token/%d(%s)", t.ID, t.Name)
}
