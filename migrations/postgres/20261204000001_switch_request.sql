-- A pending `reshard switch` in a column of its own (src/catalog/requests.rs): in `request`, a
-- later `pause`, `complete`, `rollback` or `cancel` overwrote it, and the job, once resumed,
-- waited for a switch the operator had already given. "switch" for every move, or "switch" and
-- the ids of the moves it lets flip.
ALTER TABLE jobs ADD COLUMN switch_request TEXT;
UPDATE jobs SET switch_request = request, request = NULL
 WHERE request = 'switch' OR request LIKE 'switch %';
