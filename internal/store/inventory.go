package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"

	"github.com/jackc/pgx/v5"
)

// Sections are the config's top-level keys.
var Sections = []string{"nodes", "clusters", "provisioning"}

// Snapshot is the whole inventory at one version, with the version of every object in it.
type Snapshot struct {
	// Version grows with every change anywhere in the inventory.
	Version int64
	// Config is the inventory in the nix8s config shape, as JSON values (numbers are json.Number).
	Config map[string]any
	// Versions of the objects, by kind then key ("prod" for a cluster, "prod/agent1" for a member).
	Nodes, Clusters, Members, Provisioning map[string]int64
}

// MemberKey is the key of a member in Snapshot.Members.
func MemberKey(cluster, member string) string { return cluster + "/" + member }

// ErrStale: the inventory changed since the snapshot the change was computed from.
var ErrStale = errors.New("inventory changed since it was read")

// Snapshot reads the whole inventory consistently.
func (s *Store) Snapshot(ctx context.Context) (*Snapshot, error) {
	snap := &Snapshot{Nodes: map[string]int64{}, Clusters: map[string]int64{}, Members: map[string]int64{}, Provisioning: map[string]int64{}}
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var top []byte
		if err := tx.QueryRow(ctx, "SELECT top, version FROM inventory_meta").Scan(&top, &snap.Version); err != nil {
			return err
		}
		cfg, err := decodeObject(top)
		if err != nil {
			return err
		}
		snap.Config = cfg
		section := func(name string) map[string]any {
			if m, ok := cfg[name].(map[string]any); ok {
				return m
			}
			m := map[string]any{}
			cfg[name] = m
			return m
		}
		rows := func(q string, f func(key string, spec any, version int64, extra string) error) error {
			r, err := tx.Query(ctx, q)
			if err != nil {
				return err
			}
			defer r.Close()
			for r.Next() {
				var key, extra string
				var raw []byte
				var v int64
				if err := r.Scan(&key, &extra, &raw, &v); err != nil {
					return err
				}
				spec, err := decodeJSON(raw)
				if err != nil {
					return err
				}
				if err := f(key, spec, v, extra); err != nil {
					return err
				}
			}
			return r.Err()
		}
		if err := rows("SELECT name, '', spec, version FROM nodes", func(k string, spec any, v int64, _ string) error {
			section("nodes")[k] = spec
			snap.Nodes[k] = v
			return nil
		}); err != nil {
			return err
		}
		if err := rows("SELECT name, '', spec, version FROM clusters", func(k string, spec any, v int64, _ string) error {
			section("clusters")[k] = spec
			snap.Clusters[k] = v
			return nil
		}); err != nil {
			return err
		}
		if err := rows("SELECT cluster, name, spec, version FROM members", func(c string, spec any, v int64, m string) error {
			cl, ok := section("clusters")[c].(map[string]any)
			if !ok {
				return fmt.Errorf("member %s.%s without cluster", c, m)
			}
			ms, ok := cl["members"].(map[string]any)
			if !ok {
				ms = map[string]any{}
				cl["members"] = ms
			}
			ms[m] = spec
			snap.Members[MemberKey(c, m)] = v
			return nil
		}); err != nil {
			return err
		}
		return rows("SELECT name, '', spec, version FROM provisioning", func(k string, spec any, v int64, _ string) error {
			section("provisioning")[k] = spec
			snap.Provisioning[k] = v
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("reading the inventory: %w", err)
	}
	return snap, nil
}

// InventoryVersion is the inventory's current version (cheap: one row).
func (s *Store) InventoryVersion(ctx context.Context) (int64, error) {
	var v int64
	err := s.pool.QueryRow(ctx, "SELECT version FROM inventory_meta").Scan(&v)
	return v, err
}

// rowsOf is the config split into the rows it is stored as.
type rowsOf struct {
	top          map[string]any
	nodes        map[string]any
	clusters     map[string]any // without member contents
	members      map[string]any // MemberKey -> spec
	provisioning map[string]any
}

// split checks that cfg has the shape the tables hold and splits it into rows.
func split(cfg map[string]any) (*rowsOf, error) {
	r := &rowsOf{top: map[string]any{}, nodes: map[string]any{}, clusters: map[string]any{}, members: map[string]any{}, provisioning: map[string]any{}}
	for k, v := range cfg {
		switch k {
		case "nodes", "clusters", "provisioning":
			if _, ok := v.(map[string]any); !ok {
				return nil, &InvalidError{Path: k, Msg: "must be a mapping"}
			}
			r.top[k] = map[string]any{}
		default:
			return nil, &InvalidError{Path: k, Msg: "unknown top-level key; a config has nodes, clusters and provisioning"}
		}
	}
	if m, ok := cfg["nodes"].(map[string]any); ok {
		for n, spec := range m {
			if _, ok := spec.(map[string]any); !ok {
				return nil, &InvalidError{Path: "nodes." + n, Msg: "a node must be a mapping"}
			}
			r.nodes[n] = spec
		}
	}
	if m, ok := cfg["clusters"].(map[string]any); ok {
		for c, spec := range m {
			cl, ok := spec.(map[string]any)
			if !ok {
				return nil, &InvalidError{Path: "clusters." + c, Msg: "a cluster must be a mapping"}
			}
			shallow := make(map[string]any, len(cl))
			for k, v := range cl {
				shallow[k] = v
			}
			if ms, present := cl["members"]; present {
				mm, ok := ms.(map[string]any)
				if !ok {
					return nil, &InvalidError{Path: "clusters." + c + ".members", Msg: "must be a mapping of member names"}
				}
				for name, mspec := range mm {
					if _, ok := mspec.(map[string]any); !ok {
						return nil, &InvalidError{Path: "clusters." + c + ".members." + name, Msg: "a member must be a mapping"}
					}
					r.members[MemberKey(c, name)] = mspec
				}
				shallow["members"] = map[string]any{}
			}
			r.clusters[c] = shallow
		}
	}
	if m, ok := cfg["provisioning"].(map[string]any); ok {
		for k, v := range m {
			r.provisioning[k] = v
		}
	}
	return r, nil
}

// Next is what a change stores: the next config and what the core derived from it that the database keeps
// beside it.
type Next struct {
	// Config is the whole next inventory.
	Config map[string]any
	// MACs are the members' MACs as the core's plan gives them (members.<m>.mac: the member's override, else its
	// named or inline node template's), one per member that has one. A machine is assigned to such a member only
	// when it has that MAC (the machines trigger reads them, migrations/00010_member_macs.sql).
	MACs []MemberMAC
}

// MemberMAC is the MAC the core gives a member.
type MemberMAC struct {
	Cluster, Member, MAC string
}

// Apply stores next as the whole inventory, writing only the objects that differ from base, and the members'
// MACs, in one transaction. It fails with ErrStale when the inventory is no longer at base.Version.
func (s *Store) Apply(ctx context.Context, actor string, base *Snapshot, next Next) (int64, error) {
	nr, err := split(next.Config)
	if err != nil {
		return 0, err
	}
	or, err := split(base.Config)
	if err != nil {
		return 0, err
	}
	var version int64
	err = s.tx(ctx, actor, "inventory change", func(tx pgx.Tx) error {
		top, _ := json.Marshal(nr.top)
		err := tx.QueryRow(ctx, `UPDATE inventory_meta SET version = version + 1, top = $1, updated_at = now()
			WHERE version = $2 RETURNING version`, top, base.Version).Scan(&version)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrStale
		}
		if err != nil {
			return err
		}
		b := &pgx.Batch{}
		// Deletions, members before their clusters.
		for _, k := range removed(or.members, nr.members) {
			c, m := splitKey(k)
			b.Queue("DELETE FROM members WHERE cluster = $1 AND name = $2", c, m)
		}
		for _, k := range removed(or.clusters, nr.clusters) {
			b.Queue("DELETE FROM clusters WHERE name = $1", k)
		}
		for _, k := range removed(or.nodes, nr.nodes) {
			b.Queue("DELETE FROM nodes WHERE name = $1", k)
		}
		for _, k := range removed(or.provisioning, nr.provisioning) {
			b.Queue("DELETE FROM provisioning WHERE name = $1", k)
		}
		// Clusters whose members change get a new version too: a cluster's version covers its members.
		touched := map[string]bool{}
		for _, k := range changed(or.members, nr.members) {
			c, _ := splitKey(k)
			touched[c] = true
		}
		for _, k := range removed(or.members, nr.members) {
			c, _ := splitKey(k)
			touched[c] = true
		}
		for _, k := range changed(or.clusters, nr.clusters) {
			touched[k] = true
		}
		for _, c := range sortedKeys(touched) {
			spec, ok := nr.clusters[c]
			if !ok {
				continue
			}
			b.Queue(upsert("clusters"), c, mustJSON(spec))
		}
		for _, k := range changed(or.members, nr.members) {
			c, m := splitKey(k)
			b.Queue(`INSERT INTO members (cluster, name, spec) VALUES ($1, $2, $3)
				ON CONFLICT (cluster, name) DO UPDATE SET spec = EXCLUDED.spec, version = members.version + 1, updated_at = now()`,
				c, m, mustJSON(nr.members[k]))
		}
		for _, k := range changed(or.nodes, nr.nodes) {
			b.Queue(upsert("nodes"), k, mustJSON(nr.nodes[k]))
		}
		for _, k := range changed(or.provisioning, nr.provisioning) {
			b.Queue(upsert("provisioning"), k, mustJSON(nr.provisioning[k]))
		}
		// The members' MACs become next.MACs: rows that differ go, new ones come (after the members they name).
		clusters, members, macs := make([]string, len(next.MACs)), make([]string, len(next.MACs)), make([]string, len(next.MACs))
		for i, m := range next.MACs {
			clusters[i], members[i], macs[i] = m.Cluster, m.Member, m.MAC
		}
		b.Queue(`DELETE FROM member_macs o WHERE NOT EXISTS (
			SELECT 1 FROM unnest($1::text[], $2::text[], $3::macaddr[]) AS n (cluster, member, mac)
			WHERE n.cluster = o.cluster AND n.member = o.member AND n.mac = o.mac)`, clusters, members, macs)
		b.Queue(`INSERT INTO member_macs (cluster, member, mac)
			SELECT * FROM unnest($1::text[], $2::text[], $3::macaddr[]) ON CONFLICT (cluster, member) DO NOTHING`, clusters, members, macs)
		return tx.SendBatch(ctx, b).Close()
	})
	return version, err
}

