-- How far each source's event log has been published to Kafka.
CREATE TABLE positions (
    source     TEXT PRIMARY KEY,
    cursor     BIGINT NOT NULL,
    published  BIGINT NOT NULL DEFAULT 0,
    head       BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
