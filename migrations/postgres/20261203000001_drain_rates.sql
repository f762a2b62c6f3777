-- The catch-up rate last measured on each source shard of a job, in change-log entries
-- applied per second, by the process running it (src/cutover.rs). `switch --dry-run` divides
-- what waits in a shard's logs by it to predict the fenced drain.
CREATE TABLE drain_rates (
    job_id          TEXT    NOT NULL,
    shard           TEXT    NOT NULL,
    entries_per_sec BIGINT  NOT NULL,
    measured_at_ms  BIGINT  NOT NULL,
    PRIMARY KEY (job_id, shard)
);
