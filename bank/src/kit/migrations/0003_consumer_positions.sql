-- Where a consumer is in each partition it reads: the next offset to act on.
-- Kept in the service's own database, next to what acting on an event wrote,
-- so a consumer that crashed resumes exactly here, without a consumer group.
CREATE TABLE consumer_positions (
    topic       TEXT    NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset BIGINT  NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
