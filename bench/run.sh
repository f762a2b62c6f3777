#!/usr/bin/env bash
# Benchmark (not a test): reshard beside each database's own bulk path, same rows, same run.
# Usage: bench/run.sh [--rows N] [--backends postgres,mysql,sqlite] [--json]
# Defaults: 1000000 rows, all three backends. Needs a release build (cargo build --release;
# RESHARD_BIN overrides it), GNU time (/usr/bin/time), python3 and the psql / mariadb / sqlite3
# clients; PostgreSQL at 127.0.0.1:5432 (postgres, trust) and MariaDB at 127.0.0.1:3306 (root).
#
# Each backend: databases a, b and c with users(id, user_id, email, name, ~200-byte payload,
# updated_at) (the table of ../shared/baselines.md), N rows loaded into a and analyzed. A range
# split moves ids >= N/2+1 from a to b (old map: everything on a):
#   reshard: `apply` under /usr/bin/time -v (wall, peak RSS), its phases read from the job's
#     events (`reshard log --format json`): preflight+counts = the process's start to job_created
#     (by the clock: connecting, describing, key and row counts happen before the job exists);
#     before the copy = job_created to the first `pending -> copying` (lease, capture install;
#     by the events, as the rest); copy = to the last `copying -> copied`; catch-up+verify = to
#     the last `catching_up -> fencing` (the fence's start; the fence itself is the `fence N ms`
#     of the `flip` event: the fence is not counted twice). Then `verify` of the whole
#     job and `complete` (which verifies every move again, then deletes the moved rows from a in
#     batches; both parts are shown, split at the job's `dual_write -> completing`).
#   bulk path, into c (a fresh table, same DDL) from a's moved rows: PostgreSQL
#     `\copy (SELECT ...) TO STDOUT | psql -c "\copy users FROM STDIN"`, MariaDB one
#     `INSERT INTO c.users SELECT * FROM a.users WHERE ...`, SQLite `ATTACH` + `INSERT ... SELECT`;
#     verify = the moved rows of a, then of b, in key order through sha1sum (times summed; the
#     two digests must agree); delete = one `DELETE ... WHERE id >= N/2+1` on c.
# Printed per backend: seconds of each step, ratio = bulk s / reshard s (1.00 = as fast as the
# bulk path, higher is better), copy rows/s; --json prints one JSON object instead. Progress
# goes to stderr. Databases (rsbench_{a,b,c}_PID) are dropped after each backend and at exit.
# KEEP=1 keeps the directory (maps, plans, events, time -v outputs).
set -euo pipefail
usage() { sed -n 's/^# Usage: /usage: /p' "$0" >&2; exit 2; }
n=1000000; backends=postgres,mysql,sqlite; json=
while [ $# -gt 0 ]; do
  case $1 in
    --rows) n=${2:-}; shift 2 || usage ;;
    --rows=*) n=${1#--rows=}; shift ;;
    --backends) backends=${2:-}; shift 2 || usage ;;
    --backends=*) backends=${1#--backends=}; shift ;;
    --json) json=1; shift ;;
    -h | --help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
[[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 2 ] || { echo "--rows: an integer >= 2" >&2; exit 2; }
IFS=, read -ra kinds <<< "$backends"
for k in "${kinds[@]}"; do
  case $k in postgres | mysql | sqlite) ;; *) echo "unknown backend: $k" >&2; usage ;; esac
