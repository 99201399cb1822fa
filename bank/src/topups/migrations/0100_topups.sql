CREATE TABLE topups (
    id              UUID PRIMARY KEY,
    account         TEXT NOT NULL,
    card_token      TEXT NOT NULL,
    amount          BIGINT NOT NULL CHECK (amount > 0),
    currency        CHAR(3) NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    acquirer_id     TEXT,
    decline_reason  TEXT,
    attempts        INT NOT NULL DEFAULT 0,
    charged         BOOLEAN NOT NULL DEFAULT false,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error      TEXT,
    trace_id        TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX topups_due ON topups (next_attempt_at) WHERE status = 'pending' AND NOT charged;
