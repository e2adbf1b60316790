-- Portable SQL: runs on SQLite and PostgreSQL alike (TEXT, BIGINT only).
CREATE TABLE IF NOT EXISTS users (
    user_id            TEXT   NOT NULL PRIMARY KEY,
    email              TEXT   NOT NULL,
    display_name       TEXT   NOT NULL,
    created_at_unix_ms BIGINT NOT NULL
);

-- One account per email, also across instances sharing the database.
CREATE UNIQUE INDEX IF NOT EXISTS users_email ON users (email);

-- ListUsers pages in creation order with a keyset on (created_at_unix_ms, user_id).
CREATE INDEX IF NOT EXISTS users_created ON users (created_at_unix_ms, user_id);
