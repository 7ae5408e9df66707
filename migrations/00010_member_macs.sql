-- The members' MACs as the core computed them, stored with the inventory in the same transaction
-- (internal/store Apply, from the plan of the write's one evaluation: members.<m>.mac is the member's
-- network.mac, else its named or inline node template's). A machine is assigned to a member that has a MAC only
-- when it is the machine with that MAC. Before, the machines trigger merged the member's and its named template's
-- JSON itself: it missed inline templates and took MAC spellings the core refuses; now it reads this table and
-- compares macaddr values, so the spelling is the core's (it accepts upper case) and nothing else.
--
-- As before, the rule is checked when an assignment is made: a member whose MAC changes in the inventory keeps
-- the machine assigned to it (network boot reports that conflict), and a member whose MAC is removed takes any
-- machine from then on. Removing a member drops its row (and unassigns its machine, as the machines' foreign key
-- always did).

-- +goose Up
CREATE TABLE member_macs (
    cluster text NOT NULL,
    member  text NOT NULL,
    mac     macaddr NOT NULL UNIQUE,
    PRIMARY KEY (cluster, member),
    FOREIGN KEY (cluster, member) REFERENCES members (cluster, name) ON DELETE CASCADE
);

-- The inventory stored before this migration gets the MACs the trigger used to read (plus inline templates'),
-- until its next write replaces them with the core's. A stored inventory was validated by the core, so its MACs
-- are valid and distinct; anything else is left out rather than failing the migration.
INSERT INTO member_macs (cluster, member, mac)
SELECT m.cluster, m.name, w.mac::macaddr
FROM members m LEFT JOIN nodes n ON n.name = m.node,
     LATERAL (SELECT coalesce(m.mac, n.mac, lower(m.spec #>> '{node,network,mac}')) AS mac) w
WHERE w.mac ~ '^[0-9a-f]{2}(:[0-9a-f]{2}){5}$'
ON CONFLICT DO NOTHING;

-- machines_guard without the MAC check, which is machines_member_mac's now.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION machines_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    st machine_states%ROWTYPE;
    tr machine_transitions%ROWTYPE;
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

-- A member that has a MAC takes only that machine.
-- +goose StatementBegin
CREATE FUNCTION machines_member_mac() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    want macaddr;
BEGIN
    IF NEW.member IS NOT NULL AND (TG_OP = 'INSERT' OR (NEW.cluster, NEW.member) IS DISTINCT FROM (OLD.cluster, OLD.member)) THEN
        SELECT mac INTO want FROM member_macs WHERE cluster = NEW.cluster AND member = NEW.member;
        IF want IS NOT NULL AND want <> NEW.mac THEN
            RAISE EXCEPTION 'machine % cannot be assigned to %.%: the config gives that member the MAC %',
                NEW.mac, NEW.cluster, NEW.member, want USING ERRCODE = 'NX007';
        END IF;
    END IF;
    RETURN NEW;
END $$;
-- +goose StatementEnd

CREATE TRIGGER machines_member_mac BEFORE INSERT OR UPDATE ON machines FOR EACH ROW EXECUTE FUNCTION machines_member_mac();

-- +goose Down
DROP TRIGGER machines_member_mac ON machines;
DROP FUNCTION machines_member_mac();
-- machines_guard as 00002_machines.sql made it, reading the members' and node templates' JSON again.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION machines_guard() RETURNS trigger LANGUAGE plpgsql AS $$
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
DROP TABLE member_macs;
