#!/usr/bin/env bash
# Benchmark (not a test): `reshard verify` rows/s on N rows beside raw scans of the same table in
# the same run. Usage: bench/verify.sh [sqlite|postgres|mysql|all] [N] [RUNS] [narrow|wide]
# Needs a release build (cargo build --release) and the psql / mariadb / sqlite3 clients.
#
# Shapes: narrow is users(id, name, score), where per-row costs dominate (the worst case for
# reshard against a raw scan); wide is the table of ../shared/baselines.md (id, user_id, email,
# name, a ~200-byte payload, updated_at timestamp), where the bytes and a timestamp column count.
#
# Each backend: a source database with N rows, `reshard apply` copies them to a destination, both
# tables are analyzed (as autovacuum / InnoDB's statistics would be by then), then RUNS rounds of
# raw scan(s) and `reshard verify` (a full pass reading BOTH sides) alternate. Printed: each round
# and the medians; ratio = verify rows/s / raw scan rows/s (the target is >= 0.5).
# Raw scans: PostgreSQL `\copy (SELECT ...) TO STDOUT | sha1sum`; MariaDB `mariadb -e 'SELECT ...'
# | sha1sum`, `SELECT ... INTO OUTFILE` then sha1sum of the file, and BIT_XOR(CRC32(CONCAT_WS(...)))
# in 100 key ranges (a server-side checksum, not exact: shown for scale); SQLite
# `sqlite3 db 'SELECT ...' | sha1sum`.
set -euo pipefail
what=${1:-all}; n=${2:-1000000}; runs=${3:-3}; shape=${4:-narrow}
bin=${RESHARD_BIN:-${CARGO_TARGET_DIR:-target}/release/reshard}
dir=$(mktemp -d); tag=rsbench$$
pg() { PGOPTIONS=--client-min-messages=warning psql -qX -h 127.0.0.1 -U postgres "$@"; }
my() { mariadb -uroot -h127.0.0.1 "$@"; }
cleanup() {
  rm -f "$dir"/*.db "$dir"/*.db-*
  for s in a b; do
    pg -c "DROP DATABASE IF EXISTS ${tag}_$s" 2> /dev/null || true
    my -e "DROP DATABASE IF EXISTS ${tag}_$s" 2> /dev/null || true
  done
}
trap 'cleanup; rm -rf "$dir"' EXIT
case $shape in
  narrow) cols="id, name, score" ;;
  wide) cols="id, user_id, email, name, payload, updated_at" ;;
  *) echo "usage: $0 [sqlite|postgres|mysql|all] [N] [RUNS] [narrow|wide]" >&2; exit 2 ;;
esac
sel="SELECT $cols FROM users ORDER BY id"
now() { date +%s.%N; }
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

setup() { # kind -> sets url_a url_b
  case $1/$shape in
    sqlite/narrow)
      for s in a b; do
        sqlite3 "$dir/$s.db" "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL)"
      done
      sqlite3 "$dir/a.db" "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM g WHERE x < $n)
        INSERT INTO users SELECT x, 'user ' || x, x * 0.5 FROM g" ;;
    sqlite/wide)
      for s in a b; do
        sqlite3 "$dir/$s.db" "CREATE TABLE users (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL,
          email TEXT NOT NULL, name TEXT NOT NULL, payload TEXT, updated_at TIMESTAMP)"
      done
      sqlite3 "$dir/a.db" "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM g WHERE x < $n)
        INSERT INTO users SELECT x, x % 100003, 'user' || x || '@example.com', 'User Number ' || x,
          hex(randomblob(100)), datetime('2026-01-01', '+' || x || ' seconds') FROM g" ;;
    postgres/*)
      local ddl="id bigint PRIMARY KEY, name text NOT NULL, score double precision"
      local fill="SELECT g, 'user ' || g, g * 0.5 FROM generate_series(1, $n) g"
      if [ "$shape" = wide ]; then
        ddl="id bigint PRIMARY KEY, user_id bigint NOT NULL, email text NOT NULL, name text NOT NULL,
          payload text, updated_at timestamp"
        fill="SELECT g, g % 100003, 'user' || g || '@example.com', 'User Number ' || g,
          repeat(md5(g::text), 6) || left(md5((g * 7)::text), 8),
          timestamp '2026-01-01' + g * interval '1 second' FROM generate_series(1, $n) g"
      fi
      for s in a b; do
        pg -c "DROP DATABASE IF EXISTS ${tag}_$s" -c "CREATE DATABASE ${tag}_$s"
        pg -d "${tag}_$s" -c "CREATE TABLE users ($ddl)"
      done
      pg -d "${tag}_a" -c "INSERT INTO users $fill" ;;
    mysql/*)
      local ddl="id bigint PRIMARY KEY, name varchar(64) NOT NULL, score double"
      local fill="SELECT seq, concat('user ', seq), seq * 0.5 FROM seq_1_to_$n"
      if [ "$shape" = wide ]; then
        ddl="id bigint PRIMARY KEY, user_id bigint NOT NULL, email varchar(255) NOT NULL,
          name varchar(255) NOT NULL, payload text, updated_at datetime(6)"
        fill="SELECT seq, seq % 100003, concat('user', seq, '@example.com'), concat('User Number ', seq),
          concat(repeat(md5(seq), 6), left(md5(seq * 7), 8)),
          timestamp '2026-01-01 00:00:00' + interval seq second FROM seq_1_to_$n"
      fi
      for s in a b; do
        my -e "DROP DATABASE IF EXISTS ${tag}_$s; CREATE DATABASE ${tag}_$s; USE ${tag}_$s;
          CREATE TABLE users ($ddl)"
      done
      my "${tag}_a" -e "INSERT INTO users $fill" ;;
  esac
  case $1 in
    sqlite) url_a="sqlite://$dir/a.db"; url_b="sqlite://$dir/b.db" ;;
    postgres) url_a="postgres://postgres@127.0.0.1:5432/${tag}_a"; url_b="postgres://postgres@127.0.0.1:5432/${tag}_b" ;;
    mysql) url_a="mysql://root@127.0.0.1:3306/${tag}_a"; url_b="mysql://root@127.0.0.1:3306/${tag}_b" ;;
  esac
}

analyze() {
  case $1 in
    postgres) for s in a b; do pg -d "${tag}_$s" -c "VACUUM ANALYZE users"; done ;;
    mysql) for s in a b; do my "${tag}_$s" -e "ANALYZE TABLE users" > /dev/null; done ;;
    sqlite) for s in a b; do sqlite3 "$dir/$s.db" "ANALYZE"; done ;;
  esac
}

raw_scans() { # kind -> "name seconds" lines
  local t0 t1
  case $1 in
    sqlite) t0=$(now); sqlite3 "$dir/a.db" "$sel" | sha1sum > /dev/null; echo "sqlite3|sha1sum $(echo "$(now) - $t0" | bc -l)" ;;
    postgres) t0=$(now); pg -d "${tag}_a" -c "\\copy ($sel) TO STDOUT" | sha1sum > /dev/null
      echo "copy|sha1sum $(echo "$(now) - $t0" | bc -l)" ;;
    mysql) t0=$(now); my "${tag}_a" -e "$sel" | sha1sum > /dev/null; t1=$(now)
      echo "mariadb|sha1sum $(echo "$t1 - $t0" | bc -l)"
      # The server's own dump path (the server writes the file, so not under the 0700 $dir).
      local out=/tmp/${tag}_scan.txt; rm -f "$out"
      # A server whose secure_file_priv forbids it skips this one scan.
      t0=$(now)
      if my "${tag}_a" -e "$sel INTO OUTFILE '$out'" 2> /dev/null; then
        sha1sum "$out" > /dev/null; t1=$(now)
        echo "outfile+sha1sum $(echo "$t1 - $t0" | bc -l)"
      else
        echo "mysql: SELECT ... INTO OUTFILE refused (secure_file_priv?); that scan skipped" >&2
      fi
      rm -f "$out"
      local step=$(( (n + 99) / 100 )) q=""
      for ((i = 0; i < 100; i++)); do
        q+="SELECT COUNT(*), BIT_XOR(CRC32(CONCAT_WS('#', $cols))) FROM users WHERE id > $((i * step)) AND id <= $(((i + 1) * step));"
      done
      t0=$(now); my "${tag}_a" -e "$q" > /dev/null; echo "bit_xor(crc32) $(echo "$(now) - $t0" | bc -l)" ;;
  esac
}

bench() { # kind
  local kind=$1 map_a map_b job
  setup "$kind"
  printf '{"shards":{"a":"%s"},"tables":[{"name":"users","key":"id"}],"partitioning":{"kind":"range","ranges":[{"from":null,"to":null,"shard":"a"}]}}' "$url_a" > "$dir/old.json"
  printf '{"shards":{"b":"%s"},"tables":[{"name":"users","key":"id"}],"partitioning":{"kind":"range","ranges":[{"from":null,"to":null,"shard":"b"}]}}' "$url_b" > "$dir/new.json"
  "$bin" plan --from "$dir/old.json" --to "$dir/new.json" -o "$dir/plan.json" > /dev/null
  job=$("$bin" apply "$dir/plan.json" --yes --catalog "sqlite://$dir/cat-$kind.db" --batch-size 5000 \
    --progress plain 2> /dev/null | awk '/^job / {print $2}')
  [ -n "$job" ] || { echo "$kind: apply failed" >&2; return 1; }
  analyze "$kind"
  : > "$dir/raw"; : > "$dir/ver"
  for ((r = 1; r <= runs; r++)); do
    raw_scans "$kind" | tee -a "$dir/raw" > "$dir/raw-now"
    local t0 vs; t0=$(now)
    "$bin" verify "$job" --catalog "sqlite://$dir/cat-$kind.db" --progress json > "$dir/verify.txt" 2> "$dir/verify.err"
    vs=$(echo "$(now) - $t0" | bc -l); echo "$vs" >> "$dir/ver"
    printf '%s run %d: verify %.2f s (%s)' "$kind" "$r" "$vs" "$(grep -o '[0-9]* chunks' "$dir/verify.txt")"
    while read -r name s; do printf ', %s %.2f s (ratio %.2f)' "$name" "$s" "$(echo "$s / $vs" | bc -l)"; done < "$dir/raw-now"
    echo
  done
  local vm; vm=$(median < "$dir/ver")
  printf '%s %s rows=%s median of %d: verify %.2f s = %.0f rows/s' "$kind" "$shape" "$n" "$runs" "$vm" "$(echo "$n / $vm" | bc -l)"
  for name in $(awk '{print $1}' "$dir/raw" | sort -u); do
    local rm; rm=$(awk -v k="$name" '$1 == k {print $2}' "$dir/raw" | median)
    printf '; %s %.2f s = %.0f rows/s, ratio %.2f' "$name" "$rm" "$(echo "$n / $rm" | bc -l)" "$(echo "$rm / $vm" | bc -l)"
  done
  echo
  head -2 "$dir/verify.txt"
  # Dropped now, not at exit: autovacuum on these tables would take CPU from the next backend.
  cleanup
}

case $what in
  all) for k in postgres mysql sqlite; do bench "$k"; done ;;
  sqlite | postgres | mysql) bench "$what" ;;
  *) echo "usage: $0 [sqlite|postgres|mysql|all] [N] [RUNS] [narrow|wide]" >&2; exit 2 ;;
esac
