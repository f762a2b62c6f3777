-- reshard catalog, version 1 (SQLite). Keep in step with ../postgres/ and docs/catalog.md.
-- Times are UTC RFC 3339 text; lease expiry is epoch milliseconds for cheap comparison.

-- The active routing: exactly one row. Issue 4's flip bumps `version` and rewrites `map_json`
-- in the same transaction as the moves' `flipped` flags.
CREATE TABLE routing (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    version     BIGINT  NOT NULL,
    fingerprint TEXT    NOT NULL,
    map_json    TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
);

-- Every routing version ever active, for audit and rollback.
CREATE TABLE routing_history (
    version     BIGINT  PRIMARY KEY,
    fingerprint TEXT    NOT NULL,
    map_json    TEXT    NOT NULL,
    job_id      TEXT,
    created_at  TEXT    NOT NULL
);

CREATE TABLE jobs (
    id               TEXT   PRIMARY KEY,
    state            TEXT   NOT NULL,
    plan_fingerprint TEXT   NOT NULL,
    plan_json        TEXT   NOT NULL,
    options_json     TEXT   NOT NULL,
    routing_version  BIGINT NOT NULL,
    last_error       TEXT,
    lease_owner      TEXT,
    lease_expires_ms BIGINT,
    created_at       TEXT   NOT NULL,
    updated_at       TEXT   NOT NULL,
    finished_at      TEXT
);

CREATE TABLE moves (
    job_id        TEXT    NOT NULL REFERENCES jobs(id),
    move_id       TEXT    NOT NULL,
    source        TEXT    NOT NULL,
    destination   TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    rows_total    BIGINT  NOT NULL DEFAULT 0,
    bytes_total   BIGINT  NOT NULL DEFAULT 0,
    rows_copied   BIGINT  NOT NULL DEFAULT 0,
    bytes_copied  BIGINT  NOT NULL DEFAULT 0,
    copy_ms       BIGINT  NOT NULL DEFAULT 0,
    flipped       BIGINT  NOT NULL DEFAULT 0,
    fence_ms      BIGINT,
    last_error    TEXT,
    started_at    TEXT,
    updated_at    TEXT    NOT NULL,
    finished_at   TEXT,
    PRIMARY KEY (job_id, move_id)
);

-- Copy position of one move in one table: the primary key of the last row read (JSON).
CREATE TABLE cursors (
    job_id      TEXT    NOT NULL,
    move_id     TEXT    NOT NULL,
    table_name  TEXT    NOT NULL,
    cursor_json TEXT,
    done        BIGINT  NOT NULL DEFAULT 0,
    rows_read   BIGINT  NOT NULL DEFAULT 0,
    rows_copied BIGINT  NOT NULL DEFAULT 0,
    batches     BIGINT  NOT NULL DEFAULT 0,
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (job_id, move_id, table_name)
);

-- Append-only log of every state change.
CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  TEXT,
    move_id TEXT,
    at      TEXT NOT NULL,
    kind    TEXT NOT NULL,
    detail  TEXT NOT NULL
);
CREATE INDEX events_job ON events (job_id, id);
