#!/usr/bin/env bash
# Benchmark (not a test), issue 15: what copying from a replica spares the primary, and what a
# lagging replica costs. Starts a PostgreSQL primary and a streaming replica of its own on free
# loopback ports (as the postgres user when run as root), loads N rows there, and moves them to
# a database on the shared server (127.0.0.1:5432), three times:
#   1. --read-from primary     2. --read-from replica
#   3. --read-from primary --max-lag 1s, with replay paused for PAUSE seconds during the copy.
# For runs 1 and 2 it prints, for the copy phase and for the whole job, the wall time and the
# primary's CPU seconds (all of its processes) and tuples read (pg_stat_database of the source). Run 3 also prints how long the copy held and how
# long after replay resumed it moved again.
# Usage: bench/replica.sh [N] [PAUSE]   Needs a release build and initdb, pg_ctl, pg_basebackup.
set -euo pipefail
n=${1:-500000}; pause_s=${2:-3}
bin=$(realpath "${RESHARD_BIN:-${CARGO_TARGET_DIR:-target}/release/reshard}")
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1); [ -x "$pgbin/initdb" ] || pgbin=$(dirname "$(readlink -f "$(command -v initdb)")")
dir=$(mktemp -d); chmod 755 "$dir"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cleanup() {
  as_pg "$pgbin/pg_ctl" -D "$dir/r" -m immediate stop >/dev/null 2>&1 || true
  as_pg "$pgbin/pg_ctl" -D "$dir/p" -m immediate stop >/dev/null 2>&1 || true
  psql -qX -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS bench_replica_dst" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
[ "$(id -u)" = 0 ] && chown postgres "$dir"
P=$(port); R=$(port)
as_pg "$pgbin/initdb" -D "$dir/p" -A trust -U postgres >/dev/null
as_pg "$pgbin/pg_ctl" -D "$dir/p" -l "$dir/p.log" -w -o "-p $P -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
as_pg "$pgbin/pg_basebackup" -h 127.0.0.1 -p "$P" -U postgres -D "$dir/r" -R >/dev/null
as_pg "$pgbin/pg_ctl" -D "$dir/r" -l "$dir/r.log" -w -o "-p $R -k $dir -c listen_addresses=127.0.0.1" start >/dev/null

ddl="CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, payload text NOT NULL)"
psql -qX -h 127.0.0.1 -p "$P" -U postgres -c "CREATE DATABASE src"
psql -qX -h 127.0.0.1 -p "$P" -U postgres -d src -c "$ddl" \
  -c "INSERT INTO users SELECT g, 'user ' || g, repeat(md5(g::text), 6) FROM generate_series(1, $n) g" \
  -c "VACUUM ANALYZE users"
psql -qX -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS bench_replica_dst" -c "CREATE DATABASE bench_replica_dst"
psql -qX -h 127.0.0.1 -U postgres -d bench_replica_dst -c "$ddl"
src="postgres://postgres@127.0.0.1:$P/src"; rep="postgres://postgres@127.0.0.1:$R/src"
dst="postgres://postgres@127.0.0.1:5432/bench_replica_dst"
# Wait for the replica to have the rows.
until [ "$(psql -qXtA -h 127.0.0.1 -p "$R" -U postgres -d src -c 'SELECT count(*) FROM users' 2>/dev/null)" = "$n" ]; do sleep 0.2; done

one_shard='{"shards":{"%s":%s},"tables":[{"name":"users","key":"id"}],"partitioning":{"kind":"range","ranges":[{"from":null,"to":null,"shard":"%s"}]}}'
printf "$one_shard" s0 "{\"url\":\"$src\",\"replicas\":[\"$rep\"]}" s0 > "$dir/old.json"
printf "$one_shard" s1 "\"$dst\"" s1 > "$dir/new.json"
"$bin" plan --from "$dir/old.json" --to "$dir/new.json" -o "$dir/plan.json" > /dev/null

tck=$(getconf CLK_TCK)
# CPU ticks of the primary: the postmaster, its reaped children and the live ones.
cpu() {
  local pm; pm=$(head -1 "$dir/p/postmaster.pid")
  { awk '{print $14+$15+$16+$17}' "/proc/$pm/stat"
    for c in $(pgrep -P "$pm"); do awk '{print $14+$15}' "/proc/$c/stat" 2>/dev/null || true; done
  } | awk '{s+=$1} END {print s}'
}
tuples() { psql -qXtA -h 127.0.0.1 -p "$P" -U postgres -d src -c "SELECT pg_stat_force_next_flush(); SELECT tup_returned + tup_fetched FROM pg_stat_database WHERE datname = 'src'" | tail -1; }
reset() {
  psql -qX -h 127.0.0.1 -U postgres -d bench_replica_dst -c "DROP TABLE users" -c "$ddl"
  rm -f "$dir"/cat.db*
}
copied() { "$bin" status --catalog "sqlite://$dir/cat.db" --format json 2>/dev/null \
  | python3 -c 'import json,sys; print(json.load(sys.stdin).get("rows_copied", 0))' 2>/dev/null || echo 0; }
snap() { echo "$(cpu) $(tuples) $(date +%s.%N)"; }
# "label" and two snapshots -> one line of CPU seconds and tuples read between them.
report() {
  read -r c0 t0 s0 <<< "$2"; read -r c1 t1 s1 <<< "$3"
  local secs; secs=$(echo "$s1 - $s0" | bc -l)
  printf '  %-10s seconds=%5.2f primary_cpu_s=%5.2f primary_tuples_read=%8s (%.0f/s)\n' \
    "$1" "$secs" "$(echo "($c1 - $c0) / $tck" | bc -l)" "$((t1 - t0))" \
    "$(echo "($t1 - $t0) / $secs" | bc -l)"
}
run() { # label, extra apply args...
  local label=$1; shift
  reset
  local begin first last end
  begin=$(snap)
  "$bin" apply "$dir/plan.json" --yes --catalog "sqlite://$dir/cat.db" --progress plain "$@" \
    2> "$dir/$label.log" > /dev/null &
  local apply=$!
  # The copy phase: from the first page recorded to the last (polled every 50 ms).
  until [ "$(copied)" -gt 0 ]; do sleep 0.05; done; first=$(snap)
  until [ "$(copied)" -ge "$n" ]; do sleep 0.05; done; last=$(snap)
  wait $apply || { tail -20 "$dir/$label.log"; exit 1; }
  end=$(snap)
  echo "$label, $n rows:"
  report copy "$first" "$last"
  report whole_job "$begin" "$end"
}
run read_from_primary --read-from primary
run read_from_replica --read-from replica

# 3: replay paused for part of the copy under --max-lag 1s.
reset
"$bin" apply "$dir/plan.json" --yes --catalog "sqlite://$dir/cat.db" --progress plain \
  --read-from primary --max-lag 1s 2> "$dir/lag.log" > /dev/null &
apply=$!
until [ "$(copied)" -gt 0 ]; do sleep 0.05; done
first=$(date +%s.%N)
psql -qXtA -h 127.0.0.1 -p "$R" -U postgres -c "SELECT pg_wal_replay_pause()" >/dev/null
sleep "$pause_s"
held=$(copied)
psql -qXtA -h 127.0.0.1 -p "$R" -U postgres -c "SELECT pg_wal_replay_resume()" >/dev/null
resumed=$(date +%s.%N)
while [ "$(copied)" -le "$held" ] && kill -0 $apply 2>/dev/null; do sleep 0.05; done
moved=$(date +%s.%N)
until [ "$(copied)" -ge "$n" ]; do sleep 0.05; done
last=$(date +%s.%N)
wait $apply || { tail -20 "$dir/lag.log"; exit 1; }
secs=$(echo "$last - $first" | bc -l)
echo "read_from_primary --max-lag 1s, replay paused $pause_s s during the copy:"
printf '  copy       seconds=%5.2f rows_per_s=%.0f (%s rows copied when replay resumed)\n' \
  "$secs" "$(echo "$n / $secs" | bc -l)" "$held"
printf '  the copy moved again %.2f s after replay resumed (polled every 50 ms)\n' \
  "$(echo "$moved - $resumed" | bc -l)"
grep -E 'throttled: s0 replica|throttle ended' "$dir/lag.log" | sed 's/^/  /' | head -4
