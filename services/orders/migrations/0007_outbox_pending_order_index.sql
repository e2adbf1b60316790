-- The (order_id, sequence) index holds pending rows only (issue 21: the
-- outbox's cost on PlaceOrder). Order ids are random, so in an index of every
-- event kept (published rows stay for a day) each new event landed on a
-- random page of a growing index: one more page for every commit to write to
-- the WAL and for the checkpoint to copy. Every lookup by order is of pending
-- rows (the relay's reads, leases and marks, the claim check, the unit that
-- records an event), so an index of the pending rows alone serves them all,
-- stays as small as the backlog, and keeps its pages hot. Uniqueness of an
-- order's event numbers comes from `orders.event_sequence` (each event takes
-- the next number in its state change's write); the index still refuses two
-- pending rows with the same number.
DROP INDEX outbox_order_sequence;
CREATE UNIQUE INDEX outbox_pending_order ON outbox (order_id, sequence) WHERE published_at_unix_ms = 0;
