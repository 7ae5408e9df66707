package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/inventory"
	"github.com/nix8s/nix8s/internal/store"
)

// WriteResult answers a successful change of the config layers.
type WriteResult struct {
	// Version is the changed object's version (0 after a delete); also sent as ETag.
	Version int64 `json:"version"`
	// InventoryVersion is the whole inventory's version after the change.
	InventoryVersion int64 `json:"inventoryVersion"`
	// Warnings are the core's warnings about the stored config.
	Warnings []Problem `json:"warnings"`
}

func etag(v int64) string { return `"` + strconv.FormatInt(v, 10) + `"` }

// ifMatch reads If-Match: the version the client last saw (0 when absent; -1 for "*": must exist).
func ifMatch(r *http.Request) (int64, error) {
	h := strings.TrimSpace(r.Header.Get("If-Match"))
	if h == "" {
		return 0, nil
	}
	if h == "*" {
		return -1, nil
	}
	h = strings.Trim(strings.TrimPrefix(h, "W/"), `"`)
	v, err := strconv.ParseInt(h, 10, 64)
	if err != nil || v <= 0 {
		return 0, badRequest("If-Match must be a version as sent in ETag, like \"3\"")
	}
	return v, nil
}

func checkVersion(what string, want, have int64, exists bool) error {
	switch {
	case want == 0:
		return nil
	case want == -1 && exists:
		return nil
	case !exists:
		return &store.ConflictError{Msg: fmt.Sprintf("%s does not exist (If-Match given)", what)}
	case want != have:
		return &store.ConflictError{Msg: fmt.Sprintf("%s is at version %d, not %d: it changed since you read it; read it again", what, have, want)}
	}
	return nil
}

// modify runs a change of the config layers through the inventory: compute, validate through the core,
// store (inventory.Inventory.Modify). A config with errors is answered 422 with the core's report.
func (s *Server) modify(r *http.Request, change func(snap *store.Snapshot) (map[string]any, error)) (int64, []Problem, error) {
	v, warnings, err := s.inv.Modify(r.Context(), actor(r), change)
	return v, warnings, inventoryError(err)
}

func (s *Server) getConfig(w http.ResponseWriter, r *http.Request) {
	snap, err := s.st.Snapshot(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("ETag", etag(snap.Version))
	writeValue(w, r, http.StatusOK, snap.Config)
}

func (s *Server) putConfig(w http.ResponseWriter, r *http.Request) {
	want, err := ifMatch(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	body, err := s.decodeConfigBody(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	cfg, ok := body.(map[string]any)
	if !ok {
		s.fail(w, r, badRequest("the config must be a mapping with nodes, clusters and provisioning"))
		return
	}
	v, warnings, err := s.modify(r, func(snap *store.Snapshot) (map[string]any, error) {
		if err := checkVersion("the inventory", want, snap.Version, true); err != nil {
			return nil, err
		}
		return cfg, nil
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("ETag", etag(v))
	writeJSON(w, http.StatusOK, WriteResult{Version: v, InventoryVersion: v, Warnings: warnings})
}

// ObjectItem is one entry of a list of config objects.
type ObjectItem struct {
	Name    string `json:"name"`
	Version int64  `json:"version"`
	Spec    any    `json:"spec"`
}

// Page is a page of a list; Next, when set, is the cursor for the following page (?after=).
type Page[T any] struct {
	Items []T     `json:"items"`
	Next  *string `json:"next,omitempty"`
}

// pageParams reads ?limit= (1..1000, default 100) and ?after=.
func pageParams(r *http.Request) (int, string, error) {
	limit := 100
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return 0, "", badRequest("limit must be a number from 1 to 1000", Problem{Path: "limit", Message: "out of range"})
		}
		limit = n
	}
	return limit, r.URL.Query().Get("after"), nil
}

// path of an object in the config, and its display name.
func objectPath(kind string, r *http.Request) ([]string, string) {
	name := chi.URLParam(r, "name")
	switch kind {
	case store.KindMember:
		c := chi.URLParam(r, "cluster")
		return []string{"clusters", c, "members", name}, "member " + c + "." + name
	case store.KindNode:
		return []string{"nodes", name}, "node " + name
	case store.KindCluster:
		return []string{"clusters", name}, "cluster " + name
	}
	return []string{"provisioning", name}, "provisioning " + name
}

func versionIn(snap *store.Snapshot, kind string, r *http.Request) (int64, bool) {
	name := chi.URLParam(r, "name")
	var v int64
	var ok bool
	switch kind {
	case store.KindNode:
		v, ok = snap.Nodes[name]
	case store.KindCluster:
		v, ok = snap.Clusters[name]
	case store.KindMember:
		v, ok = snap.Members[store.MemberKey(chi.URLParam(r, "cluster"), name)]
	case store.KindProvisioning:
		v, ok = snap.Provisioning[name]
	}
	return v, ok
}

func (s *Server) listObjects(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		limit, after, err := pageParams(r)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		cluster := chi.URLParam(r, "cluster")
		if kind == store.KindMember {
			if _, err := s.st.Get(r.Context(), store.KindCluster, "", cluster); err != nil {
				s.fail(w, r, wrapNotFound(err, "cluster "+cluster))
				return
			}
		}
		objs, err := s.st.Objects(r.Context(), kind, cluster, after, limit+1)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		page := Page[ObjectItem]{Items: []ObjectItem{}}
		for i, o := range objs {
			if i == limit {
				page.Next = &objs[i-1].Key
				break
			}
			page.Items = append(page.Items, ObjectItem{Name: o.Key, Version: o.Version, Spec: o.Spec})
		}
		writeValue(w, r, http.StatusOK, page)
	}
}

func wrapNotFound(err error, what string) error {
	if errors.Is(err, store.ErrNotFound) {
		return notFound("no " + what)
	}
	return err
}

func (s *Server) getObject(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, what := objectPath(kind, r)
		o, err := s.st.Get(r.Context(), kind, chi.URLParam(r, "cluster"), chi.URLParam(r, "name"))
		if err != nil {
			s.fail(w, r, wrapNotFound(err, what))
			return
		}
		w.Header().Set("ETag", etag(o.Version))
		writeValue(w, r, http.StatusOK, o.Spec)
	}
}

func (s *Server) putObject(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		want, err := ifMatch(r)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		body, err := s.decodeConfigBody(w, r)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if _, ok := body.(map[string]any); !ok && kind != store.KindProvisioning {
			s.fail(w, r, badRequest("the body must be a mapping"))
			return
		}
		path, what := objectPath(kind, r)
		created := false
		v, warnings, err := s.modify(r, func(snap *store.Snapshot) (map[string]any, error) {
			have, exists := versionIn(snap, kind, r)
			if err := checkVersion(what, want, have, exists); err != nil {
				return nil, err
			}
			if kind == store.KindMember {
				if _, ok := snap.Clusters[path[1]]; !ok {
					return nil, notFound("no cluster " + path[1])
				}
			}
			created = !exists
			next, err := store.Normalize(snap.Config)
			if err != nil {
				return nil, err
			}
			setPath(next.(map[string]any), path, body)
			return next.(map[string]any), nil
		})
		if err != nil {
			s.fail(w, r, err)
			return
		}
		s.answerWrite(w, r, kind, created, v, warnings)
	}
}

