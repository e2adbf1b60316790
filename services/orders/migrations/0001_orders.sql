-- Orders and their lines. Portable SQL (SQLite and PostgreSQL).
CREATE TABLE IF NOT EXISTS orders (
    order_id            TEXT   NOT NULL PRIMARY KEY,
    -- The caller's idempotency key: one order per request_id.
    request_id          TEXT   NOT NULL,
    user_id             TEXT   NOT NULL,
    currency            TEXT   NOT NULL,
    -- PENDING, CONFIRMED, REJECTED or CANCELLED.
    status              TEXT   NOT NULL,
    total_cents         BIGINT NOT NULL,
    payment_id          TEXT   NOT NULL,
    rejection_reason    TEXT   NOT NULL,
    created_at_unix_ms  BIGINT NOT NULL,
    updated_at_unix_ms  BIGINT NOT NULL,
    -- Saga bookkeeping (see src/saga.rs): which inventory reservation the
    -- order uses, whether a charge may have been sent (1) or surely not (0),
    -- and which request runs the saga until when.
    reservation_attempt BIGINT NOT NULL,
    charge_sent         BIGINT NOT NULL,
    lease_owner         TEXT   NOT NULL,
    lease_until_unix_ms BIGINT NOT NULL
);

CREATE UNIQUE INDEX IF NOT EXISTS orders_request_id ON orders (request_id);

-- ListOrders: a user's orders, newest first (keyset paging).
CREATE INDEX IF NOT EXISTS orders_user_newest ON orders (user_id, created_at_unix_ms, order_id);

CREATE TABLE IF NOT EXISTS order_lines (
    order_id         TEXT   NOT NULL REFERENCES orders (order_id),
    line_no          BIGINT NOT NULL,
    sku              TEXT   NOT NULL,
    quantity         BIGINT NOT NULL,
    -- 0 until inventory has priced the line.
    unit_price_cents BIGINT NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
