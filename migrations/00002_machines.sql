-- Physical machines known by MAC and the state machine they move through. The database enforces the allowed
-- transitions (machine_transitions), the assignment and lock rules, the per-state deadlines, and appends every
-- change to machine_events, whoever makes it: the daemon, another daemon, or an operator with psql.
-- Errors raised here carry SQLSTATE NX0xx so the daemon can answer 409 with the message.

-- +goose Up
CREATE TABLE machine_states (
    state        text PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('stable', 'in_progress', 'failed')),
    -- where an in-progress state goes when its deadline passes or its operation fails
    failed_state text REFERENCES machine_states (state) DEFERRABLE INITIALLY DEFERRED,
    -- how long a machine may stay in an in-progress state; tune with UPDATE machine_states SET deadline = ...
    deadline     interval,
    -- a machine in this state must be assigned to a cluster member
    needs_member boolean NOT NULL,
    description  text NOT NULL,
    CHECK ((kind = 'in_progress') = (failed_state IS NOT NULL)),
    CHECK (deadline IS NULL OR kind = 'in_progress')
);

INSERT INTO machine_states (state, kind, failed_state, deadline, needs_member, description) VALUES
 ('discovered',         'stable',      NULL,                 NULL,        false, 'known by MAC with its hardware facts; no disk has been touched; may be assigned to a member'),
 ('installing',         'in_progress', 'install_failed',     '1 hour',    true,  'NixOS is being installed for its member: the disk is being wiped'),
 ('install_failed',     'failed',      NULL,                 NULL,        true,  'the install failed or passed its deadline'),
 ('joined',             'in_progress', 'join_failed',        '30 minutes', true, 'installed and booted; k3s registered the node, waiting for it to become Ready'),
 ('join_failed',        'failed',      NULL,                 NULL,        true,  'the node did not become Ready in time'),
 ('ready',              'stable',      NULL,                 NULL,        true,  'a Ready node of its cluster'),
 ('rebuilding',         'in_progress', 'rebuild_failed',     '1 hour',    true,  'a new configuration is being switched to (drained first)'),
 ('rebuild_failed',     'failed',      NULL,                 NULL,        true,  'the rebuild failed or passed its deadline'),
 ('deprovisioning',     'in_progress', 'deprovision_failed', '1 hour',    false, 'the disk is being wiped and the machine released'),
 ('deprovision_failed', 'failed',      NULL,                 NULL,        false, 'the wipe failed or passed its deadline');

CREATE TABLE machine_transitions (
    from_state  text NOT NULL REFERENCES machine_states (state),
    to_state    text NOT NULL REFERENCES machine_states (state),
    -- touches the disk (install or wipe): refused while the machine is locked
    destructive boolean NOT NULL DEFAULT false,
    PRIMARY KEY (from_state, to_state)
);

INSERT INTO machine_transitions (from_state, to_state, destructive) VALUES
 ('discovered',         'installing',         true),
 ('discovered',         'deprovisioning',     true),
 ('installing',         'joined',             false),
 ('installing',         'install_failed',     false),
 ('install_failed',     'installing',         true),
 ('install_failed',     'deprovisioning',     true),
 ('joined',             'ready',              false),
 ('joined',             'join_failed',        false),
 ('join_failed',        'joined',             false),
 ('join_failed',        'ready',              false),
 ('join_failed',        'installing',         true),
 ('join_failed',        'deprovisioning',     true),
 ('ready',              'rebuilding',         false),
 ('ready',              'installing',         true),
 ('ready',              'deprovisioning',     true),
 ('rebuilding',         'ready',              false),
 ('rebuilding',         'rebuild_failed',     false),
 ('rebuild_failed',     'rebuilding',         false),
 ('rebuild_failed',     'ready',              false),
 ('rebuild_failed',     'installing',         true),
 ('rebuild_failed',     'deprovisioning',     true),
 ('deprovisioning',     'discovered',         false),
 ('deprovisioning',     'deprovision_failed', false),
 ('deprovision_failed', 'deprovisioning',     true);

CREATE TABLE machines (
    mac              macaddr PRIMARY KEY,
    facts            jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(facts) = 'object'),
    cluster          text,
    member           text,
    state            text NOT NULL DEFAULT 'discovered' REFERENCES machine_states (state),
    locked           boolean NOT NULL DEFAULT false,
    version          bigint NOT NULL DEFAULT 1,
    state_changed_at timestamptz NOT NULL DEFAULT now(),
    state_deadline   timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((cluster IS NULL) = (member IS NULL)),
    UNIQUE (cluster, member),
    FOREIGN KEY (cluster, member) REFERENCES members (cluster, name) ON DELETE SET NULL
);
CREATE INDEX machines_state ON machines (state);
CREATE INDEX machines_deadline ON machines (state_deadline) WHERE state_deadline IS NOT NULL;

