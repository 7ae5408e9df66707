package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"

	"github.com/nix8s/nix8s/internal/jobs"
	"github.com/nix8s/nix8s/internal/store"
)

// Approve is the body of POST /v1/machines/{mac}/approve.
type Approve struct {
	// Fingerprint is the machine's host key fingerprint as ssh-keygen -lf prints it on its console.
	Fingerprint string `json:"fingerprint"`
	Reason      string `json:"reason,omitempty"`
}

var fingerprintRe = regexp.MustCompile(`^SHA256:[A-Za-z0-9+/]{43}$`)

// approveMachine confirms the host key a network install reported (provisioning.pxe.approve) and queues the
// delivery of the member's secrets pinned to it, in one transaction; any other fingerprint is refused and
// recorded, and nothing moves.
func (s *Server) approveMachine(w http.ResponseWriter, r *http.Request) {
	mac, err := macParam(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var body Approve
	if err := s.decodeStrict(w, r, &body); err != nil {
		s.fail(w, r, err)
		return
	}
	if !fingerprintRe.MatchString(body.Fingerprint) {
		s.fail(w, r, badRequest(fmt.Sprintf("fingerprint %q is not a SHA256 host key fingerprint; send it as ssh-keygen -lf prints it on the machine's console, such as SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s", body.Fingerprint),
			Problem{Path: "fingerprint", Message: "must be SHA256: followed by 43 base64 characters"}))
		return
	}
	reason := body.Reason
	if reason == "" {
		reason = "the operator confirmed the host key fingerprint"
	}
	_, j, err := s.st.ApproveMachine(r.Context(), actor(r), mac, body.Fingerprint, reason, deliverSecretsJob)
	var fe *store.FingerprintError
	if errors.As(err, &fe) {
		s.log.Warn("approval refused: the fingerprint is not the reported host key's; nothing delivered",
			"mac", mac, "given", fe.Given, "reported", fe.Reported, "by", actor(r))
		s.fail(w, r, &httpError{status: http.StatusConflict, code: "conflict", msg: fe.Error(),
			details: []Problem{{Path: "fingerprint", Message: "is not the fingerprint of the host key the installer reported"}}})
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if s.ops != nil {
		s.ops.Wake()
	}
	s.log.Info("host key approved; delivering the member's secrets", "mac", mac, "fingerprint", body.Fingerprint, "job", j.ID, "by", actor(r))
	w.Header().Set("Location", fmt.Sprintf("/v1/jobs/%d", j.ID))
	writeJSON(w, http.StatusAccepted, j)
}

// deliverSecretsJob is the job an approval queues: the member's secrets, pinned to the approved key.
func deliverSecretsJob(m *store.Machine, a store.Approval) (string, json.RawMessage, error) {
	p, err := json.Marshal(jobs.DeliverParams{MAC: m.MAC, HostKey: a.HostKey})
	return jobs.KindDeliverSecrets, p, err
}