done
bin=$(realpath "${RESHARD_BIN:-${CARGO_TARGET_DIR:-target}/release/reshard}")
[ -x "$bin" ] || { echo "no reshard binary at $bin (cargo build --release, or RESHARD_BIN)" >&2; exit 2; }
dir=$(mktemp -d); tag=$$
mid=$((n / 2 + 1)); moved=$((n - mid + 1))
pg() { PGOPTIONS=--client-min-messages=warning psql -qX -h 127.0.0.1 -U postgres "$@"; }
my() { mariadb -uroot -h127.0.0.1 "$@"; }
db() { echo "rsbench_$1_$tag"; }
drop() { # kind: its databases, if any
  case $1 in
    postgres) for s in a b c; do pg -c "DROP DATABASE IF EXISTS $(db $s) WITH (FORCE)" 2> /dev/null || true; done ;;
    mysql) for s in a b c; do my -e "DROP DATABASE IF EXISTS $(db $s)" 2> /dev/null || true; done ;;
    sqlite) rm -f "$dir"/{a,b,c}.db "$dir"/{a,b,c}.db-* ;;
  esac
}
cleanup() {
  for k in "${kinds[@]}"; do drop "$k"; done
  if [ -n "${KEEP:-}" ]; then echo "kept $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT
now() { date +%s.%N; }
say() { echo "run.sh: $*" >&2; }

setup() { # kind: a, b, c with the table; N rows in a, analyzed
  local ddl fill
  case $1 in
    postgres)
      ddl="id bigint PRIMARY KEY, user_id bigint NOT NULL, email text, name text, payload text, updated_at timestamp"
      fill="SELECT g, g % 100003, 'user' || g || '@example.com', 'User Number ' || g,
        repeat(md5(g::text), 6) || left(md5((g * 7)::text), 8),
        timestamp '2026-01-01' + g * interval '1 second' FROM generate_series(1, $n) g"
      for s in a b c; do
        pg -c "CREATE DATABASE $(db $s)"; pg -d "$(db $s)" -c "CREATE TABLE users ($ddl)"
      done
      pg -d "$(db a)" -c "INSERT INTO users $fill" -c "VACUUM ANALYZE users" ;;
    mysql)
      ddl="id bigint PRIMARY KEY, user_id bigint NOT NULL, email varchar(255), name varchar(255),
        payload text, updated_at datetime(6)"
      fill="SELECT seq, seq % 100003, concat('user', seq, '@example.com'), concat('User Number ', seq),
        concat(repeat(md5(seq), 6), left(md5(seq * 7), 8)),
        timestamp '2026-01-01 00:00:00' + interval seq second FROM seq_1_to_$n"
      for s in a b c; do my -e "CREATE DATABASE $(db $s); USE $(db $s); CREATE TABLE users ($ddl)"; done
      my "$(db a)" -e "INSERT INTO users $fill; ANALYZE TABLE users" > /dev/null ;;
    sqlite)
      ddl="id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, email TEXT, name TEXT, payload TEXT, updated_at TIMESTAMP"
      for s in a b c; do sqlite3 "$dir/$s.db" "CREATE TABLE users ($ddl)"; done
      sqlite3 "$dir/a.db" "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM g WHERE x < $n)
        INSERT INTO users SELECT x, x % 100003, 'user' || x || '@example.com', 'User Number ' || x,
          hex(randomblob(100)), datetime('2026-01-01', '+' || x || ' seconds') FROM g; ANALYZE" ;;
  esac
}

url() { # kind shard
  case $1 in
    postgres) echo "postgres://postgres@127.0.0.1:5432/$(db "$2")" ;;
    mysql) echo "mysql://root@127.0.0.1:3306/$(db "$2")" ;;
    sqlite) echo "sqlite://$dir/$2.db" ;;
  esac
}

# The moved rows of one side, in key order, through sha1sum: kind shard -> digest
scan() {
  local q="SELECT * FROM users WHERE id >= $mid ORDER BY id"
  case $1 in
    postgres) pg -d "$(db "$2")" -c "\\copy ($q) TO STDOUT" | sha1sum ;;
    mysql) my "$(db "$2")" -N -e "$q" | sha1sum ;;
    sqlite) sqlite3 "$dir/$2.db" "$q" | sha1sum ;;
  esac | awk '{print $1}'
}

bulk_copy() { # kind: a's moved rows into c
  case $1 in
    postgres) pg -d "$(db a)" -c "\\copy (SELECT * FROM users WHERE id >= $mid) TO STDOUT" \
      | pg -d "$(db c)" -c "\\copy users FROM STDIN" ;;
    mysql) my -e "INSERT INTO $(db c).users SELECT * FROM $(db a).users WHERE id >= $mid" ;;
    sqlite) sqlite3 "$dir/c.db" "ATTACH '$dir/a.db' AS a; INSERT INTO users SELECT * FROM a.users WHERE id >= $mid" ;;
  esac
}

