-- Why the process running a job is holding it back now (src/throttle.rs), for example
-- "rate cap 2,000 rows/s"; NULL when nothing is. Written at each start and end, with an event.
ALTER TABLE jobs ADD COLUMN throttled TEXT;