// answerWrite reads back the written object's version for ETag and body.
func (s *Server) answerWrite(w http.ResponseWriter, r *http.Request, kind string, created bool, inventory int64, warnings []Problem) {
	res := WriteResult{InventoryVersion: inventory, Warnings: warnings}
	if o, err := s.st.Get(r.Context(), kind, chi.URLParam(r, "cluster"), chi.URLParam(r, "name")); err == nil {
		res.Version = o.Version
		w.Header().Set("ETag", etag(o.Version))
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, res)
}

func (s *Server) deleteObject(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		want, err := ifMatch(r)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		path, what := objectPath(kind, r)
		v, warnings, err := s.modify(r, func(snap *store.Snapshot) (map[string]any, error) {
			have, exists := versionIn(snap, kind, r)
			if !exists {
				return nil, notFound("no " + what)
			}
			if err := checkVersion(what, want, have, exists); err != nil {
				return nil, err
			}
			next, err := store.Normalize(snap.Config)
			if err != nil {
				return nil, err
			}
			deletePath(next.(map[string]any), path)
			return next.(map[string]any), nil
		})
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, WriteResult{Version: 0, InventoryVersion: v, Warnings: warnings})
	}
}

func setPath(m map[string]any, path []string, v any) {
	for _, k := range path[:len(path)-1] {
		c, ok := m[k].(map[string]any)
		if !ok {
			c = map[string]any{}
			m[k] = c
		}
		m = c
	}
	m[path[len(path)-1]] = v
}

func deletePath(m map[string]any, path []string) {
	for _, k := range path[:len(path)-1] {
		c, ok := m[k].(map[string]any)
		if !ok {
			return
		}
		m = c
	}
	delete(m, path[len(path)-1])
}

// getPlan answers the cluster's part of the core's plan of the stored inventory (inventory.Plans: one
// evaluation per inventory version serves every cluster and every daemon).
func (s *Server) getPlan(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	plan, err := s.inv.Current(r.Context())
	if err != nil {
		s.fail(w, r, inventoryError(err))
		return
	}
	c, ok := plan.Raw[name]
	if !ok {
		s.fail(w, r, notFound("no cluster "+name))
		return
	}
	w.Header().Set("ETag", etag(plan.Version))
	w.Header().Set("Content-Type", "application/json")
	w.Write(c)
}

// inventoryError is how the inventory's refusals reach a client: the core's report of an invalid config
// (422), no such cluster (404).
func inventoryError(err error) error {
	var invalid *core.InvalidError
	switch {
	case errors.As(err, &invalid):
		return &rejected{report: invalid.Report}
	case errors.Is(err, inventory.ErrNoCluster):
		return notFound(err.Error())
	}
	return err
}
