-- Shipments, and the consumer's bookkeeping. Portable SQL (SQLite and PostgreSQL).
CREATE TABLE IF NOT EXISTS shipments (
    -- shp_ + uuid5(order_id): one shipment per order, whatever is redelivered.
    shipment_id         TEXT   NOT NULL PRIMARY KEY,
    order_id            TEXT   NOT NULL,
    user_id             TEXT   NOT NULL,
    -- PENDING, SHIPPED, CANCELLED or RETURN_REQUESTED.
    status              TEXT   NOT NULL,
    tracking_number     TEXT   NOT NULL,
    created_at_unix_ms  BIGINT NOT NULL,
    updated_at_unix_ms  BIGINT NOT NULL,
    shipped_at_unix_ms  BIGINT NOT NULL
);

CREATE UNIQUE INDEX IF NOT EXISTS shipments_order ON shipments (order_id);
-- ListShipments by user: newest first (keyset paging).
CREATE INDEX IF NOT EXISTS shipments_user_newest ON shipments (user_id, created_at_unix_ms, shipment_id);

CREATE TABLE IF NOT EXISTS shipment_lines (
    shipment_id TEXT   NOT NULL REFERENCES shipments (shipment_id),
    line_no     BIGINT NOT NULL,
    sku         TEXT   NOT NULL,
    quantity    BIGINT NOT NULL,
    PRIMARY KEY (shipment_id, line_no)
);

-- Per order, the sequence number of the last event applied: the next one
-- applied must be exactly one more.
CREATE TABLE IF NOT EXISTS order_progress (
    order_id           TEXT   NOT NULL PRIMARY KEY,
    applied_sequence   BIGINT NOT NULL,
    updated_at_unix_ms BIGINT NOT NULL
);

-- The inbox: every event a consumer took, written in the same transaction as
-- its effect, so a redelivery finds it and changes nothing.
--   state APPLIED: its effect is in the tables above (applied_at says when);
--         WAITING: it arrived before an earlier event of its order; applied
--                  (from payload_hex) right after that one, in the same
--                  transaction;
--         SKIPPED: older than what was already applied (a second copy of an
--                  event of the same sequence).
CREATE TABLE IF NOT EXISTS inbox (
    consumer            TEXT   NOT NULL,
    event_id            TEXT   NOT NULL,
    order_id            TEXT   NOT NULL,
    sequence            BIGINT NOT NULL,
    event_type          TEXT   NOT NULL,
    state               TEXT   NOT NULL,
    payload_hex         TEXT   NOT NULL,
    received_at_unix_ms BIGINT NOT NULL,
    applied_at_unix_ms  BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

CREATE INDEX IF NOT EXISTS inbox_waiting ON inbox (consumer, order_id, state, sequence);
