package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

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

// Token is a stored token, without the token itself.
type Token struct {
	ID    int64
	Name  string
	Scope string
}

// LookupToken finds a valid, unrevoked token, or returns ErrNotFound.
func (s *Store) LookupToken(ctx context.Context, tok string) (*Token, error) {
	if !strings.HasPrefix(tok, TokenPrefix) {
		return nil, ErrNotFound
	}
	sum := sha256.Sum256([]byte(tok))
	var t Token
	// One round trip: look the token up, and note its use at most once a minute.
	err := s.pool.QueryRow(ctx, `WITH t AS (
			SELECT id, name, scope, last_used_at FROM api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL
		), used AS (
			UPDATE api_tokens SET last_used_at = now() FROM t
			WHERE api_tokens.id = t.id AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute')
		)
		SELECT id, name, scope FROM t`, sum[:]).Scan(&t.ID, &t.Name, &t.Scope)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// RevokedError is a token given by the operator (EnsureToken) that was revoked: it stays revoked.
type RevokedError struct {
	ID        int64
	RevokedAt time.Time
}

func (e *RevokedError) Error() string {
	return fmt.Sprintf("this token (id %d) was revoked at %s, and a revoked token stays revoked", e.ID, e.RevokedAt.UTC().Format(time.RFC3339))
}

// EnsureToken stores tok (given by the operator, e.g. from a secrets file) with scope, if not stored yet. A token
// that was revoked is not brought back: EnsureToken returns a *RevokedError and the token keeps failing.
func (s *Store) EnsureToken(ctx context.Context, name, tok, scope string) error {
	if scope != ScopeRead && scope != ScopeAdmin {
		return &InvalidError{Path: "scope", Msg: fmt.Sprintf("%q is not a scope; use admin or read", scope)}
	}
	if !strings.HasPrefix(tok, TokenPrefix) || len(tok) < len(TokenPrefix)+20 {
		return &InvalidError{Path: "token", Msg: "a token starts with " + TokenPrefix + " and has at least 20 more characters; make one with nix8sd token create --print-only"}
	}
	sum := sha256.Sum256([]byte(tok))
	// The scope follows the flag the token is given with; revoked_at is never cleared.
	var id int64
	var revoked *time.Time
	err := s.pool.QueryRow(ctx, `INSERT INTO api_tokens (name, token_sha256, scope) VALUES ($1, $2, $3)
		ON CONFLICT (token_sha256) DO UPDATE SET scope = CASE WHEN api_tokens.revoked_at IS NULL THEN EXCLUDED.scope ELSE api_tokens.scope END
		RETURNING id, revoked_at`, name, sum[:], scope).Scan(&id, &revoked)
	if err != nil {
		return err
	}
	if revoked != nil {
		return &RevokedError{ID: id, RevokedAt: *revoked}
	}
	return nil
}

// NewToken makes a random token without storing it.
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// TokenInfo describes a stored token for listing.
type TokenInfo struct {
	Token
	CreatedAt  time.Time
	LastUsedAt *time.Time
	RevokedAt  *time.Time
}

// Tokens lists every token, oldest first.
func (s *Store) Tokens(ctx context.Context) ([]TokenInfo, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, name, scope, created_at, last_used_at, revoked_at FROM api_tokens ORDER BY id`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (TokenInfo, error) {
		var t TokenInfo
		err := r.Scan(&t.ID, &t.Name, &t.Scope, &t.CreatedAt, &t.LastUsedAt, &t.RevokedAt)
		return t, err
	})
}

// RevokeToken revokes the token with id; it stops working at once.
func (s *Store) RevokeToken(ctx context.Context, id int64) error {
	tag, err := s.pool.Exec(ctx, `UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1`, id)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("token %d: %w", id, ErrNotFound)
	}
	return nil
}
