CREATE TABLE payments (
    id                      UUID PRIMARY KEY,
    debtor_account          TEXT NOT NULL,
    creditor_name           TEXT NOT NULL,
    creditor_sort_code      CHAR(6) NOT NULL,
    creditor_account_number CHAR(8) NOT NULL,
    amount                  BIGINT NOT NULL CHECK (amount > 0),
    currency                CHAR(3) NOT NULL,
    reference               TEXT NOT NULL,
    status                  TEXT NOT NULL CHECK (status IN ('reserved', 'submitted', 'completed', 'failed')),
    hold                    TEXT NOT NULL,
    scheme_id               TEXT,
    failure_reason          TEXT,
    failure_description     TEXT,
    attempts                INT NOT NULL DEFAULT 0,
    next_attempt_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error              TEXT,
    trace_id                TEXT NOT NULL,
    created_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at              TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX payments_due ON payments (next_attempt_at) WHERE status = 'reserved';

CREATE TABLE inbound_payments (
    scheme_id  TEXT PRIMARY KEY,
    status     TEXT NOT NULL CHECK (status IN ('credited', 'returned')),
    account    TEXT,
    amount     BIGINT NOT NULL,
    currency   CHAR(3) NOT NULL,
    details    JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
