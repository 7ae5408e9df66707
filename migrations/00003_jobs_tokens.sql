-- Jobs (operations run by a daemon: install, rebuild, kubeconfig ... added by later migrations as kinds) and the
-- operators' API tokens.

-- +goose Up
CREATE TABLE jobs (
    id           bigserial PRIMARY KEY,
    kind         text NOT NULL,
    status       text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    cluster      text,
    member       text,
    mac          macaddr,
    params       jsonb NOT NULL DEFAULT '{}'::jsonb,
    log          text NOT NULL DEFAULT '',
    error        text,
    -- the daemon running it (hostname/pid); with heartbeat_at, lets another daemon take over a dead one's job
    worker       text,
    heartbeat_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz,
    CHECK ((status IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL))
);
CREATE INDEX jobs_queued ON jobs (id) WHERE status = 'queued';
CREATE INDEX jobs_status ON jobs (status, id);

-- Only sha256(token) is stored; the token is shown once when created.
CREATE TABLE api_tokens (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL DEFAULT '',
    token_sha256 bytea NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    scope        text NOT NULL CHECK (scope IN ('admin', 'read')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- +goose Down
DROP TABLE api_tokens;
DROP TABLE jobs;
