-- Prices carry the seller's currency; sold units are counted so stock is
-- conserved (available + reserved + committed = every unit ever added);
-- reservations expire; a committed reservation can be restocked.
ALTER TABLE items ADD COLUMN committed BIGINT NOT NULL DEFAULT 0;
ALTER TABLE items ADD COLUMN currency TEXT NOT NULL DEFAULT 'EUR';
-- state may now also be RESTOCKED.
ALTER TABLE reservations ADD COLUMN currency TEXT NOT NULL DEFAULT 'EUR';
-- When a RESERVED reservation stops holding stock; 0 = never (older rows).
ALTER TABLE reservations ADD COLUMN expires_at_unix_ms BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS reservations_expiry ON reservations (state, expires_at_unix_ms);
