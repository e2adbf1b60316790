-- The transactional outbox (src/outbox/): events written in the same
-- transaction as the state change that causes them, published by the relay.
--   orders.event_sequence: how many events the order has had; each new one
--   takes the next number (consumers apply one order's events in it).
ALTER TABLE orders ADD COLUMN event_sequence BIGINT NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS outbox (
    -- The CloudEvents id: a redelivery or a second publish carries it again.
    event_id             TEXT   NOT NULL PRIMARY KEY,
    order_id             TEXT   NOT NULL,
    sequence             BIGINT NOT NULL,
    topic                TEXT   NOT NULL,
    event_type           TEXT   NOT NULL,
    -- The protobuf body, hex (portable between SQLite and PostgreSQL).
    payload_hex          TEXT   NOT NULL,
    -- W3C trace context of the operation that caused the event ('' if none).
    traceparent          TEXT   NOT NULL,
    tracestate           TEXT   NOT NULL,
    created_at_unix_ms   BIGINT NOT NULL,
    -- 0 while pending; when the broker confirmed it, after.
    published_at_unix_ms BIGINT NOT NULL,
    attempts             BIGINT NOT NULL,
    last_error           TEXT   NOT NULL
);

CREATE UNIQUE INDEX IF NOT EXISTS outbox_order_sequence ON outbox (order_id, sequence);
-- The relay's scan: pending rows, oldest first.
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (published_at_unix_ms, created_at_unix_ms);

-- Which relay publishes an order's events until when: one at a time per
-- order, so an order's events leave in sequence and never twice at once.
CREATE TABLE IF NOT EXISTS outbox_leases (
    order_id      TEXT   NOT NULL PRIMARY KEY,
    owner         TEXT   NOT NULL,
    until_unix_ms BIGINT NOT NULL
);
