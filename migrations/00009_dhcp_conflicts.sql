-- What the DHCP server notices of conflicts and where machines come from (internal/pxe, docs/pxe.md "Conflicts
-- on DHCP" and "Discovery per segment"): addresses a client declined (DHCPDECLINE: another host answers ARP for
-- it) are quarantined and not offered again for a while; a machine records the segment it was discovered on
-- (the DHCP relay's address, or the server interface's subnet for directly attached clients), so the machines
-- waiting in discovered are bounded per segment; and a conflict that does not lock a machine is an event.

-- +goose Up
CREATE TABLE dhcp_declined (
    ip    inet PRIMARY KEY CHECK (family(ip) = 4 AND masklen(ip) = 32),
    -- the client that declined it
    mac   macaddr NOT NULL,
    until timestamptz NOT NULL,
    at    timestamptz NOT NULL DEFAULT now()
);

-- NULL: not known (made before this migration, from the config, or with no DHCP packet of the MAC seen).
ALTER TABLE machines ADD COLUMN segment text CHECK (segment IS NULL OR length(segment) BETWEEN 1 AND 64);
CREATE INDEX machines_discovered_segment ON machines (segment) WHERE state = 'discovered';

-- The event kind 'conflict' is added to whatever the constraint allows now (another migration may have added
-- kinds of its own), read from the catalog rather than repeated here.
-- +goose StatementBegin
DO $$
DECLARE def text;
BEGIN
    SELECT pg_get_constraintdef(oid) INTO def FROM pg_constraint
    WHERE conrelid = 'machine_events'::regclass AND conname = 'machine_events_kind_check';
    IF def NOT LIKE '%''conflict''%' THEN
        ALTER TABLE machine_events DROP CONSTRAINT machine_events_kind_check;
        EXECUTE 'ALTER TABLE machine_events ADD CONSTRAINT machine_events_kind_check '
            || replace(def, 'ARRAY[', 'ARRAY[''conflict''::text, ');
    END IF;
END $$;
-- +goose StatementEnd

-- +goose Down
-- machine_events is append-only: the conflict events stay (NOT VALID keeps the rows there).
-- +goose StatementBegin
DO $$
DECLARE def text;
BEGIN
    SELECT pg_get_constraintdef(oid) INTO def FROM pg_constraint
    WHERE conrelid = 'machine_events'::regclass AND conname = 'machine_events_kind_check';
    ALTER TABLE machine_events DROP CONSTRAINT machine_events_kind_check;
    EXECUTE 'ALTER TABLE machine_events ADD CONSTRAINT machine_events_kind_check '
        || replace(replace(def, '''conflict''::text, ', ''), ' NOT VALID', '') || ' NOT VALID';
END $$;
-- +goose StatementEnd
DROP INDEX machines_discovered_segment;
ALTER TABLE machines DROP COLUMN segment;
DROP TABLE dhcp_declined;
