-- An order's first event is leased to the relay of the instance that
-- recorded it in the row itself (src/store/events.rs): no other relay can
-- hold that order yet, so the committing unit writes no outbox_leases row.
-- Any other lease is an outbox_leases row; a relay holds an order while
-- either is live.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN claimed_until_unix_ms BIGINT NOT NULL DEFAULT 0;
