-- The core's plan of the inventory, kept per inventory version so that the plan of one version is evaluated once
-- for every daemon sharing this database: the write that made the version stores it, any daemon that finds it
-- missing (an older daemon wrote, or the core changed) evaluates it once and stores it. A plan is derived data,
-- never a source: losing a row only costs an evaluation. `core` names the core that made it (a hash of lib/),
-- so a daemon with another core never serves a plan it would not make.

-- +goose Up
CREATE TABLE inventory_plans (
    version    bigint NOT NULL,
    core       text NOT NULL CHECK (core <> ''),
    plan       json NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (version, core)
);

-- +goose Down
DROP TABLE inventory_plans;
