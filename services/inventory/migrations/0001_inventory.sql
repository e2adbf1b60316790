-- Portable SQL: runs on SQLite and PostgreSQL alike (TEXT, BIGINT only).

-- One row per SKU. `available` can be reserved; `reserved` is held by open
-- reservations. Both only change through conditional updates that keep them >= 0.
CREATE TABLE IF NOT EXISTS items (
    sku                TEXT   NOT NULL PRIMARY KEY,
    available          BIGINT NOT NULL CHECK (available >= 0),
    reserved           BIGINT NOT NULL CHECK (reserved >= 0),
    unit_price_cents   BIGINT NOT NULL,
    updated_at_unix_ms BIGINT NOT NULL
);

-- state: RESERVED, RELEASED or COMMITTED.
CREATE TABLE IF NOT EXISTS reservations (
    reservation_id     TEXT   NOT NULL PRIMARY KEY,
    state              TEXT   NOT NULL,
    total_cents        BIGINT NOT NULL,
    created_at_unix_ms BIGINT NOT NULL,
    updated_at_unix_ms BIGINT NOT NULL
);

-- The lines of a reservation, with the unit price captured when it was made.
CREATE TABLE IF NOT EXISTS reservation_lines (
    reservation_id   TEXT   NOT NULL REFERENCES reservations (reservation_id),
    line_no          BIGINT NOT NULL,
    sku              TEXT   NOT NULL,
    quantity         BIGINT NOT NULL,
    unit_price_cents BIGINT NOT NULL,
    PRIMARY KEY (reservation_id, line_no)
);
