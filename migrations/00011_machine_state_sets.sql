-- The last set of machine states the daemon used to name in Go: the states in which a member counts as ready for
-- the members of later join waves (a network install waits until every member of the earlier waves is in one).
-- With kind (stable, in_progress, failed) and failed_state, every set the daemon decides by is in this table;
-- internal/store reads them at start (store.States), and a state Go does not name fails its tests.

-- +goose Up
ALTER TABLE machine_states ADD COLUMN counts_as_ready boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN machine_states.counts_as_ready IS
    'a member whose machine is in this state counts as ready for the join order: the members of later join waves may install';
-- A rebuild drains and switches a node that had joined; a failed rebuild leaves a node that had joined.
UPDATE machine_states SET counts_as_ready = true WHERE state IN ('ready', 'rebuilding', 'rebuild_failed');

-- +goose Down
ALTER TABLE machine_states DROP COLUMN counts_as_ready;
