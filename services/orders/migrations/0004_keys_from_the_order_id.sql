-- Where an order's idempotency keys (payments charge key, inventory
-- reservation ids) come from: 'order_id' (the order's own random id) for
-- orders recorded from now on, so that a request resent after this database
-- was lost cannot collide with an older order's payment or reservation;
-- 'request_id' for the orders recorded before, whose keys stay what they were
-- (a charge in flight keeps its key).
ALTER TABLE orders ADD COLUMN saga_keys TEXT NOT NULL DEFAULT 'request_id';
