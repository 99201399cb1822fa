CREATE TABLE customers (
    id         UUID PRIMARY KEY,
    name       TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email      TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE SEQUENCE account_numbers START 10000001 MAXVALUE 99999999;

CREATE TABLE accounts (
    id             UUID PRIMARY KEY,
    customer_id    UUID NOT NULL REFERENCES customers (id),
    sort_code      CHAR(6) NOT NULL,
    account_number CHAR(8) NOT NULL,
    currency       CHAR(3) NOT NULL,
    -- Ledger balance and the part of it reserved by holds; available = balance - held.
    balance        BIGINT NOT NULL DEFAULT 0,
    held           BIGINT NOT NULL DEFAULT 0,
    opened_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (sort_code, account_number),
    CHECK (held >= 0),
    CHECK (balance >= held)
);
CREATE INDEX accounts_customer ON accounts (customer_id);

CREATE TABLE holds (
    id         UUID PRIMARY KEY,
    account_id UUID NOT NULL REFERENCES accounts (id),
    amount     BIGINT NOT NULL CHECK (amount > 0),
    status     TEXT NOT NULL CHECK (status IN ('held', 'captured', 'released')),
    reference  TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX holds_account ON holds (account_id);

-- Postings: every change of an account's ledger balance, once.
CREATE TABLE transactions (
    seq           BIGSERIAL PRIMARY KEY,
    id            UUID NOT NULL UNIQUE,
    account_id    UUID NOT NULL REFERENCES accounts (id),
    kind          TEXT NOT NULL CHECK (kind IN ('credit', 'debit')),
    amount        BIGINT NOT NULL CHECK (amount > 0),
    balance_after BIGINT NOT NULL,
    reference     TEXT NOT NULL,
    hold_id       UUID UNIQUE REFERENCES holds (id),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX transactions_account ON transactions (account_id, seq);