func upsert(table string) string {
	return fmt.Sprintf(`INSERT INTO %[1]s (name, spec) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET spec = EXCLUDED.spec, version = %[1]s.version + 1, updated_at = now()`, table)
}

// Modify is ModifyNext for a change that knows no members' MACs (a write past the core, as in tests): the
// stored MACs are then none, and every member takes any machine.
func (s *Store) Modify(ctx context.Context, actor string, change func(*Snapshot) (map[string]any, error)) (int64, error) {
	return s.ModifyNext(ctx, actor, func(snap *Snapshot) (*Next, error) {
		cfg, err := change(snap)
		if err != nil {
			return nil, err
		}
		return &Next{Config: cfg}, nil
	})
}

// ModifyNext is the one way to change the config layers: it reads the inventory, lets change compute the next
// config with its members' MACs (and check preconditions and validity, returning an error to refuse), and
// stores the difference. When another writer got in between, it starts again from the new inventory.
func (s *Store) ModifyNext(ctx context.Context, actor string, change func(*Snapshot) (*Next, error)) (int64, error) {
	for attempt := 0; ; attempt++ {
		snap, err := s.Snapshot(ctx)
		if err != nil {
			return 0, err
		}
		next, err := change(snap)
		if err != nil {
			return 0, err
		}
		v, err := s.Apply(ctx, actor, snap, *next)
		if errors.Is(err, ErrStale) && attempt < 20 {
			continue
		}
		if errors.Is(err, ErrStale) {
			return 0, &ConflictError{Msg: "the inventory kept changing while this change was made; retry"}
		}
		return v, err
	}
}

