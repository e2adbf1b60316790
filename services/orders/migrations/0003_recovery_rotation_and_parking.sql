-- Recovery rotates its work (see src/saga/recovery.rs):
--   next_attempt_unix_ms: a run that could not finish the order leaves it
--   alone until then (a backoff per order that doubles with failed_runs), so
--   orders that keep failing go to the back of the queue instead of taking
--   every round.
--   failed_runs: runs in a row that ended without the order moving on; any
--   step the saga records sets it back to 0.
ALTER TABLE orders ADD COLUMN next_attempt_unix_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN failed_runs BIGINT NOT NULL DEFAULT 0;
-- Orders that need a person: the saga found upstream state that contradicts
-- it. parked_reason (a short kind, '' when not parked) and parked_detail say
-- why; recovery skips parked orders until an operator retries or resolves
-- them (RetryParkedOrder, ResolveParkedOrder).
ALTER TABLE orders ADD COLUMN parked_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE orders ADD COLUMN parked_detail TEXT NOT NULL DEFAULT '';
ALTER TABLE orders ADD COLUMN parked_at_unix_ms BIGINT NOT NULL DEFAULT 0;
-- The recovery loop's scan: due, unparked, unfinished orders.
DROP INDEX IF EXISTS orders_unfinished;
CREATE INDEX IF NOT EXISTS orders_due ON orders (status, parked_reason, next_attempt_unix_ms);
-- The parked orders, oldest first (the metric, ListParkedOrders).
CREATE INDEX IF NOT EXISTS orders_parked ON orders (parked_reason, parked_at_unix_ms, order_id);
