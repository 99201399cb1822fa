-- The kit's tables: every service has them.
CREATE TABLE events (
    seq          BIGSERIAL PRIMARY KEY,
    id           UUID NOT NULL UNIQUE,
    type         TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    occurred_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    trace_id     TEXT NOT NULL,
    data         JSONB NOT NULL
);
CREATE INDEX events_aggregate ON events (aggregate_id, seq);

CREATE TABLE idempotency_keys (
    scope      TEXT NOT NULL,
    key        TEXT NOT NULL,
    request    TEXT NOT NULL,
    status     SMALLINT,
    body       JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
