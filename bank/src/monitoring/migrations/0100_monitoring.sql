-- Every transaction screened, once (keyed by the event that reported it).
CREATE TABLE transactions (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    account      TEXT NOT NULL,
    payee        TEXT,
    amount       BIGINT NOT NULL,
    currency     CHAR(3) NOT NULL,
    event_id     UUID NOT NULL,
    trace_id     TEXT NOT NULL,
    score        INT,
    -- When the transaction happened (its event's time): velocity counts by this.
    happened_at  TIMESTAMPTZ NOT NULL,
    screened_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX transactions_account ON transactions (account, happened_at);

CREATE TABLE alerts (
    id             UUID PRIMARY KEY,
    transaction_id TEXT NOT NULL REFERENCES transactions (id),
    account        TEXT NOT NULL,
    reasons        JSONB NOT NULL,
    score          INT,
    status         TEXT NOT NULL CHECK (status IN ('open', 'closed')),
    outcome        TEXT,
    raised_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    closed_at      TIMESTAMPTZ
);