bulk_delete() { # kind: c holds exactly the moved rows
  local q="DELETE FROM users WHERE id >= $mid"
  case $1 in
    postgres) pg -d "$(db c)" -c "$q" ;;
    mysql) my "$(db c)" -e "$q" ;;
    sqlite) sqlite3 "$dir/c.db" "$q" ;;
  esac
}

count() { # kind shard -> rows
  case $1 in
    postgres) pg -tA -d "$(db "$2")" -c "SELECT count(*) FROM users" ;;
    mysql) my "$(db "$2")" -N -e "SELECT count(*) FROM users" ;;
    sqlite) sqlite3 "$dir/$2.db" "SELECT count(*) FROM users" ;;
  esac
}

timed() { # name command...: runs a reshard command under time -v; its output in $dir/$kind-name.*
  local f="$dir/$kind-$1"; shift
  if ! /usr/bin/time -v -o "$f.time" "$@" > "$f.out" 2> "$f.err"; then
    say "$kind: failed: $*"; tail -20 "$f.err" >&2; tail -5 "$f.out" >&2; exit 1
  fi
}

bench() { # kind -> $dir/res-kind.json
  kind=$1
  local cat="sqlite://$dir/cat-$kind.db" job t0 t1 sha_a sha_b
  drop "$kind"
  say "$kind: loading $n rows"
  setup "$kind"
  printf '{"shards":{"a":"%s"},"tables":[{"name":"users","key":"id"}],"partitioning":{"kind":"range","ranges":[{"from":null,"to":null,"shard":"a"}]}}\n' \
    "$(url "$kind" a)" > "$dir/$kind-old.json"
  printf '{"shards":{"a":"%s","b":"%s"},"tables":[{"name":"users","key":"id"}],"partitioning":{"kind":"range","ranges":[{"from":null,"to":%s,"shard":"a"},{"from":%s,"to":null,"shard":"b"}]}}\n' \
    "$(url "$kind" a)" "$(url "$kind" b)" "$mid" "$mid" > "$dir/$kind-new.json"
  "$bin" plan --from "$dir/$kind-old.json" --to "$dir/$kind-new.json" -o "$dir/$kind-plan.json" > "$dir/$kind-plan.txt"

  say "$kind: reshard apply ($moved rows move)"
  t0=$(now); timed apply "$bin" apply "$dir/$kind-plan.json" --yes --catalog "$cat" --progress plain
  t1=$(now); echo "$t0 $t1" > "$dir/$kind-apply.t"
  job=$(awk '/^job / {print $2; exit}' "$dir/$kind-apply.out")
  [ -n "$job" ] || { say "$kind: no job id in apply's output"; cat "$dir/$kind-apply.out" >&2; exit 1; }
  "$bin" log "$job" --catalog "$cat" --format json > "$dir/$kind-events-apply.json"
  say "$kind: reshard verify"
  timed verify "$bin" verify "$job" --catalog "$cat" --progress plain
  "$bin" log "$job" --catalog "$cat" --format json > "$dir/$kind-events-verify.json"

  say "$kind: sha1sum scans of both sides"
  t0=$(now); sha_a=$(scan "$kind" a); t1=$(now); echo "$t0 $t1" > "$dir/$kind-scan-a.t"
  t0=$(now); sha_b=$(scan "$kind" b); t1=$(now); echo "$t0 $t1" > "$dir/$kind-scan-b.t"
  [ "$sha_a" = "$sha_b" ] || say "$kind: WARNING: sha1 of a's moved rows $sha_a != b's $sha_b"
  # The bulk copy reads a's moved rows, so it runs before `complete` deletes them.
  say "$kind: bulk copy into c"
  t0=$(now); bulk_copy "$kind"; t1=$(now); echo "$t0 $t1" > "$dir/$kind-bulk-copy.t"
  local c_rows; c_rows=$(count "$kind" c)
  [ "$c_rows" = "$moved" ] || say "$kind: WARNING: c holds $c_rows rows after the bulk copy, not $moved"

  say "$kind: reshard complete"
  timed complete "$bin" complete "$job" --catalog "$cat"
  "$bin" log "$job" --catalog "$cat" --format json > "$dir/$kind-events-all.json"
  local a_rows b_rows; a_rows=$(count "$kind" a); b_rows=$(count "$kind" b)
  [ "$a_rows" = "$((n - moved))" ] && [ "$b_rows" = "$moved" ] \
    || say "$kind: WARNING: after complete a holds $a_rows rows (expected $((n - moved))), b $b_rows (expected $moved)"
  say "$kind: bulk DELETE on c"
  t0=$(now); bulk_delete "$kind"; t1=$(now); echo "$t0 $t1" > "$dir/$kind-bulk-delete.t"

  python3 - "$dir" "$kind" "$n" "$moved" "$sha_a" "$sha_b" > "$dir/res-$kind.json" << 'EOF'
import json, re, sys
from datetime import datetime
d, kind, n, moved, sha_a, sha_b = sys.argv[1:]
p = lambda name: f"{d}/{kind}-{name}"
def tv(name):  # GNU time -v -> (wall s, peak RSS MB)
    text = open(p(name + ".time")).read()
    w = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", text).group(1).split(":")
    wall = sum(float(x) * 60 ** i for i, x in enumerate(reversed(w)))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1)) / 1024
    return wall, rss
