-- Per-move tasks that `reshard worker` processes lease (src/catalog/tasks.rs): one row per
-- (job, task). A task is free when owner is NULL, its lease has expired, or its holder is a
-- dead process on the same host; `state` is 'ready' until the work is done, then 'done'.
-- The job's own lease (jobs.lease_owner) covers the work one process must do alone: setup,
-- catch-up and cutover, reverse sync, complete, rollback and cancel.
CREATE TABLE tasks (
    job_id TEXT NOT NULL,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    move_id TEXT,
    state TEXT NOT NULL,
    owner TEXT,
    lease_expires_ms BIGINT,
    attempts BIGINT NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (job_id, id)
);
