#!/usr/bin/env bash
# The walk of docs/your-own-shards.md, step by step, on two databases of one server standing
# for your two shard servers: bash docs/your-own-shards.sh postgres|mysql [RESHARD_BINARY]
# CI runs it for both (tests/your_own_shards.rs). It creates a role and two databases named
# rs_walk_*, and drops them at the end, whatever happened.
set -euo pipefail
kind=${1:?usage: docs/your-own-shards.sh postgres|mysql [reshard binary]}
reshard=${2:-reshard}
tag=rs_walk_$$
dir=$(mktemp -d)
trap 'cleanup' EXIT

case $kind in
  postgres)
    admin() { psql -qAt -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -d "${2:-postgres}" -c "$1"; }
    as_app() { PGPASSWORD=walk-secret psql -qAt -v ON_ERROR_STOP=1 -h 127.0.0.1 -U "$tag" -d "$2" -c "$1"; }
    url() { echo "postgres://$tag:walk-secret@127.0.0.1:5432/$1"; }
    cleanup() {
      admin "DROP DATABASE IF EXISTS ${tag}_a" || true
      admin "DROP DATABASE IF EXISTS ${tag}_b" || true
      admin "REVOKE SET ON PARAMETER session_replication_role FROM $tag" 2>/dev/null || true
      admin "DROP ROLE IF EXISTS $tag" || true
      rm -rf "$dir"
    }
    # Step 1. The role reshard connects as: it owns the shard's tables (PostgreSQL lets only
    # a table's owner drop a trigger) and may create in the schema (change logs, functions).
    admin "CREATE ROLE $tag LOGIN PASSWORD 'walk-secret'"
    # Optional, PostgreSQL 15+: lets the copy and complete's deletes skip row triggers.
    admin "GRANT SET ON PARAMETER session_replication_role TO $tag"
    for s in a b; do
      admin "CREATE DATABASE ${tag}_$s OWNER $tag"
      admin "ALTER SCHEMA public OWNER TO $tag" "${tag}_$s"
      as_app "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL)" "${tag}_$s"
    done
    as_app "INSERT INTO users SELECT g, 'user' || g || '@example.com' FROM generate_series(1, 10000) g" "${tag}_a"
    count() { as_app "SELECT count(*) FROM users" "${tag}_$1"; }
    unguard() {
      as_app "DROP TRIGGER IF EXISTS _rs_guard_users ON users; DROP FUNCTION IF EXISTS _rs_guard_users(); \
              DROP FUNCTION IF EXISTS reshard_assert_owner(bigint); DROP TABLE IF EXISTS _reshard_fence" "${tag}_$1"
    }
    objects() { as_app "SELECT coalesce(string_agg(name, ' ' ORDER BY name), '') FROM (SELECT relname AS name FROM pg_class WHERE relname LIKE '\_r%' AND relkind = 'r' UNION ALL SELECT tgname FROM pg_trigger WHERE tgname LIKE '\_rs%' UNION ALL SELECT proname FROM pg_proc WHERE proname LIKE 'reshard%' OR proname LIKE '\_rs%') o" "${tag}_$1"; }
    ;;
  mysql)
    admin() { mariadb -uroot -h127.0.0.1 -N -e "$1"; }
    as_app() { mariadb -u"$tag" -pwalk-secret -h127.0.0.1 -N "$2" -e "$1"; }
    url() { echo "mysql://$tag:walk-secret@127.0.0.1:3306/$1"; }
    cleanup() {
      admin "DROP DATABASE IF EXISTS ${tag}_a; DROP DATABASE IF EXISTS ${tag}_b; DROP USER IF EXISTS '$tag'@'%'" || true
      rm -rf "$dir"
    }
    # Step 1. The user reshard connects as, with these privileges on each shard's database.
    admin "CREATE USER '$tag'@'%' IDENTIFIED BY 'walk-secret'"
    for s in a b; do
      admin "CREATE DATABASE ${tag}_$s"
      admin "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER, TRIGGER, \
             CREATE ROUTINE, ALTER ROUTINE, EXECUTE ON ${tag}_$s.* TO '$tag'@'%'"
      as_app "CREATE TABLE users (id bigint PRIMARY KEY, email varchar(255) NOT NULL)" "${tag}_$s"
    done
    as_app "INSERT INTO users SELECT seq, CONCAT('user', seq, '@example.com') FROM seq_1_to_10000" "${tag}_a"
    count() { as_app "SELECT count(*) FROM users" "${tag}_$1"; }
    unguard() {
      as_app "DROP TRIGGER IF EXISTS _rs_guardi_users; DROP TRIGGER IF EXISTS _rs_guardu_users; \
              DROP TRIGGER IF EXISTS _rs_guardd_users; DROP FUNCTION IF EXISTS reshard_assert_owner; \
              DROP TABLE IF EXISTS _reshard_fence" "${tag}_$1"
    }
    objects() { as_app "SELECT COALESCE(GROUP_CONCAT(n ORDER BY n SEPARATOR ' '), '') FROM (SELECT table_name AS n FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name LIKE '\_r%' UNION ALL SELECT trigger_name FROM information_schema.triggers WHERE trigger_schema = DATABASE() UNION ALL SELECT routine_name FROM information_schema.routines WHERE routine_schema = DATABASE()) o" "${tag}_$1"; }
    ;;
  *) echo "usage: docs/your-own-shards.sh postgres|mysql [reshard binary]" >&2; exit 2 ;;
