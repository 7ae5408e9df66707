package provision

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/remote"
)

// scripted answers each host's commands from a table and records them. A fake: what is tested here is how
// Create reads k3s's stdout and walks the servers; TestDeliverSecrets (internal/jobs) runs it over real ssh.
type scripted struct {
	out   map[string]string // host name -> stdout
	fail  map[string]error  // host name -> error
	calls []string
}

func (s *scripted) Run(_ context.Context, h remote.Host, cmd string) ([]byte, error) {
	s.calls = append(s.calls, h.Name+": "+cmd)
	if err := s.fail[h.Name]; err != nil {
		return nil, err
	}
	return []byte(s.out[h.Name]), nil
}

func (s *scripted) Copy(context.Context, remote.Host, string, string) error {
	return errors.New("no copy")
}

func TestJoinTokensCreate(t *testing.T) {
	const good = "K10" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + "::abc123.0123456789abcdef"
	c := core.Cluster{Name: "prod", FirstServer: "s2", Servers: []string{"s1", "s2"}, Members: map[string]core.Member{
		"s1": {Name: "s1", HostName: "prod-s1", IP: "192.0.2.1", SSH: core.SSH{Host: "192.0.2.1", Port: 22, User: "root"}},
		"s2": {Name: "s2", HostName: "prod-s2", IP: "192.0.2.2", SSH: core.SSH{Host: "192.0.2.2", Port: 22, User: "root"}}}}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	down := errors.New("connection refused")
	tests := []struct {
		name      string
		ttl       time.Duration
		out       map[string]string
		fail      map[string]error
		wantFrom  string
		wantErr   []string
		wantCalls int
	}{
		{name: "the first server makes it", ttl: time.Hour, out: map[string]string{"prod-s2": good + "\n"}, wantFrom: "prod-s2", wantCalls: 1},
		{name: "another server when the first one's API is down", ttl: 90 * time.Minute, fail: map[string]error{"prod-s2": down},
			out: map[string]string{"prod-s1": good + "\n"}, wantFrom: "prod-s1", wantCalls: 2},
		{name: "output that is not a token is never echoed", ttl: time.Hour,
			out:     map[string]string{"prod-s2": "K10zz::hunter2\n", "prod-s1": good + "\nmore\n"},
			wantErr: []string{`no server of cluster "prod" made a join token for a1`, "prod-s2: k3s token create printed no token of the form K10<ca-hash>::<id>.<secret> (15 bytes on stdout)", "prod-s1: k3s token create printed no token"}, wantCalls: 2},
		{name: "every server down", ttl: time.Hour, fail: map[string]error{"prod-s1": down, "prod-s2": down},
			wantErr: []string{"prod-s2: connection refused", "prod-s1: connection refused"}, wantCalls: 2},
		{name: "a time to live of 0 would never expire", ttl: 0, wantErr: []string{"a join token needs a positive time to live, got 0s"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &scripted{out: tc.out, fail: tc.fail}
			jt := JoinTokens{Runner: r, TTL: tc.ttl, Now: func() time.Time { return now }}
			tok, err := jt.Create(context.Background(), c, "a1")
			if len(r.calls) != tc.wantCalls {
				t.Errorf("calls %q, want %d", r.calls, tc.wantCalls)
			}
			for _, call := range r.calls {
				if !strings.HasSuffix(call, ": k3s token create --ttl "+tc.ttl.String()+" --description nix8s:prod/a1") {
					t.Errorf("call %q", call)
				}
			}
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("no error; token %+v", tok)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "0123456789abcdef") {
					t.Errorf("error %q shows what k3s printed", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tok.Value != good || tok.ID != "abc123" || tok.Server != tc.wantFrom || tok.Description != "nix8s:prod/a1" || !tok.Expires.Equal(now.Add(tc.ttl)) {
				t.Errorf("token %+v", tok)
			}
			r.calls = nil
			if err := jt.Delete(context.Background(), tok); err != nil || len(r.calls) != 1 || r.calls[0] != tc.wantFrom+": k3s token delete abc123" {
				t.Errorf("delete: %v %q", err, r.calls)
			}
		})
	}
}