def span(name):
    t0, t1 = map(float, open(p(name + ".t")).read().split())
    return t1 - t0
def events(name):
    return [json.loads(l) for l in open(p(f"events-{name}.json")) if l.strip()]
def at(e):
    return datetime.fromisoformat(e["at"].replace("Z", "+00:00")).timestamp()
warn = []
def first(evs, pred, what, last=False):
    hit = [e for e in evs if pred(e)]
    if not hit:
        warn.append(f"no {what} event")
        return None
    return at(hit[-1] if last else hit[0])
def diff(a, b):
    return None if a is None or b is None else round(b - a, 3)
ev = events("apply")
state = lambda s: lambda e: e["kind"] == "move_state" and e["detail"] == s
created = first(ev, lambda e: e["kind"] == "job_created", "job_created")
copying = first(ev, state("pending -> copying"), "`pending -> copying`")
copied = first(ev, state("copying -> copied"), "`copying -> copied`", last=True)
flips = [e for e in ev if e["kind"] == "flip"]
flip = max(map(at, flips)) if flips else None
if not flips:
    warn.append("no flip event")
fencing = first(ev, lambda e: state("catching_up -> fencing")(e) and (flip is None or at(e) <= flip),
                "`catching_up -> fencing`", last=True)
fence_ms = [int(m.group(1)) for e in flips for m in [re.search(r"fence (\d+) ms", e["detail"])] if m]
if flips and len(fence_ms) < len(flips):
    warn.append("flip event without `fence N ms`")
odd = {k: sum(e["kind"] == k for e in ev) for k in ("fence_aborted", "fence_lowered", "move_error")}
for k, c in odd.items():
    if c:
        warn.append(f"{c} {k} event(s) during apply")
# complete's own events: those after verify's; its verification ends at `dual_write -> completing`.
seen = max(e["id"] for e in events("verify"))
ce = [e for e in events("all") if e["id"] > seen]
c0 = at(ce[0]) if ce else None
completing = first(ce, lambda e: e["kind"] == "job_state" and e["detail"].endswith("-> completing"),
                   "`-> completing`")