esac

# Step 2. Maps name each shard's URL through an environment variable: the password stays out
# of the maps, the plan and the catalog.
export SHARD_A_URL SHARD_B_URL
SHARD_A_URL=$(url "${tag}_a")
SHARD_B_URL=$(url "${tag}_b")
map() { # the range split point
  cat <<JSON
{"shards": {"a": "env:SHARD_A_URL", "b": "env:SHARD_B_URL"},
 "tables": [{"name": "users", "key": "id"}],
 "partitioning": {"kind": "range", "ranges": [
   {"from": null, "to": $1, "shard": "a"}, {"from": $1, "to": null, "shard": "b"}]}}
JSON
}
map 1000000 > "$dir/from.json"
map 5001 > "$dir/to.json"

# Step 3. The catalog: one file (or database) per fleet, kept where every operator and worker
# reaches it, named once.
export RESHARD_CATALOG="sqlite://$dir/catalog.db"

# Step 4. Plan, review, check (CI re-checks a committed plan with --check).
"$reshard" plan --from "$dir/from.json" --to "$dir/to.json" -o "$dir/plan.json"
"$reshard" plan --from "$dir/from.json" --to "$dir/to.json" --check "$dir/plan.json"

# Step 5. The dry run reads the shards, changes nothing, and estimates the job.
"$reshard" apply "$dir/plan.json" --dry-run
test ! -e "$dir/catalog.db"

# Step 6. Apply: copy, catch-up, fenced cutover; the job then waits in dual write.
"$reshard" apply "$dir/plan.json" --yes --progress plain
"$reshard" status
"$reshard" verify

# Step 7. Complete: old copies deleted after a last verification; routing is the new map.
"$reshard" complete
"$reshard" verify --audit
test "$(count a)" = 5000
test "$(count b)" = 5000
! grep -q walk-secret "$dir/plan.json" "$dir/catalog.db"

# Step 8. What stays: the old owner keeps its guard against stale writers; the new owner
# keeps nothing.
echo "left on a: $(objects a)"
echo "left on b: $(objects b)"
test -z "$(objects b)"
test -n "$(objects a)"

# Step 9. Later, once every writer has refreshed its routing since complete, the old owner's
# guard can go (docs/writer-contract.md, "What reshard leaves on a shard").
unguard a
test -z "$(objects a)"
echo "walk done: $kind"