// removed lists keys of old missing from next, sorted.
func removed(old, next map[string]any) []string {
	var out []string
	for k := range old {
		if _, ok := next[k]; !ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// changed lists keys of next that are new or differ from old, sorted.
func changed(old, next map[string]any) []string {
	var out []string
	for k, v := range next {
		if o, ok := old[k]; !ok || !Equal(o, v) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func splitKey(k string) (string, string) {
	for i := 0; i < len(k); i++ {
		if k[i] == '/' {
			return k[:i], k[i+1:]
		}
	}
	return k, ""
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("store: a decoded JSON value does not encode: %v", err))
	}
	return b
}

// Normalize returns v as the JSON values a decoder with UseNumber gives (map[string]any, []any, json.Number ...).
func Normalize(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return decodeJSON(b)
}

// Equal reports JSON value equality (numbers compared by value, so 1, 1.0 and 1e0 are equal).
func Equal(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !Equal(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !Equal(x[i], y[i]) {
				return false
			}
		}
		return true
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		if x == y {
			return true
		}
		fx, e1 := x.Float64()
		fy, e2 := y.Float64()
		return e1 == nil && e2 == nil && fx == fy
	default:
		return reflect.DeepEqual(a, b)
	}
}

func decodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

func decodeObject(b []byte) (map[string]any, error) {
	v, err := decodeJSON(b)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("expected a JSON object")
	}
	return m, nil
}
