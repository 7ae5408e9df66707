package store

import "context"

// MemberHostKey is the SSH host key a member's machine answered a secrets delivery with.
type MemberHostKey struct {
	Member string
	MAC    string
	// HostKey is `<type> <base64>`.
	HostKey string
}

// MemberHostKeys are the host keys of cluster's network-installed members: for each machine assigned to a
// member, not locked, the key of its latest deliver-secrets job of that member whose ssh connection
// answered with the pinned key (the job's result names it: jobs.DeliverResult.HostKey). The key was the one
// the installer reported, approved where provisioning.pxe.approve asks for it. A machine that went into
// installing after that delivery started has no key here: it is being, or was, installed again (over ssh, its
// install records its new key in the known_hosts file; over the network, a new delivery pins the new one).
func (s *Store) MemberHostKeys(ctx context.Context, cluster string) ([]MemberHostKey, error) {
	rows, err := s.pool.Query(ctx, `SELECT m.member, m.mac::text, d.key
		FROM machines m
		CROSS JOIN LATERAL (
			SELECT j.result->>'hostKey' AS key, coalesce(j.started_at, j.created_at) AS since
			FROM jobs j
			WHERE j.kind = 'deliver-secrets' AND j.cluster = m.cluster AND j.member = m.member
			  AND lower(j.params->>'mac') = m.mac::text AND coalesce(j.result->>'hostKey', '') <> ''
			ORDER BY j.id DESC LIMIT 1) d
		WHERE m.cluster = $1 AND m.member IS NOT NULL AND NOT m.locked
		  AND NOT EXISTS (SELECT 1 FROM machine_events e WHERE e.mac = m.mac AND e.new_state = $2
		                  AND e.old_state IS DISTINCT FROM $2 AND e.at > d.since)
		ORDER BY m.member`, cluster, StateInstalling)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []MemberHostKey
	for rows.Next() {
		var k MemberHostKey
		if err := rows.Scan(&k.Member, &k.MAC, &k.HostKey); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}
