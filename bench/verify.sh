#!/usr/bin/env bash
# Benchmark (not a test): `reshard verify` rows/s on N rows beside a raw scan piped into sha1sum
# in the same run. Usage: bench/verify.sh sqlite|postgres|mysql [N]
# Needs a release build (cargo build --release) and the psql / mariadb / sqlite3 clients.
set -euo pipefail
kind=$1; n=${2:-1000000}
bin=${RESHARD_BIN:-${CARGO_TARGET_DIR:-target}/release/reshard}
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
ddl_pg="CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, score double precision)"
sel="SELECT id, name, score FROM users ORDER BY id"
case $kind in
  sqlite)
    a="sqlite://$dir/a.db"; b="sqlite://$dir/b.db"
    sqlite3 "$dir/a.db" "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL);
      WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM g WHERE x < $n)
      INSERT INTO users SELECT x, 'user ' || x, x * 0.5 FROM g;"
    sqlite3 "$dir/b.db" "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL);"
    raw() { sqlite3 "$dir/a.db" "$sel" | sha1sum; } ;;
  postgres)
    for d in bench_a bench_b; do psql -qX -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $d" -c "CREATE DATABASE $d"; psql -qX -h 127.0.0.1 -U postgres -d $d -c "$ddl_pg"; done
    psql -qX -h 127.0.0.1 -U postgres -d bench_a -c "INSERT INTO users SELECT g, 'user ' || g, g * 0.5 FROM generate_series(1, $n) g"
    a=postgres://postgres@127.0.0.1:5432/bench_a; b=postgres://postgres@127.0.0.1:5432/bench_b
    raw() { psql -qX -h 127.0.0.1 -U postgres -d bench_a -c "\\copy ($sel) TO STDOUT" | sha1sum; } ;;
  mysql)
    for d in bench_a bench_b; do mariadb -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS $d; CREATE DATABASE $d; USE $d; CREATE TABLE users (id bigint PRIMARY KEY, name varchar(64) NOT NULL, score double)"; done
    mariadb -uroot -h127.0.0.1 bench_a -e "INSERT INTO users SELECT seq, concat('user ', seq), seq * 0.5 FROM seq_1_to_$n"
    a=mysql://root@127.0.0.1:3306/bench_a; b=mysql://root@127.0.0.1:3306/bench_b
    raw() { mariadb -uroot -h127.0.0.1 bench_a -e "$sel" | sha1sum; } ;;
esac
map() { # shard url
  printf '{"shards":{"%s":"%s"},"tables":[{"name":"users","key":"id"}],"partitioning":{"kind":"range","ranges":[{"from":null,"to":null,"shard":"%s"}]}}' "$1" "$2" "$1"
}
map a "$a" > "$dir/old.json"; map b "$b" > "$dir/new.json"
"$bin" plan --from "$dir/old.json" --to "$dir/new.json" -o "$dir/plan.json" > /dev/null
job=$("$bin" apply "$dir/plan.json" --yes --catalog "sqlite://$dir/cat.db" --batch-size 5000 \
  --progress plain 2> /dev/null | awk '/^job / {print $2}')
t0=$(date +%s.%N); raw > /dev/null; t1=$(date +%s.%N)
"$bin" verify "$job" --catalog "sqlite://$dir/cat.db" > "$dir/verify.txt"; t2=$(date +%s.%N)
rs=$(echo "$t1 - $t0" | bc -l); vs=$(echo "$t2 - $t1" | bc -l)
printf '%s rows=%s raw_scan_s=%.2f raw_rows_per_s=%.0f verify_s=%.2f verify_rows_per_s=%.0f ratio=%.2f\n' \
  "$kind" "$n" "$rs" "$(echo "$n / $rs" | bc -l)" "$vs" "$(echo "$n / $vs" | bc -l)" "$(echo "$rs / $vs" | bc -l)"
head -3 "$dir/verify.txt"
case $kind in
  postgres) for d in bench_a bench_b; do psql -qX -h 127.0.0.1 -U postgres -c "DROP DATABASE $d"; done ;;
  mysql) mariadb -uroot -h127.0.0.1 -e "DROP DATABASE bench_a; DROP DATABASE bench_b" ;;
esac
