package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Scopes of API tokens: read may GET, admin may also change.
const (
	ScopeRead  = "read"
	ScopeAdmin = "admin"
)

// TokenPrefix starts every token, so that leaked tokens are easy to find (secret scanners, logs).
const TokenPrefix = "nix8s_"

// CreateToken makes a new random token with scope and returns it; only its sha256 is stored.
func (s *Store) CreateToken(ctx context.Context, name, scope string) (string, error) {
	if scope != ScopeRead && scope != ScopeAdmin {
		return "", &InvalidError{Path: "scope", Msg: fmt.Sprintf("%q is not a scope; use admin or read", scope)}
	}
	tok, err := NewToken()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(tok))
	if _, err := s.pool.Exec(ctx, `INSERT INTO api_tokens (name, token_sha256, scope) VALUES ($1, $2, $3)`, name, sum[:], scope); err != nil {
		return "", fmt.Errorf("storing the token: %w", err)
	}
	return tok, nil
}

// TokenScope returns the scope of a valid, unrevoked token, or ErrNotFound.
func (s *Store) TokenScope(ctx context.Context, tok string) (string, error) {
	if !strings.HasPrefix(tok, TokenPrefix) {
		return "", ErrNotFound
	}
	sum := sha256.Sum256([]byte(tok))
	var scope string
	err := s.pool.QueryRow(ctx, `SELECT scope FROM api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL`, sum[:]).Scan(&scope)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	return scope, err
}

// EnsureToken stores tok (given by the operator, e.g. from a secrets file) with scope, if not stored yet.
func (s *Store) EnsureToken(ctx context.Context, name, tok, scope string) error {
	if scope != ScopeRead && scope != ScopeAdmin {
		return &InvalidError{Path: "scope", Msg: fmt.Sprintf("%q is not a scope; use admin or read", scope)}
	}
	if !strings.HasPrefix(tok, TokenPrefix) || len(tok) < len(TokenPrefix)+20 {
		return &InvalidError{Path: "token", Msg: "a token starts with " + TokenPrefix + " and has at least 20 more characters; make one with nix8sd token create --print-only"}
	}
	sum := sha256.Sum256([]byte(tok))
	_, err := s.pool.Exec(ctx, `INSERT INTO api_tokens (name, token_sha256, scope) VALUES ($1, $2, $3)
		ON CONFLICT (token_sha256) DO UPDATE SET scope = EXCLUDED.scope, revoked_at = NULL`, name, sum[:], scope)
	return err
}

// NewToken makes a random token without storing it.
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}
