-- The saga's persisted step and a fencing token (see src/saga/mod.rs):
--   step: RESERVE, CHARGE, COMMIT, UNDO (status PENDING), CANCEL (status
--   CANCELLING) or DONE (a final status). Each is written BEFORE the remote
--   calls it allows, so it always says what may have happened.
--   lease_version: bumped by every lease acquisition; every saga write is
--   conditional on it, so a run that lost its lease can no longer write.
ALTER TABLE orders ADD COLUMN step TEXT NOT NULL DEFAULT 'RESERVE';
ALTER TABLE orders ADD COLUMN lease_version BIGINT NOT NULL DEFAULT 0;
-- Superseded by step (CHARGE or later: a charge may exist).
UPDATE orders SET step = 'CHARGE' WHERE status = 'PENDING' AND charge_sent = 1 AND payment_id = '';
UPDATE orders SET step = 'COMMIT' WHERE status = 'PENDING' AND payment_id <> '';
UPDATE orders SET step = 'DONE' WHERE status <> 'PENDING';
ALTER TABLE orders DROP COLUMN charge_sent;
-- The recovery loop's scan: unfinished orders, oldest lease first.
CREATE INDEX IF NOT EXISTS orders_unfinished ON orders (status, lease_until_unix_ms);
