-- The three configuration layers of nix8s (nodes, clusters with members, provisioning), kept in the same shape as
-- the YAML config: every object is stored whole as JSONB, with the fields the daemon queries lifted out as
-- generated columns.

-- +goose Up
-- One row. `top` is the config's top level with each section present replaced by {} (so that an export gives back
-- exactly the keys an import had); `version` grows with every change anywhere in the inventory.
CREATE TABLE inventory_meta (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    top        jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(top) = 'object'),
    version    bigint NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO inventory_meta DEFAULT VALUES;

CREATE TABLE nodes (
    name       text PRIMARY KEY,
    spec       jsonb NOT NULL CHECK (jsonb_typeof(spec) = 'object'),
    mac        text GENERATED ALWAYS AS (lower(spec #>> '{network,mac}')) STORED,
    version    bigint NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- spec is the cluster without the contents of `members` (kept as {} when the key was given).
CREATE TABLE clusters (
    name       text PRIMARY KEY,
    spec       jsonb NOT NULL CHECK (jsonb_typeof(spec) = 'object'),
    version    bigint NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE members (
    cluster    text NOT NULL REFERENCES clusters (name) ON DELETE CASCADE,
    name       text NOT NULL,
    spec       jsonb NOT NULL CHECK (jsonb_typeof(spec) = 'object'),
    node       text GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(spec -> 'node') = 'string' THEN spec ->> 'node' END) STORED,
    role       text GENERATED ALWAYS AS (spec ->> 'role') STORED,
    ip         text GENERATED ALWAYS AS (spec ->> 'ip') STORED,
    mac        text GENERATED ALWAYS AS (lower(spec #>> '{network,mac}')) STORED,
    version    bigint NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster, name)
);
CREATE INDEX members_node ON members (node);

-- One row per provisioner (nixos-anywhere, pxe, lima, ...).
CREATE TABLE provisioning (
    name       text PRIMARY KEY,
    spec       jsonb NOT NULL,
    version    bigint NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE provisioning;
DROP TABLE members;
DROP TABLE clusters;
DROP TABLE nodes;
DROP TABLE inventory_meta;
