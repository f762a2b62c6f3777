-- reshard catalog, version 2: online migration (issue 4). Keep in step with the other dialect
-- and docs/catalog.md / docs/online.md.

-- What the job installed on each shard (capture logs and triggers, guards), so that resume,
-- complete and cancel know what to finish or remove. state: installing | installed | removed.
CREATE TABLE installs (
    job_id     TEXT   NOT NULL,
    shard      TEXT   NOT NULL,
    state      TEXT   NOT NULL,
    updated_at TEXT   NOT NULL,
    PRIMARY KEY (job_id, shard)
);

-- Catch-up and reverse-sync progress per (shard, table) change log. Observability only:
-- correctness comes from replay being idempotent and from deleting entries by their seq.
CREATE TABLE capture_progress (
    job_id      TEXT   NOT NULL,
    shard       TEXT   NOT NULL,
    table_name  TEXT   NOT NULL,
    applied_seq BIGINT NOT NULL DEFAULT 0,
    entries     BIGINT NOT NULL DEFAULT 0,
    forward     BIGINT NOT NULL DEFAULT 0,
    reverse     BIGINT NOT NULL DEFAULT 0,
    updated_at  TEXT   NOT NULL,
    PRIMARY KEY (job_id, shard, table_name)
);

-- `complete`: deleting moved rows from their old owners in batches, resumable.
CREATE TABLE cleanup_cursors (
    job_id       TEXT   NOT NULL,
    move_id      TEXT   NOT NULL,
    table_name   TEXT   NOT NULL,
    cursor_json  TEXT,
    done         BIGINT NOT NULL DEFAULT 0,
    rows_deleted BIGINT NOT NULL DEFAULT 0,
    updated_at   TEXT   NOT NULL,
    PRIMARY KEY (job_id, move_id, table_name)
);

-- Fence attempts of a move (successful or not); `moves.fence_ms` is the last successful one.
ALTER TABLE moves ADD COLUMN fence_attempts BIGINT NOT NULL DEFAULT 0;
