-- Approval of a network install's host key (provisioning.pxe.approve): anyone on the provisioning LAN can claim a
-- member's MAC, boot its installer and report `done` with a host key of its own, so the secrets of a member that
-- needs approval are held until an operator confirms the reported key's fingerprint, read on the machine's
-- console (POST /v1/machines/{mac}/approve). The pending approval lives here, so it survives restarts and any
-- daemon sharing the database can take the approval.
--
-- A machine awaits approval while it is installing, disarmed (the installer reported done), with the reported
-- key and its fingerprint set. Its installing deadline is paused while it waits (an operator may be away for
-- longer than an install takes) and starts again when it is approved. A new install generation or a move out
-- of installing drops the pending approval: the key it names belongs to an install that is over.

-- +goose Up
ALTER TABLE machines
    ADD COLUMN approval_host_key text,
    -- SHA256:<unpadded base64 of the key blob's SHA-256>, as ssh-keygen -lf prints it
    ADD COLUMN approval_fingerprint text CHECK (approval_fingerprint IS NULL OR approval_fingerprint ~ '^SHA256:[A-Za-z0-9+/]{43}$'),
    ADD COLUMN approval_since timestamptz,
    ADD CONSTRAINT machines_approval_whole CHECK ((approval_host_key IS NULL) = (approval_fingerprint IS NULL)
                                                 AND (approval_host_key IS NULL) = (approval_since IS NULL)),
    ADD CONSTRAINT machines_approval_installing CHECK (approval_host_key IS NULL OR (state = 'installing' AND NOT install_armed));
CREATE INDEX machines_awaiting_approval ON machines (mac) WHERE approval_host_key IS NOT NULL;

ALTER TABLE machine_events DROP CONSTRAINT machine_events_kind_check;
ALTER TABLE machine_events ADD CONSTRAINT machine_events_kind_check
    CHECK (kind IN ('created', 'state', 'assigned', 'unassigned', 'locked', 'unlocked', 'facts', 'forgotten',
                    'armed', 'progress', 'awaiting_approval', 'approved', 'approval_refused'));

-- +goose StatementBegin
CREATE FUNCTION machines_approval() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state <> 'installing' OR NEW.install_generation <> OLD.install_generation OR NEW.install_armed THEN
        NEW.approval_host_key := NULL;
        NEW.approval_fingerprint := NULL;
        NEW.approval_since := NULL;
    END IF;
    RETURN NEW;
END $$;
-- +goose StatementEnd

CREATE TRIGGER machines_approval BEFORE UPDATE ON machines FOR EACH ROW EXECUTE FUNCTION machines_approval();

-- +goose Down
DROP TRIGGER machines_approval ON machines;
DROP FUNCTION machines_approval();
-- machine_events is append-only: the approval events stay (NOT VALID keeps the rows there).
ALTER TABLE machine_events DROP CONSTRAINT machine_events_kind_check;
ALTER TABLE machine_events ADD CONSTRAINT machine_events_kind_check
    CHECK (kind IN ('created', 'state', 'assigned', 'unassigned', 'locked', 'unlocked', 'facts', 'forgotten',
                    'armed', 'progress')) NOT VALID;
DROP INDEX machines_awaiting_approval;
ALTER TABLE machines
    DROP COLUMN approval_since,
    DROP COLUMN approval_fingerprint,
    DROP COLUMN approval_host_key;
