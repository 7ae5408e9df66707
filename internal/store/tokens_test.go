package store

import (
	"context"
	"errors"
	"testing"
)

// A token the operator gives in a file (EnsureToken at every start) that was revoked stays revoked: the next
// start does not bring it back, and says so.
func TestEnsureTokenKeepsRevocation(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	tok, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureToken(ctx, "admin-token-file", tok, ScopeAdmin); err != nil {
		t.Fatal(err)
	}
	// A second start with the same file is a no-op; a changed flag changes the scope.
	if err := s.EnsureToken(ctx, "read-token-file", tok, ScopeRead); err != nil {
		t.Fatal(err)
	}
	got, err := s.LookupToken(ctx, tok)
	if err != nil || got.Scope != ScopeRead {
		t.Fatalf("token after the second start: %+v %v", got, err)
	}
	if err := s.RevokeToken(ctx, got.ID); err != nil {
		t.Fatal(err)
	}
	for _, scope := range []string{ScopeAdmin, ScopeRead} {
		err := s.EnsureToken(ctx, scope+"-token-file", tok, scope)
		var rev *RevokedError
		if !errors.As(err, &rev) || rev.ID != got.ID || rev.RevokedAt.IsZero() {
			t.Fatalf("EnsureToken(%s) of a revoked token: %v, want a RevokedError for token %d", scope, err, got.ID)
		}
		if _, err := s.LookupToken(ctx, tok); !errors.Is(err, ErrNotFound) {
			t.Fatalf("the revoked token works again after EnsureToken(%s): %v", scope, err)
		}
	}
	list, err := s.Tokens(ctx)
	if err != nil || len(list) != 1 || list[0].RevokedAt == nil || list[0].Scope != ScopeRead {
		t.Fatalf("tokens after the restarts: %+v %v", list, err)
	}
	// A new token in the file works.
	fresh, _ := NewToken()
	if err := s.EnsureToken(ctx, "admin-token-file", fresh, ScopeAdmin); err != nil {
		t.Fatal(err)
	}
	if got, err := s.LookupToken(ctx, fresh); err != nil || got.Scope != ScopeAdmin {
		t.Fatalf("the new token: %+v %v", got, err)
	}
}
