-- Verification (issue 5). Keep in step with the other dialect and docs/verification.md.

-- One chunk of one verification pass of a move's table: the primary-key range
-- (after_json, last_json] (NULL = open end), rows and sha1 on each side, and when they differ
-- the narrowed differences (JSON, capped). Kept after the pass so that a later verification
-- restricted to touched keys recomputes only their chunks.
CREATE TABLE verify_chunks (
    job_id      TEXT    NOT NULL,
    move_id     TEXT    NOT NULL,
    table_name  TEXT    NOT NULL,
    chunk_no    BIGINT  NOT NULL,
    after_json  TEXT,
    last_json   TEXT,
    src_rows    BIGINT  NOT NULL,
    dst_rows    BIGINT  NOT NULL,
    src_sha1    TEXT    NOT NULL,
    dst_sha1    TEXT    NOT NULL,
    ok          BIGINT  NOT NULL,
    diff_json   TEXT,
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (job_id, move_id, table_name, chunk_no)
);

-- Position of the current pass: resumes after the last recorded chunk. chunks_computed only
-- grows (across passes and resumes), so a resumed pass is visibly not a restart.
CREATE TABLE verify_progress (
    job_id          TEXT    NOT NULL,
    move_id         TEXT    NOT NULL,
    table_name      TEXT    NOT NULL,
    pass            BIGINT  NOT NULL,
    cursor_json     TEXT,
    next_chunk      BIGINT  NOT NULL,
    done            BIGINT  NOT NULL,
    chunk_rows      BIGINT  NOT NULL,
    chunks_computed BIGINT  NOT NULL,
    started_at      TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL,
    PRIMARY KEY (job_id, move_id, table_name)
);

-- Every verification report (per move), newest last.
CREATE TABLE verify_reports (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT    NOT NULL,
    move_id     TEXT,
    at          TEXT    NOT NULL,
    ok          BIGINT  NOT NULL,
    report_json TEXT    NOT NULL
);
CREATE INDEX verify_reports_job ON verify_reports (job_id, id);

-- Rows per table across all shards of the plan's from map, counted when the job was created:
-- what `verify --audit` expects after completion (for a job without concurrent writes).
CREATE TABLE job_row_counts (
    job_id     TEXT    NOT NULL,
    table_name TEXT    NOT NULL,
    row_count  BIGINT  NOT NULL,
    PRIMARY KEY (job_id, table_name)
);
