package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Object is one object of the config layers as stored.
type Object struct {
	// Key is the object's name (a member's name without its cluster).
	Key     string
	Spec    any
	Version int64
}

// Kinds of config objects.
const (
	KindNode         = "nodes"
	KindCluster      = "clusters"
	KindMember       = "members"
	KindProvisioning = "provisioning"
)

// Objects lists objects of kind (members: of cluster) by name after the cursor after. Clusters come without
// their members.
func (s *Store) Objects(ctx context.Context, kind, cluster, after string, limit int) ([]Object, error) {
	var rows pgx.Rows
	var err error
	switch kind {
	case KindNode, KindCluster, KindProvisioning:
		rows, err = s.pool.Query(ctx, fmt.Sprintf(`SELECT name, spec, version FROM %s WHERE name > $1 ORDER BY name LIMIT $2`, kind), after, limit)
	case KindMember:
		rows, err = s.pool.Query(ctx, `SELECT name, spec, version FROM members WHERE cluster = $1 AND name > $2 ORDER BY name LIMIT $3`, cluster, after, limit)
	default:
		return nil, fmt.Errorf("unknown kind %q", kind)
	}
	if err != nil {
		return nil, err
	}
	objs, err := pgx.CollectRows(rows, scanObject)
	if kind == KindCluster {
		for _, o := range objs {
			delete(o.Spec.(map[string]any), "members") // only a marker here; GET the cluster for its members
		}
	}
	return objs, err
}

func scanObject(r pgx.CollectableRow) (Object, error) {
	var o Object
	var raw []byte
	if err := r.Scan(&o.Key, &raw, &o.Version); err != nil {
		return o, err
	}
	v, err := decodeJSON(raw)
	o.Spec = v
	return o, err
}

// Get reads one object. A cluster comes with its members, in the config shape.
func (s *Store) Get(ctx context.Context, kind, cluster, key string) (*Object, error) {
	var rows pgx.Rows
	var err error
	switch kind {
	case KindNode, KindCluster, KindProvisioning:
		rows, err = s.pool.Query(ctx, fmt.Sprintf(`SELECT name, spec, version FROM %s WHERE name = $1`, kind), key)
	case KindMember:
		rows, err = s.pool.Query(ctx, `SELECT name, spec, version FROM members WHERE cluster = $1 AND name = $2`, cluster, key)
	default:
		return nil, fmt.Errorf("unknown kind %q", kind)
	}
	if err != nil {
		return nil, err
	}
	o, err := pgx.CollectExactlyOneRow(rows, scanObject)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if kind == KindCluster {
		ms, err := s.Objects(ctx, KindMember, key, "", 1<<30)
		if err != nil {
			return nil, err
		}
		spec := o.Spec.(map[string]any)
		if _, ok := spec["members"]; ok || len(ms) > 0 {
			mm := map[string]any{}
			for _, m := range ms {
				mm[m.Key] = m.Spec
			}
			spec["members"] = mm
		}
	}
	return &o, nil
}
