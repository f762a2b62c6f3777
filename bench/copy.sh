#!/usr/bin/env bash
# Benchmark (not a test): rows/s and peak RSS of `reshard apply` copying N rows from one shard
# to another on one backend. Usage: bench/copy.sh sqlite|postgres|mysql [N] [BATCH]
# Needs a release build (cargo build --release) and the psql / mariadb / sqlite3 clients.
set -euo pipefail
kind=$1; n=${2:-1000000}; batch=${3:-1000}
bin=${RESHARD_BIN:-${CARGO_TARGET_DIR:-target}/release/reshard}
dir=$(mktemp -d); [ -n "${KEEP:-}" ] && echo "kept: $dir" || trap 'rm -rf "$dir"' EXIT
ddl_pg="CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, score double precision)"
case $kind in
  sqlite)
    a="sqlite://$dir/a.db"; b="sqlite://$dir/b.db"
    sqlite3 "$dir/a.db" "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL);
      WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM g WHERE x < $n)
      INSERT INTO users SELECT x, 'user ' || x, x * 0.5 FROM g;"
    sqlite3 "$dir/b.db" "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL);" ;;
  postgres)
    for d in bench_a bench_b; do psql -qX -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $d" -c "CREATE DATABASE $d"; psql -qX -h 127.0.0.1 -U postgres -d $d -c "$ddl_pg"; done
    psql -qX -h 127.0.0.1 -U postgres -d bench_a -c "INSERT INTO users SELECT g, 'user ' || g, g * 0.5 FROM generate_series(1, $n) g"
    a=postgres://postgres@127.0.0.1:5432/bench_a; b=postgres://postgres@127.0.0.1:5432/bench_b ;;
  mysql)
    for d in bench_a bench_b; do mariadb -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS $d; CREATE DATABASE $d; USE $d; CREATE TABLE users (id bigint PRIMARY KEY, name varchar(64) NOT NULL, score double)"; done
    mariadb -uroot -h127.0.0.1 bench_a -e "INSERT INTO users SELECT seq, concat('user ', seq), seq * 0.5 FROM seq_1_to_$n"
    a=mysql://root@127.0.0.1:3306/bench_a; b=mysql://root@127.0.0.1:3306/bench_b ;;
esac
map() { # shard url
  printf '{"shards":{"%s":"%s"},"tables":[{"name":"users","key":"id"}],"partitioning":{"kind":"range","ranges":[{"from":null,"to":null,"shard":"%s"}]}}' "$1" "$2" "$1"
}
map a "$a" > "$dir/old.json"; map b "$b" > "$dir/new.json"
"$bin" plan --from "$dir/old.json" --to "$dir/new.json" -o "$dir/plan.json" > /dev/null
start=$(date +%s.%N)
${PERF:-} /usr/bin/time -v "$bin" apply "$dir/plan.json" --yes --catalog "sqlite://$dir/cat.db" \
  --batch-size "$batch" --progress plain 2> "$dir/time.txt" > /dev/null || { cat "$dir/time.txt"; exit 1; }
end=$(date +%s.%N)
rss=$(awk -F': ' '/Maximum resident/ {print $2}' "$dir/time.txt")
secs=$(echo "$end - $start" | bc -l)
printf '%s rows=%s batch=%s seconds=%.1f rows_per_s=%.0f peak_rss_kb=%s\n' "$kind" "$n" "$batch" "$secs" "$(echo "$n / $secs" | bc -l)" "$rss"
case $kind in
  postgres) for d in bench_a bench_b; do psql -qX -h 127.0.0.1 -U postgres -c "DROP DATABASE $d"; done ;;
  mysql) mariadb -uroot -h127.0.0.1 -e "DROP DATABASE bench_a; DROP DATABASE bench_b" ;;
esac
