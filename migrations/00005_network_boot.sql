-- Network boot (internal/pxe): the one-shot install arming of each machine, install progress in the audit log,
-- and full-mode DHCP leases.
--
-- An install over the network is *armed*: the machine moves to installing with a new install generation, and
-- only an armed machine is handed its installer when it boots from the network. The installer's first boot
-- script of that generation gets a one-time phone-home token (only its SHA-256 is kept); reports must carry it;
-- `done` or an error uses it up and disarms the install. Leaving installing disarms whatever was armed. An
-- install over SSH (nixos-anywhere) moves to installing without arming: such a machine boots its disk.

-- +goose Up
ALTER TABLE machines
    ADD COLUMN install_generation bigint NOT NULL DEFAULT 0 CHECK (install_generation >= 0),
    ADD COLUMN install_armed boolean NOT NULL DEFAULT false,
    -- set when the first boot script of the generation claimed the token; NULL: not claimed yet
    ADD COLUMN install_token_hash bytea CHECK (install_token_hash IS NULL OR length(install_token_hash) = 32),
    ADD CHECK (NOT install_armed OR state = 'installing'),
    ADD CHECK (install_token_hash IS NULL OR install_armed);

ALTER TABLE machine_events DROP CONSTRAINT machine_events_kind_check;
ALTER TABLE machine_events ADD CONSTRAINT machine_events_kind_check
    CHECK (kind IN ('created', 'state', 'assigned', 'unassigned', 'locked', 'unlocked', 'facts', 'forgotten',
                    'armed', 'progress'));

-- Arming happens only with the move into installing and always starts a new generation; leaving installing
-- disarms and forgets the token.
-- +goose StatementBegin
CREATE FUNCTION machines_arming() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.install_generation < OLD.install_generation THEN
        RAISE EXCEPTION 'machine %: the install generation only grows', NEW.mac USING ERRCODE = 'NX008';
    END IF;
    IF NEW.install_generation <> OLD.install_generation
       AND NOT (NEW.install_armed AND NEW.state = 'installing' AND OLD.state <> 'installing') THEN
        RAISE EXCEPTION 'machine %: a new install generation is armed only with the move into installing', NEW.mac
            USING ERRCODE = 'NX008';
    END IF;
    IF NEW.install_armed AND NOT OLD.install_armed AND NEW.install_generation = OLD.install_generation THEN
        RAISE EXCEPTION 'machine %: arming an install needs a new generation', NEW.mac USING ERRCODE = 'NX008';
    END IF;
    IF NEW.state <> 'installing' THEN
        NEW.install_armed := false;
        NEW.install_token_hash := NULL;
    END IF;
    RETURN NEW;
END $$;
-- +goose StatementEnd

CREATE TRIGGER machines_arming BEFORE UPDATE ON machines FOR EACH ROW EXECUTE FUNCTION machines_arming();

-- +goose StatementBegin
CREATE FUNCTION machines_audit_arming() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.install_generation <> OLD.install_generation THEN
        INSERT INTO machine_events (mac, actor, kind, old_state, new_state, reason, details)
        VALUES (NEW.mac, nix8s_actor(), 'armed', OLD.state, NEW.state, nix8s_reason(),
                jsonb_build_object('generation', NEW.install_generation));
    END IF;
    RETURN NULL;
END $$;
-- +goose StatementEnd

CREATE TRIGGER machines_audit_arming AFTER UPDATE ON machines FOR EACH ROW EXECUTE FUNCTION machines_audit_arming();

-- Full-mode DHCP leases: one per MAC, one MAC per address.
CREATE TABLE dhcp_leases (
    mac        macaddr PRIMARY KEY,
    ip         inet NOT NULL UNIQUE CHECK (family(ip) = 4 AND masklen(ip) = 32),
    expires    timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE dhcp_leases;
DROP TRIGGER machines_audit_arming ON machines;
DROP FUNCTION machines_audit_arming();
DROP TRIGGER machines_arming ON machines;
DROP FUNCTION machines_arming();
-- machine_events is append-only: the armed and progress events stay (NOT VALID keeps the rows there).
ALTER TABLE machine_events DROP CONSTRAINT machine_events_kind_check;
ALTER TABLE machine_events ADD CONSTRAINT machine_events_kind_check
    CHECK (kind IN ('created', 'state', 'assigned', 'unassigned', 'locked', 'unlocked', 'facts', 'forgotten')) NOT VALID;
ALTER TABLE machines
    DROP COLUMN install_token_hash,
    DROP COLUMN install_armed,
    DROP COLUMN install_generation;
