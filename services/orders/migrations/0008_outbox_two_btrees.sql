-- The outbox holds pending events only (ADR 0020, "The outbox holds pending
-- events only"): a row is written in the commit that records its event and
-- deleted in the relay's commit once the broker confirmed it. Every b-tree a
-- row is in is a page each of those commits writes to the WAL and syncs, so
-- the table keeps two (ADR 0020, "Two b-trees per event"):
--   the rows, and `outbox_pending_order`, the (order_id, sequence) index of
--   pending rows that every lookup goes through (the relay's reads, leases,
--   removals and failed attempts, the claim check, the backlog).
-- Gone:
--   the event_id primary key and its index: ids are UUIDv7s the recording
--   unit makes, consumers deduplicate on them, and no statement looks a row
--   up by id alone;
--   `outbox_pending` (published_at, created_at): the relay's read takes every
--   pending row and sorts them by order, through the partial index as well.
-- Rows an earlier version marked published (it kept them a day) are copied and
-- stay until the prune removes them; `outbox_published` finds them for it and
-- costs a pending row nothing (a partial index holds the rows its WHERE admits).
CREATE TABLE outbox_rebuilt (
    event_id              TEXT   NOT NULL,
    order_id              TEXT   NOT NULL,
    sequence              BIGINT NOT NULL,
    topic                 TEXT   NOT NULL,
    event_type            TEXT   NOT NULL,
    payload_hex           TEXT   NOT NULL,
    traceparent           TEXT   NOT NULL,
    tracestate            TEXT   NOT NULL,
    created_at_unix_ms    BIGINT NOT NULL,
    published_at_unix_ms  BIGINT NOT NULL,
    attempts              BIGINT NOT NULL,
    last_error            TEXT   NOT NULL,
    claimed_by            TEXT   NOT NULL DEFAULT '',
    claimed_until_unix_ms BIGINT NOT NULL DEFAULT 0
);

INSERT INTO outbox_rebuilt (event_id, order_id, sequence, topic, event_type, payload_hex, traceparent, tracestate, created_at_unix_ms, published_at_unix_ms, attempts, last_error, claimed_by, claimed_until_unix_ms)
SELECT event_id, order_id, sequence, topic, event_type, payload_hex, traceparent, tracestate, created_at_unix_ms, published_at_unix_ms, attempts, last_error, claimed_by, claimed_until_unix_ms
FROM outbox ORDER BY created_at_unix_ms, order_id, sequence;

DROP TABLE outbox;
ALTER TABLE outbox_rebuilt RENAME TO outbox;

CREATE UNIQUE INDEX outbox_pending_order ON outbox (order_id, sequence) WHERE published_at_unix_ms = 0;
CREATE INDEX outbox_published ON outbox (published_at_unix_ms) WHERE published_at_unix_ms > 0;