-- Append-only: time, actor, old/new state, reason. No foreign key, so the history outlives a forgotten machine.
CREATE TABLE machine_events (
    id        bigserial PRIMARY KEY,
    mac       macaddr NOT NULL,
    at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor     text NOT NULL,
    kind      text NOT NULL CHECK (kind IN ('created', 'state', 'assigned', 'unassigned', 'locked', 'unlocked', 'facts', 'forgotten')),
    old_state text,
    new_state text,
    reason    text NOT NULL DEFAULT '',
    details   jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX machine_events_mac ON machine_events (mac, id);

-- The actor and reason of a change come from transaction-local settings (set_config('nix8s.actor', ..., true));
-- a change made without them is still recorded, under the database user's name.
-- +goose StatementBegin
CREATE FUNCTION nix8s_actor() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('nix8s.actor', true), ''), 'sql:' || session_user)
$$;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE FUNCTION nix8s_reason() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('nix8s.reason', true), '')
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION machines_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    st machine_states%ROWTYPE;
    tr machine_transitions%ROWTYPE;
    want_mac text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.locked THEN
            RAISE EXCEPTION 'machine % is locked; unlock it before forgetting it', OLD.mac USING ERRCODE = 'NX004';
        END IF;
        IF (SELECT kind FROM machine_states WHERE state = OLD.state) = 'in_progress' THEN
            RAISE EXCEPTION 'machine % is %; wait for it to finish or fail before forgetting it', OLD.mac, OLD.state
                USING ERRCODE = 'NX005';
        END IF;
        RETURN OLD;
    END IF;

    IF TG_OP = 'INSERT' THEN
        IF NEW.state <> 'discovered' THEN
            RAISE EXCEPTION 'machine % must start in state discovered, not %', NEW.mac, NEW.state USING ERRCODE = 'NX001';
        END IF;
        NEW.version := 1;
        NEW.state_changed_at := now();
        NEW.state_deadline := NULL;
    ELSE
        NEW.version := OLD.version + 1;
        NEW.updated_at := now();
        IF NEW.state IS DISTINCT FROM OLD.state THEN
            SELECT * INTO tr FROM machine_transitions WHERE from_state = OLD.state AND to_state = NEW.state;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'machine %: no transition from % to %; allowed from %: %', NEW.mac, OLD.state, NEW.state,
                    OLD.state, (SELECT coalesce(string_agg(to_state, ', ' ORDER BY to_state), 'none')
                                FROM machine_transitions WHERE from_state = OLD.state)
                    USING ERRCODE = 'NX001';
            END IF;
            IF tr.destructive AND NEW.locked THEN
                RAISE EXCEPTION 'machine % is locked: % -> % would touch its disk; unlock it first', NEW.mac, OLD.state, NEW.state
                    USING ERRCODE = 'NX004';
            END IF;
            -- Releasing a wiped machine drops its assignment (MAAS "release", Ironic "cleaning -> available").
            IF OLD.state = 'deprovisioning' AND NEW.state = 'discovered' THEN
                NEW.cluster := NULL;
                NEW.member := NULL;
            END IF;
            NEW.state_changed_at := now();
            NEW.state_deadline := now() + (SELECT deadline FROM machine_states WHERE state = NEW.state);
        ELSIF (NEW.cluster, NEW.member) IS DISTINCT FROM (OLD.cluster, OLD.member) AND OLD.state <> 'discovered' THEN
            RAISE EXCEPTION 'machine % is %: its assignment can change only in state discovered (deprovision it first)',
                NEW.mac, OLD.state USING ERRCODE = 'NX003';
        END IF;
    END IF;

    -- A member whose config names a MAC (its own network.mac, else its node template's) takes only that machine.
    IF NEW.member IS NOT NULL AND (TG_OP = 'INSERT' OR (NEW.cluster, NEW.member) IS DISTINCT FROM (OLD.cluster, OLD.member)) THEN
        SELECT replace(coalesce(m.mac, n.mac), '-', ':') INTO want_mac
        FROM members m LEFT JOIN nodes n ON n.name = m.node
        WHERE m.cluster = NEW.cluster AND m.name = NEW.member;
        IF want_mac IS NOT NULL AND want_mac <> NEW.mac::text THEN
            RAISE EXCEPTION 'machine % cannot be assigned to %.%: the config gives that member the MAC %',
                NEW.mac, NEW.cluster, NEW.member, want_mac USING ERRCODE = 'NX007';
        END IF;
    END IF;

    SELECT * INTO st FROM machine_states WHERE state = NEW.state;
    IF st.needs_member AND NEW.member IS NULL THEN
        RAISE EXCEPTION 'machine % in state % must be assigned to a cluster member%', NEW.mac, NEW.state,
            CASE WHEN TG_OP = 'UPDATE' AND OLD.member IS NOT NULL
                 THEN format(' (it is assigned to %s.%s, which cannot be removed while the machine is %s)', OLD.cluster, OLD.member, NEW.state)
                 ELSE '; assign it first' END
            USING ERRCODE = 'NX002';
    END IF;
    RETURN NEW;
END $$;
-- +goose StatementEnd

CREATE TRIGGER machines_guard BEFORE INSERT OR UPDATE OR DELETE ON machines FOR EACH ROW EXECUTE FUNCTION machines_guard();

-- +goose StatementBegin
CREATE FUNCTION machines_audit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    actor  text := nix8s_actor();
    reason text := nix8s_reason();
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO machine_events (mac, actor, kind, old_state, new_state, reason, details)
        VALUES (NEW.mac, actor, 'created', NULL, NEW.state, reason,
                jsonb_strip_nulls(jsonb_build_object('cluster', NEW.cluster, 'member', NEW.member)));
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        INSERT INTO machine_events (mac, actor, kind, old_state, new_state, reason)
        VALUES (OLD.mac, actor, 'forgotten', OLD.state, NULL, reason);
        RETURN NULL;
    END IF;
    IF NEW.state IS DISTINCT FROM OLD.state THEN
        INSERT INTO machine_events (mac, actor, kind, old_state, new_state, reason, details)
        VALUES (NEW.mac, actor, 'state', OLD.state, NEW.state, reason,
                jsonb_strip_nulls(jsonb_build_object('deadline', NEW.state_deadline)));
    END IF;
    IF (NEW.cluster, NEW.member) IS DISTINCT FROM (OLD.cluster, OLD.member) THEN
        INSERT INTO machine_events (mac, actor, kind, old_state, new_state, reason, details)
        VALUES (NEW.mac, actor, CASE WHEN NEW.member IS NULL THEN 'unassigned' ELSE 'assigned' END, OLD.state, NEW.state, reason,
                jsonb_build_object('from', CASE WHEN OLD.member IS NOT NULL THEN OLD.cluster || '.' || OLD.member END,
                                   'to', CASE WHEN NEW.member IS NOT NULL THEN NEW.cluster || '.' || NEW.member END));
    END IF;
    IF NEW.locked IS DISTINCT FROM OLD.locked THEN
        INSERT INTO machine_events (mac, actor, kind, old_state, new_state, reason)
        VALUES (NEW.mac, actor, CASE WHEN NEW.locked THEN 'locked' ELSE 'unlocked' END, OLD.state, NEW.state, reason);
    END IF;
    IF NEW.facts IS DISTINCT FROM OLD.facts THEN
        INSERT INTO machine_events (mac, actor, kind, old_state, new_state, reason)
        VALUES (NEW.mac, actor, 'facts', OLD.state, NEW.state, reason);
    END IF;
    RETURN NULL;
END $$;
-- +goose StatementEnd

CREATE TRIGGER machines_audit AFTER INSERT OR UPDATE OR DELETE ON machines FOR EACH ROW EXECUTE FUNCTION machines_audit();

-- +goose StatementBegin
CREATE FUNCTION machine_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'machine_events is append-only' USING ERRCODE = 'NX006';
END $$;
-- +goose StatementEnd

CREATE TRIGGER machine_events_append_only BEFORE UPDATE OR DELETE ON machine_events
    FOR EACH ROW EXECUTE FUNCTION machine_events_append_only();
CREATE TRIGGER machine_events_no_truncate BEFORE TRUNCATE ON machine_events
    FOR EACH STATEMENT EXECUTE FUNCTION machine_events_append_only();

-- Moves every machine whose in-progress deadline has passed to that state's failed state, as `actor`. Safe to run
-- from several daemons at once (rows locked by another run are skipped).
-- +goose StatementBegin
CREATE FUNCTION machines_expire(actor text)
RETURNS TABLE (expired_mac macaddr, from_state text, to_state text) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('nix8s.actor', actor, true);
    PERFORM set_config('nix8s.reason', 'deadline exceeded', true);
    RETURN QUERY
    WITH expired AS (
        SELECT m.mac, m.state AS old_state, s.failed_state
        FROM machines m JOIN machine_states s ON s.state = m.state
        WHERE s.failed_state IS NOT NULL AND m.state_deadline <= now()
        FOR UPDATE OF m SKIP LOCKED
    )
    UPDATE machines m SET state = e.failed_state FROM expired e WHERE m.mac = e.mac
    RETURNING m.mac, e.old_state, m.state;
END $$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION machines_expire(text);
DROP TABLE machine_events;
DROP TABLE machines;
DROP FUNCTION machine_events_append_only();
DROP FUNCTION machines_audit();
DROP FUNCTION machines_guard();
DROP FUNCTION nix8s_reason();
DROP FUNCTION nix8s_actor();
DROP TABLE machine_transitions;
DROP TABLE machine_states;