completed = first(ce, lambda e: e["kind"] == "completed", "completed")
apply_s, apply_rss = tv("apply")
apply_t0, apply_t1 = map(float, open(p("apply.t")).read().split())
verify_s, verify_rss = tv("verify")
complete_s, complete_rss = tv("complete")
copy_s = diff(copying, copied)
bulk_copy = span("bulk-copy")
scan_a, scan_b = span("scan-a"), span("scan-b")
r = {
    "rows": int(n), "moved_rows": int(moved),
    "reshard": {
        "apply_s": apply_s, "before_copy_s": diff(created, copying), "copy_s": copy_s,
        "catch_up_verify_before_fence_s": diff(copied, fencing),
        "fencing_to_flip_s": diff(fencing, flip),
        # apply's wall time outside its events: from the process start to job_created, and from
        # its last event to its exit (by the clock, not by time -v)
        "start_to_job_created_s": diff(apply_t0, created), "last_event_to_exit_s": diff(at(ev[-1]), apply_t1),
        "fence_ms": max(fence_ms) if fence_ms else None,
        "copy_rows_per_s": round(int(moved) / copy_s) if copy_s else None,
        "verify_s": verify_s, "complete_s": complete_s,
        "complete_verify_s": diff(c0, completing), "complete_delete_s": diff(completing, completed),
        "peak_rss_mb": {"apply": round(apply_rss, 1), "verify": round(verify_rss, 1),
                        "complete": round(complete_rss, 1)},
    },
    "bulk": {
        "copy_s": round(bulk_copy, 3), "copy_rows_per_s": round(int(moved) / bulk_copy),
        "sha1sum_scan_s": round(scan_a + scan_b, 3), "sha1sum_scan_a_s": round(scan_a, 3),
        "sha1sum_scan_b_s": round(scan_b, 3), "sha1_match": sha_a == sha_b,
        "delete_s": round(span("bulk-delete"), 3),
    },
    "warnings": warn,
}
print(json.dumps(r))
EOF
  # Dropped now, not at exit: autovacuum / purge on these tables would take CPU from the next backend.
  drop "$kind"
}

for k in "${kinds[@]}"; do bench "$k"; done

python3 - "$dir" "$json" "${kinds[@]}" << 'EOF'
import json, sys
d, as_json, kinds = sys.argv[1], sys.argv[2], sys.argv[3:]
res = {k: json.load(open(f"{d}/res-{k}.json")) for k in kinds}
if as_json:
    print(json.dumps({"backends": res}, indent=2))
    sys.exit()
def num(v, fmt):
    return "" if v is None else format(v, fmt)
for i, k in enumerate(kinds):
    r, R, B = res[k], res[k]["reshard"], res[k]["bulk"]
    def row(label, rv, bv=None, fmt=".2f", ratio=True):
        q = bv / rv if ratio and rv and bv is not None else None
        print(f"{label:<46} | {num(rv, fmt):>10} | {num(bv, fmt):>11} | {num(q, '.2f'):>6}".rstrip())
    if i:
        print()
    print(f"{k}: {r['rows']} rows, {r['moved_rows']} moved (ratio = bulk s / reshard s)")
    print(f"{'step':<46} | {'reshard s':>10} | {'bulk path s':>11} | {'ratio':>6}")
    print(f"{'-' * 46}-+-{'-' * 10}-+-{'-' * 11}-+-{'-' * 6}")
    row("whole apply (vs bulk copy)", R["apply_s"], B["copy_s"])
    row("  of which preflight+counts (to job_created)", R["start_to_job_created_s"])
    row("  of which before the copy", R["before_copy_s"])
    row("  of which copy (vs bulk copy)", R["copy_s"], B["copy_s"])
    row("  of which catch-up+verify before the fence", R["catch_up_verify_before_fence_s"])
    row("  fence ms", R["fence_ms"], fmt="d")
    row("verify (vs sha1sum scan of both sides)", R["verify_s"], B["sha1sum_scan_s"])
    row("complete (vs DELETE)", R["complete_s"], B["delete_s"])
    row("  of which verify before deleting", R["complete_verify_s"])
    row("  of which delete + cleanup (vs DELETE)", R["complete_delete_s"], B["delete_s"])
    row("peak RSS MB (apply)", R["peak_rss_mb"]["apply"], fmt=".1f")
    row("copy rows/s", R["copy_rows_per_s"], B["copy_rows_per_s"], fmt="d", ratio=False)
    for w in r["warnings"] + ([] if B["sha1_match"] else ["sha1 of a's and b's moved rows differ"]):
        print(f"  note: {w}")
EOF
