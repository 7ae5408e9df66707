package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/nix8s/nix8s/internal/store"
)

func macParam(r *http.Request) (string, error) {
	mac, err := store.NormalizeMAC(chi.URLParam(r, "mac"))
	if err != nil {
		return "", badRequest(err.Error(), Problem{Path: "mac", Message: "not a MAC address"})
	}
	return mac, nil
}

func (s *Server) listMachines(w http.ResponseWriter, r *http.Request) {
	limit, after, err := pageParams(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if after != "" {
		if after, err = store.NormalizeMAC(after); err != nil {
			s.fail(w, r, badRequest("after must be a MAC address", Problem{Path: "after", Message: "not a MAC address"}))
			return
		}
	}
	q := r.URL.Query()
	f := store.MachineFilter{State: store.State(q.Get("state")), Cluster: q.Get("cluster"), After: after, Limit: limit + 1}
	if u := q.Get("unassigned"); u != "" {
		b, err := strconv.ParseBool(u)
		if err != nil {
			s.fail(w, r, badRequest("unassigned must be true or false", Problem{Path: "unassigned", Message: "not a boolean"}))
			return
		}
		f.Unassigned = b
	}
	if f.State != "" {
		states, err := s.st.States(r.Context())
		if err != nil {
			s.fail(w, r, err)
			return
		}
		known := false
		for _, st := range states {
			known = known || st.State == f.State
		}
		if !known {
			s.fail(w, r, badRequest("unknown state "+strconv.Quote(string(f.State))+"; see GET /v1/machine-states", Problem{Path: "state", Message: "unknown state"}))
			return
		}
	}
	ms, err := s.st.Machines(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	page := Page[*store.Machine]{Items: ms}
	if len(ms) > limit {
		page.Items = ms[:limit]
		page.Next = &ms[limit-1].MAC
	}
	writeJSON(w, http.StatusOK, page)
}

func (s *Server) getMachine(w http.ResponseWriter, r *http.Request) {
	mac, err := macParam(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	m, err := s.st.Machine(r.Context(), mac)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("ETag", etag(m.Version))
	writeJSON(w, http.StatusOK, m)
}

// CreateMachine is the body of POST /v1/machines: enrol a machine by hand (PXE discovery does it otherwise).
type CreateMachine struct {
	MAC    string          `json:"mac"`
	Facts  json.RawMessage `json:"facts,omitempty"`
	Reason string          `json:"reason,omitempty"`
}

func (s *Server) createMachine(w http.ResponseWriter, r *http.Request) {
	var body CreateMachine
	if err := s.decodeStrict(w, r, &body); err != nil {
		s.fail(w, r, err)
		return
	}
	mac, err := store.NormalizeMAC(body.MAC)
	if err != nil {
		s.fail(w, r, badRequest(err.Error(), Problem{Path: "mac", Message: "not a MAC address"}))
		return
	}
	if len(body.Facts) > 0 {
		var obj map[string]any
		if json.Unmarshal(body.Facts, &obj) != nil || obj == nil {
			s.fail(w, r, badRequest("facts must be an object", Problem{Path: "facts", Message: "not an object"}))
			return
		}
	}
	m, err := s.st.CreateMachine(r.Context(), actor(r), mac, body.Facts, body.Reason)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("ETag", etag(m.Version))
	writeJSON(w, http.StatusCreated, m)
}

// Assign is the body of POST /v1/machines/{mac}/assign.
type Assign struct {
	Cluster string `json:"cluster"`
	Member  string `json:"member"`
	// Version, when given (or If-Match), must be the machine's current version.
	Version int64  `json:"version,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// Action is the body of the other machine actions.
type Action struct {
	Version int64  `json:"version,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// Transition is the body of POST /v1/machines/{mac}/transition.
type Transition struct {
	State   store.State `json:"state"`
	Version int64       `json:"version,omitempty"`
	Reason  string      `json:"reason,omitempty"`
}

// version is the body's version, else If-Match's.
func version(r *http.Request, body int64) (int64, error) {
	if body != 0 {
		return body, nil
	}
	v, err := ifMatch(r)
	if v < 0 {
		v = 0
	}
	return v, err
}

func (s *Server) changeMachine(w http.ResponseWriter, r *http.Request, c store.MachineChange) {
	mac, err := macParam(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if c.Version, err = version(r, c.Version); err != nil {
		s.fail(w, r, err)
		return
	}
	m, err := s.st.UpdateMachine(r.Context(), actor(r), mac, c)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("ETag", etag(m.Version))
	writeJSON(w, http.StatusOK, m)
}

func (s *Server) assignMachine(w http.ResponseWriter, r *http.Request) {
	var body Assign
	if err := s.decodeStrict(w, r, &body); err != nil {
		s.fail(w, r, err)
		return
	}
	var missing []Problem
	if body.Cluster == "" {
		missing = append(missing, Problem{Path: "cluster", Message: "required"})
	}
	if body.Member == "" {
		missing = append(missing, Problem{Path: "member", Message: "required"})
	}
	if missing != nil {
		s.fail(w, r, badRequest("cluster and member are required", missing...))
		return
	}
	if _, err := s.st.Get(r.Context(), store.KindMember, body.Cluster, body.Member); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = &store.InvalidError{Path: "member", Msg: "no member " + body.Member + " in cluster " + body.Cluster}
		}
		s.fail(w, r, err)
		return
	}
	s.changeMachine(w, r, store.MachineChange{Assign: &[2]string{body.Cluster, body.Member}, Version: body.Version, Reason: body.Reason})
}

func (s *Server) unassignMachine(w http.ResponseWriter, r *http.Request) {
	var body Action
	if err := s.decodeStrict(w, r, &body); err != nil {
		s.fail(w, r, err)
		return
	}
	s.changeMachine(w, r, store.MachineChange{Unassign: true, Version: body.Version, Reason: body.Reason})
}

func (s *Server) lockMachine(lock bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body Action
		if err := s.decodeStrict(w, r, &body); err != nil {
			s.fail(w, r, err)
			return
		}
		s.changeMachine(w, r, store.MachineChange{Locked: &lock, Version: body.Version, Reason: body.Reason})
	}
}

func (s *Server) transitionMachine(w http.ResponseWriter, r *http.Request) {
	var body Transition
	if err := s.decodeStrict(w, r, &body); err != nil {
		s.fail(w, r, err)
		return
	}
	if body.State == "" {
		s.fail(w, r, badRequest("state is required", Problem{Path: "state", Message: "required"}))
		return
	}
	s.changeMachine(w, r, store.MachineChange{State: &body.State, Version: body.Version, Reason: body.Reason})
}

// Reinstall is the body of POST /v1/machines/{mac}/reinstall (optional).
type Reinstall struct {
	Version int64  `json:"version,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// reinstallMachine arms a network install: the machine moves to installing with a new generation and boots
// its member's installer on its next network boot.
func (s *Server) reinstallMachine(w http.ResponseWriter, r *http.Request) {
	mac, err := macParam(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var body Reinstall
	if r.ContentLength != 0 {
		if err := s.decodeStrict(w, r, &body); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	v, err := version(r, body.Version)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	reason := body.Reason
	if reason == "" {
		reason = "reinstall requested"
	}
	m, err := s.st.ArmInstall(r.Context(), actor(r), mac, v, reason)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if s.onArm != nil {
		s.onArm(context.WithoutCancel(r.Context()), m)
	}
	w.Header().Set("ETag", etag(m.Version))
	writeJSON(w, http.StatusOK, m)
}

func (s *Server) forgetMachine(w http.ResponseWriter, r *http.Request) {
	mac, err := macParam(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	v, err := ifMatch(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if v < 0 {
		v = 0
	}
	if err := s.st.ForgetMachine(r.Context(), actor(r), mac, v, r.URL.Query().Get("reason")); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) {
	mac, err := macParam(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	limit, afterS, err := pageParams(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var after int64
	if afterS != "" {
		if after, err = strconv.ParseInt(afterS, 10, 64); err != nil {
			s.fail(w, r, badRequest("after must be an event id", Problem{Path: "after", Message: "not a number"}))
			return
		}
	}
	evs, err := s.st.Events(r.Context(), mac, after, limit+1)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if len(evs) == 0 && after == 0 {
		if _, err := s.st.Machine(r.Context(), mac); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	page := Page[*store.Event]{Items: evs}
	if len(evs) > limit {
		page.Items = evs[:limit]
		n := strconv.FormatInt(evs[limit-1].ID, 10)
		page.Next = &n
	}
	writeJSON(w, http.StatusOK, page)
}

func (s *Server) listStates(w http.ResponseWriter, r *http.Request) {
	states, err := s.st.States(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": states})
}
