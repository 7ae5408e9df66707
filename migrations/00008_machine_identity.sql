-- Who a machine is beyond its MAC (internal/pxe/storeboot, docs/pxe.md "Identity and conflicts"): the hardware
-- identity its discovery image or its installer's first report gave (DMI system UUID and serial, disk serials,
-- NIC MACs), and the client address of each installer conversation of an install generation, so that a second
-- client claiming the same MAC locks the machine instead of being picked as the winner.

-- +goose Up
CREATE TABLE machine_identities (
    mac         macaddr PRIMARY KEY REFERENCES machines (mac) ON DELETE CASCADE,
    -- {"systemUUID", "systemSerial", "diskSerials": [...], "nicMACs": [...]}, lists sorted (pxe.Identity)
    identity    jsonb NOT NULL CHECK (jsonb_typeof(identity) = 'object'),
    -- "discovery", or "install generation N" when the first install report gave it
    source      text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- The first client address of each kind of installer conversation (script: iPXE script requests; progress:
-- authenticated progress reports) of one install generation; a later one from another address is a conflict.
CREATE TABLE install_clients (
    mac        macaddr NOT NULL REFERENCES machines (mac) ON DELETE CASCADE,
    generation bigint NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('script', 'progress')),
    ip         inet NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (mac, generation, kind)
);

-- +goose Down
DROP TABLE install_clients;
DROP TABLE machine_identities;
