-- Payments: one row per idempotency key. Portable SQL (SQLite and PostgreSQL).
CREATE TABLE IF NOT EXISTS payments (
    payment_id         TEXT   NOT NULL PRIMARY KEY,
    idempotency_key    TEXT   NOT NULL,
    user_id            TEXT   NOT NULL,
    amount_cents       BIGINT NOT NULL,
    currency           TEXT   NOT NULL,
    -- CAPTURED, DECLINED or REFUNDED.
    status             TEXT   NOT NULL,
    decline_reason     TEXT   NOT NULL,
    created_at_unix_ms BIGINT NOT NULL,
    updated_at_unix_ms BIGINT NOT NULL
);

-- The idempotency guarantee: a key is charged at most once, whichever
-- instance (sharing this database) receives the request.
CREATE UNIQUE INDEX IF NOT EXISTS payments_idempotency_key ON payments (idempotency_key);
