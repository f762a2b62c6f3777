#!/usr/bin/env bash
# Benchmark (not a test): the cutover phase of a nine-move job, cut over one move at a time
# (`--parallel 1`) and side by side (`--parallel P`), in the same run on fresh copies of the
# same data. Usage: bench/cutover.sh [postgres|mysql] [N] [P]
# Needs a release build (cargo build --release), the psql / mariadb clients and jq.
#
# F shards → F+1 (identity modulo, F = 3 by default) on N users: with 3, nine moves, three from
# each source, every shard a source and a destination; with 2, two moves into the new shard. The
# cutover phase is read from the job's events: from the first move entering `catching_up` to
# the last flip. It includes each move's verification outside the fence (a full checksum pass),
# which is most of it. No writer runs, so the fences drain little. KEEP=1 keeps the directory
# with the events of both runs.
set -euo pipefail
kind=${1:-postgres}; n=${2:-300000}; par=${3:-4}; f=${4:-3}
bin=${RESHARD_BIN:-${CARGO_TARGET_DIR:-target}/release/reshard}
dir=$(mktemp -d); tag=rscut$$
pg() { PGOPTIONS=--client-min-messages=warning psql -qX -h 127.0.0.1 -U postgres "$@"; }
my() { mariadb -uroot -h127.0.0.1 "$@"; }
cleanup() {
  for ((s = 0; s <= f; s++)); do
    case $kind in
      postgres) pg -c "DROP DATABASE IF EXISTS ${tag}_$s" 2> /dev/null || true ;;
      mysql) my -e "DROP DATABASE IF EXISTS ${tag}_$s" 2> /dev/null || true ;;
    esac
  done
}
trap 'cleanup; [ -n "${KEEP:-}" ] || rm -rf "$dir"; [ -z "${KEEP:-}" ] || echo "kept $dir" >&2' EXIT

setup() { # fresh shards: s0..s(F-1) hold users by id % F, sF is empty
  cleanup
  for ((s = 0; s <= f; s++)); do
    case $kind in
      postgres)
        pg -c "CREATE DATABASE ${tag}_$s"
        pg -d "${tag}_$s" -c "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, score double precision)"
        [ $s = $f ] || pg -d "${tag}_$s" -c "INSERT INTO users SELECT g, 'user ' || g, g * 0.5
          FROM generate_series(1, $n) g WHERE g % $f = $s" ;;
      mysql)
        my -e "CREATE DATABASE ${tag}_$s; USE ${tag}_$s;
          CREATE TABLE users (id bigint PRIMARY KEY, name varchar(64) NOT NULL, score double)"
        [ $s = $f ] || my "${tag}_$s" -e "INSERT INTO users SELECT seq, concat('user ', seq), seq * 0.5
          FROM seq_1_to_$n WHERE seq % $f = $s" ;;
      *) echo "usage: $0 [postgres|mysql] [N] [P] [F]" >&2; exit 2 ;;
    esac
  done
}

url() {
  case $kind in
    postgres) echo "postgres://postgres@127.0.0.1:5432/${tag}_$1" ;;
    mysql) echo "mysql://root@127.0.0.1:3306/${tag}_$1" ;;
  esac
}

map() { # shard count -> map JSON
  local shards="" names=""
  for ((i = 0; i < $1; i++)); do
    shards+="${shards:+,}\"s$i\":\"$(url $i)\""; names+="${names:+,}\"s$i\""
  done
  printf '{"shards":{%s},"tables":[{"name":"users","key":"id"}],"partitioning":{"kind":"modulo","hash":"identity","shards":[%s]}}' "$shards" "$names"
}

run() { # parallel -> "cutover_s apply_s moves"
  setup
  map "$f" > "$dir/old.json"; map $((f + 1)) > "$dir/new.json"
  local cat="sqlite://$dir/cat-$1.db" t0 t1 job
  "$bin" plan --from "$dir/old.json" --to "$dir/new.json" -o "$dir/plan.json" > /dev/null
  t0=$(date +%s.%N)
  job=$("$bin" apply "$dir/plan.json" --yes --catalog "$cat" --parallel "$1" --progress plain \
    2> "$dir/apply-$1.err" | awk '/^job / {print $2}')
  t1=$(date +%s.%N)
  [ -n "$job" ] || { echo "apply failed:" >&2; tail "$dir/apply-$1.err" >&2; exit 1; }
  "$bin" log "$job" --catalog "$cat" --format json > "$dir/events-$1.json"
  jq -rs --arg w "$(echo "$t1 - $t0" | bc -l)" '
    def t: (.at | sub("\\.[0-9]+Z$"; "Z") | fromdateiso8601) * 1000 + (.at | capture("\\.(?<f>[0-9]+)Z$").f | tonumber);
    ([.[] | select(.kind == "move_state" and (.detail | endswith("-> catching_up"))) | t] | min) as $a
    | ([.[] | select(.kind == "flip") | t] | max) as $b
    | ([.[] | select(.kind == "flip")] | length) as $m
    | "\(($b - $a) / 1000) \($w) \($m)"' "$dir/events-$1.json"
}

read -r seq_s seq_w seq_m < <(run 1)
read -r par_s par_w par_m < <(run "$par")
printf '%s rows=%s: cutover phase --parallel 1: %.2f s for %d moves (%.2f s/move); --parallel %s: %.2f s (%.2f s/move); ratio %.2f. apply wall: %.1f s vs %.1f s\n' \
  "$kind" "$n" "$seq_s" "$seq_m" "$(echo "$seq_s / $seq_m" | bc -l)" "$par" "$par_s" \
  "$(echo "$par_s / $par_m" | bc -l)" "$(echo "$seq_s / $par_s" | bc -l)" "$seq_w" "$par_w"
