package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Approval is a network install's host key waiting for an operator (provisioning.pxe.approve): the installer
// reported done with it, and the member's secrets are held until the fingerprint is confirmed (migration
// 00007). Anyone who claims the machine's MAC can report done, so only the fingerprint shown on the machine's
// own console tells the real machine from a spoofer.
type Approval struct {
	// Fingerprint is the reported key's SHA256 fingerprint as ssh-keygen -lf prints it ("SHA256:...").
	Fingerprint string `json:"fingerprint"`
	// HostKey is the reported public key, `<type> <base64>`.
	HostKey string `json:"hostKey"`
	// Since is when the done report asked for approval.
	Since time.Time `json:"since"`
}

// ErrFingerprint: an approval named another fingerprint than the installer reported; nothing was approved.
var ErrFingerprint = errors.New("fingerprint mismatch")

// FingerprintError is an approval whose fingerprint is not the reported key's (ErrFingerprint).
type FingerprintError struct{ MAC, Given, Reported string }

func (e *FingerprintError) Error() string {
	return fmt.Sprintf("machine %s: the fingerprint %s is not the one of the host key its installer reported (%s); nothing approved, nothing delivered: compare with the machine's console (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), and if they differ another host answered as this MAC: reinstall it (POST /v1/machines/%s/reinstall) or investigate",
		e.MAC, e.Given, e.Reported, e.MAC)
}

func (e *FingerprintError) Is(t error) bool { return t == ErrFingerprint }

// AwaitApproval records that machine mac's installer reported done with hostKey (fingerprint is its SHA256
// fingerprint) and that its member's secrets wait for an operator: an awaiting_approval event, and the
// installing deadline paused until the approval. The machine must be installing with its install disarmed
// (the done report recorded), else ErrConflict.
func (s *Store) AwaitApproval(ctx context.Context, actor, mac, hostKey, fingerprint, reason string) (*Machine, error) {
	var m *Machine
	err := s.tx(ctx, actor, reason, func(tx pgx.Tx) error {
		var err error
		m, err = scanMachine(tx.QueryRow(ctx, `UPDATE machines SET approval_host_key = $2, approval_fingerprint = $3,
				approval_since = now(), state_deadline = NULL
			WHERE mac = $1::macaddr AND state = $4 AND NOT install_armed RETURNING `+machineCols, mac, hostKey, fingerprint, StateInstalling))
		if errors.Is(err, pgx.ErrNoRows) {
			return &ConflictError{Msg: fmt.Sprintf("machine %s is not installing with a finished install; no approval to wait for", mac)}
		}
		if err != nil {
			return err
		}
		details, _ := json.Marshal(map[string]string{"fingerprint": fingerprint, "hostKey": hostKey})
		_, err = tx.Exec(ctx, `INSERT INTO machine_events (mac, actor, kind, old_state, new_state, reason, details)
			VALUES ($1::macaddr, $2, 'awaiting_approval', $3, $3, $4, $5)`, mac, actor, m.State, reason, details)
		return err
	})
	return m, err
}

// ApprovedJob makes the job an approval queues (the deliver-secrets job of the machine's member, pinned to
// the approved key): its kind and parameters.
type ApprovedJob func(m *Machine, a Approval) (kind string, params json.RawMessage, err error)

// ApproveMachine confirms machine mac's pending approval when fingerprint is exactly the reported key's: in
// one transaction the approval is cleared (an approved event), the installing deadline starts again, and the
// job made by job is queued for the machine's member, so an approval is never lost between a daemon's crash
// and the queue, and two operators approving at once queue one job. A machine not awaiting approval is
// ErrConflict; another fingerprint is a *FingerprintError, recorded as an approval_refused event, and changes
// nothing else.
func (s *Store) ApproveMachine(ctx context.Context, actor, mac, fingerprint, reason string, job ApprovedJob) (*Machine, *Job, error) {
	var m *Machine
	var j *Job
	var refused *FingerprintError
	err := s.tx(ctx, actor, reason, func(tx pgx.Tx) error {
		cur, err := scanMachine(tx.QueryRow(ctx, `SELECT `+machineCols+` FROM machines WHERE mac = $1::macaddr FOR UPDATE`, mac))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("machine %s: %w", mac, ErrNotFound)
		}
		if err != nil {
			return err
		}
		a := cur.AwaitingApproval
		if a == nil {
			return &ConflictError{Msg: fmt.Sprintf("machine %s is not awaiting approval (state %s); nothing to approve", mac, cur.State)}
		}
		if fingerprint != a.Fingerprint {
			refused = &FingerprintError{MAC: mac, Given: fingerprint, Reported: a.Fingerprint}
			details, _ := json.Marshal(map[string]string{"fingerprint": fingerprint, "reported": a.Fingerprint})
			_, err := tx.Exec(ctx, `INSERT INTO machine_events (mac, actor, kind, old_state, new_state, reason, details)
				VALUES ($1::macaddr, $2, 'approval_refused', $3, $3, $4, $5)`, mac, actor, cur.State,
				"the fingerprint is not the one the installer reported", details)
			return err
		}
		if cur.Cluster == nil || cur.Member == nil {
			return &ConflictError{Msg: fmt.Sprintf("machine %s is not assigned to a member; nothing to deliver", mac)}
		}
		kind, params, err := job(cur, *a)
		if err != nil {
			return err
		}
		m, err = scanMachine(tx.QueryRow(ctx, `UPDATE machines SET approval_host_key = NULL, approval_fingerprint = NULL,
				approval_since = NULL, state_deadline = now() + (SELECT deadline FROM machine_states WHERE state = machines.state)
			WHERE mac = $1::macaddr RETURNING `+machineCols, mac))
		if err != nil {
			return err
		}
		details, _ := json.Marshal(map[string]string{"fingerprint": a.Fingerprint, "hostKey": a.HostKey})
		if _, err := tx.Exec(ctx, `INSERT INTO machine_events (mac, actor, kind, old_state, new_state, reason, details)
			VALUES ($1::macaddr, $2, 'approved', $3, $3, $4, $5)`, mac, actor, m.State, reason, details); err != nil {
			return err
		}
		j, err = scanJob(tx.QueryRow(ctx, `INSERT INTO jobs (kind, cluster, member, mac, params) VALUES ($1, $2, $3, $4::macaddr, $5)
			RETURNING `+jobCols, kind, cur.Cluster, cur.Member, mac, []byte(params)))
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	if refused != nil {
		return nil, nil, refused
	}
	return m, j, nil
}

// AwaitingApproval counts the machines whose secrets wait for an operator's approval (metrics).
func (s *Store) AwaitingApproval(ctx context.Context) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM machines WHERE approval_host_key IS NOT NULL`).Scan(&n)
	return n, err
}
