-- The whole live routing in one read, for applications in any language (docs/catalog.md):
-- the routing version and map, and the unfinished job (at most one) with its from/to maps and
-- the (source, destination) pairs of its flipped moves. A key's live owner: its `to_map` owner
-- when (from_map owner, to_map owner) is in `flipped`, else its `from_map` owner; with no job,
-- its `map_json` owner.
CREATE VIEW live_routing AS
SELECT r.version AS version,
       r.map_json AS map_json,
       j.id AS job_id,
       j.state AS job_state,
       (j.plan_json::json -> 'from')::text AS from_map,
       (j.plan_json::json -> 'to')::text AS to_map,
       (SELECT coalesce(json_agg(json_build_array(m.source, m.destination)
                                 ORDER BY m.move_id), '[]'::json)::text
          FROM moves m WHERE m.job_id = j.id AND m.flipped = 1) AS flipped
FROM routing r
LEFT JOIN jobs j ON j.state NOT IN ('completed', 'cancelled')
WHERE r.id = 1;
