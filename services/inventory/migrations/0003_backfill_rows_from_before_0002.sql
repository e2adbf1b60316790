-- Rows made before 0002 got its column defaults, which say the wrong thing:
--
-- expires_at_unix_ms = 0 was read as "never expires", so a reservation leaked
-- before the upgrade held its stock forever. It now expires as if it had had
-- the default TTL (15 minutes) from its creation: a leak from long ago is
-- released by the next sweep. Every reservation made since carries its expiry.
UPDATE reservations SET expires_at_unix_ms = created_at_unix_ms + 900000
WHERE expires_at_unix_ms = 0;

-- items.committed = 0 left the units of sales made before 0002 uncounted, so
-- restocking such a sale (cancelling its order) failed after the refund.
-- Sold units are what COMMITTED reservations hold: count them. (For rows made
-- since 0002 this is the value already there.)
UPDATE items SET committed = (
    SELECT COALESCE(SUM(l.quantity), 0)
    FROM reservation_lines l
    JOIN reservations r ON r.reservation_id = l.reservation_id
    WHERE l.sku = items.sku AND r.state = 'COMMITTED'
);
