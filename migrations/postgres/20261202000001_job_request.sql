-- An operator's pending request on a job (`reshard pause`), read by the process running it
-- within a second (src/catalog/requests.rs); NULL when there is none.
ALTER TABLE jobs ADD COLUMN request TEXT;
