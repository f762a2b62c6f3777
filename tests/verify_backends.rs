//! `reshard verify` against real databases on each backend, through the real binary: every
//! column type changed at one destination row is found with its exact primary key and column,
//! a deleted row is missing, an added row extra; `--repair` fixes them; equivalent forms of a
//! value (NaN, -0.0, JSON spacing and key order, CHAR padding, time zones, decimal scale) are
//! no mismatch; the same data gives the same checksums on every backend; a verification killed
//! with kill -9 (failpoint) resumes after its last chunk; `--audit` checks the final layout; a
//! ring move (rows routed in Rust, pages hashed in runs) verifies without any chunk read twice.

mod common;

use common::cluster::*;
use common::db::Kind;
use serde_json::{json, Value};

/// Columns of the test table (besides `id`), with what a test may set them to.
const COLS: [&str; 15] = [
    "i", "d", "f", "r", "s", "c", "b", "bo", "dt", "tm", "ts", "tz", "j", "u", "n",
];

fn ddl(kind: Kind, full: bool) -> String {
    let (cols, extra) = match kind {
        Kind::Postgres => (
            "id bigint PRIMARY KEY, i bigint, d numeric(12,4), f double precision, s text, \
             c char(8), b bytea, bo boolean, dt date, tm time, ts timestamp, tz timestamptz, \
             u uuid, n text",
            ", r real, j json",
        ),
        Kind::Mysql => (
            "id bigint PRIMARY KEY, i bigint, d decimal(12,4), f double, s varchar(64), \
             c char(8), b varbinary(64), bo tinyint(1), dt date, tm time(6), ts datetime(6), \
             tz timestamp(6) NULL, u uuid, n text",
            ", r float, j json",
        ),
        Kind::Sqlite => (
            "id integer PRIMARY KEY, i integer, d numeric, f real, s text, c char(8), b blob, \
             bo boolean, dt date, tm time, ts timestamp, tz timestamptz, u uuid, n text",
            ", r real, j json",
        ),
    };
    format!("CREATE TABLE t ({cols}{})", if full { extra } else { "" })
}

fn bytes(kind: Kind, hex: &str) -> String {
    match kind {
        Kind::Postgres => format!("decode('{hex}', 'hex')"),
        _ => format!("x'{hex}'"),
    }
}

fn boolean(kind: Kind, b: bool) -> String {
    match kind {
        Kind::Postgres => b.to_string(),
        _ => (b as u8).to_string(),
    }
}

fn insert_rows(c: &Cluster, shard: &str, ids: impl Iterator<Item = i64>, full: bool) {
    let k = c.kind;
    let mut values = Vec::new();
    for id in ids {
        let mut v = vec![
            id.to_string(),
            (id * 7).to_string(),
            format!("'{id}.5'"),
            format!("{}", id as f64 * 1.25),
            format!("'row {id} é'"),
            format!("'c{id}'"),
            bytes(k, &format!("00ff{:02x}", id % 256)),
            boolean(k, id % 2 == 0),
            format!("'2024-01-{:02}'", 1 + id % 28),
            "'10:11:12'".into(),
            "'2024-03-01 10:00:00'".into(),
            if k == Kind::Postgres {
                "'2024-03-01 10:00:00+00'".into()
            } else {
                "'2024-03-01 10:00:00'".into()
            },
            format!("'a0eebc99-9c0b-4ef8-bb6d-6bb9bd38{id:04x}'"),
            "NULL".into(),
        ];
        if full {
            v.push(format!("{}", id as f64 * 0.5));
            v.push(format!("'{{\"a\":{id},\"b\":[1,2]}}'"));
        }
        values.push(format!("({})", v.join(", ")));
    }
    let cols = if full {
        "id, i, d, f, s, c, b, bo, dt, tm, ts, tz, u, n, r, j"
    } else {
        "id, i, d, f, s, c, b, bo, dt, tm, ts, tz, u, n"
    };
    for chunk in values.chunks(200) {
        c.db(shard).exec_unguarded(&format!(
            "INSERT INTO t ({cols}) VALUES {}",
            chunk.join(", ")
        ));
    }
}

fn map(c: &Cluster, partitioning: Value) -> Value {
    let urls: serde_json::Map<String, Value> = c
        .shards
        .keys()
        .map(|s| (s.clone(), json!(c.db(s).url)))
        .collect();
    json!({"shards": urls, "tables": [{"name": "t", "key": "id"}], "partitioning": partitioning})
}

/// Two shards; keys 50..1000 move s0 -> s1; rows 1..=200 at s0; applied. Returns the job id.
fn setup(kind: Kind, tag: &str, full: bool) -> Option<(Cluster, String)> {
    setup_with(kind, tag, &ddl(kind, full), |c| {
        insert_rows(c, "s0", 1..=200, full)
    })
}

/// `setup` for any table `t` (created on both shards by `ddl`, filled at s0 by `fill`).
fn setup_with(
    kind: Kind,
    tag: &str,
    ddl: &str,
    fill: impl Fn(&Cluster),
) -> Option<(Cluster, String)> {
    let maps = (ranges(&["s0", "s1"], &[1000]), ranges(&["s0", "s1"], &[50]));
    setup_maps(kind, tag, ddl, fill, maps)
}

/// `setup_with` for any pair of partitionings of shards s0 and s1.
fn setup_maps(
    kind: Kind,
    tag: &str,
    ddl: &str,
    fill: impl Fn(&Cluster),
    (from, to): (Value, Value),
) -> Option<(Cluster, String)> {
    let c = Cluster::create(kind, tag, 2)?;
    for s in ["s0", "s1"] {
        c.db(s).exec(ddl);
    }
    fill(&c);
    let from = map(&c, from);
    let to = map(&c, to);
    let plan = c.write_plan("plan", &from, &to);
    let o = c.run(&[
        "apply",
        plan.to_str().unwrap(),
        "--yes",
        "--progress",
        "plain",
    ]);
    assert!(o.status.success(), "apply failed: {}", stderr(&o));
    let job = job_id(&o).expect("job id");
    Some((c, job))
}

fn verify(c: &Cluster, job: &str, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["verify", job, "--format", "json"];
    args.extend_from_slice(extra);
    let o = c.run(&args);
    let code = o.status.code().unwrap_or(-1);
    let v: Value = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(&o), stderr(&o)));
    (code, v)
}

fn table(report: &Value) -> &Value {
    &report[0]["tables"][0]
}

/// A different value for column `col` of row `id`, as SQL.
fn changed(kind: Kind, col: &str, id: i64) -> String {
    match col {
        "i" => "1".into(),
        "d" => format!("'{id}.5001'"),
        "f" => "0.1".into(),
        "r" => "0.25".into(),
        "s" => "'row changed'".into(),
        "c" => "'other'".into(),
        "b" => bytes(kind, "0100"),
        "bo" => boolean(kind, id % 2 != 0),
        "dt" => "'1999-12-31'".into(),
        "tm" => "'10:11:13'".into(),
        "ts" => "'2024-03-01 10:00:00.000001'".into(),
        "tz" => "'2024-03-02 10:00:00'".into(),
        "j" => "'{\"a\":0,\"b\":[1,2]}'".into(),
        "u" => "'b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'".into(),
        "n" => "'not null any more'".into(),
        other => panic!("no column {other}"),
    }
}

fn detects_every_difference(kind: Kind) {
    let Some((c, job)) = setup(kind, "vdiff", true) else {
        return;
    };
    let (code, r) = verify(&c, &job, &[]);
    assert_eq!(code, 0, "{kind:?}: a fresh copy verifies: {r}");
    assert_eq!(table(&r)["rows_source"], 151);
    assert_eq!(table(&r)["rows_destination"], 151);
    // On the fast read path already: a chunk whose encodings differed between the read paths
    // would only show here, as a second reading (which then matches).
    assert_eq!(table(&r)["chunks_reread"], 0, "{kind:?}: {r}");
    // One destination row per column, each with only that column changed.
    let mut want = Vec::new();
    for (n, col) in COLS.iter().enumerate() {
        let id = 60 + n as i64;
        c.db("s1").exec_unguarded(&format!(
            "UPDATE t SET {col} = {} WHERE id = {id}",
            changed(kind, col, id)
        ));
        want.push(json!({"pk": [id], "columns": [col]}));
    }
    c.db("s1").exec_unguarded("DELETE FROM t WHERE id = 150");
    insert_rows(&c, "s1", [500].into_iter(), true);
    // A destination row of a key that is not in the move is not this move's business.
    insert_rows(&c, "s1", [10].into_iter(), true);
    let (code, r) = verify(&c, &job, &["--max-listed", "100"]);
    assert_eq!(code, 3, "{kind:?}: mismatch exits 3: {r}");
    assert_eq!(r[0]["ok"], false);
    let t = table(&r);
    assert!(t["chunks_reread"].as_u64() > Some(0), "{r}");
    let mut got: Vec<Value> = t["differing"].as_array().unwrap().clone();
    got.sort_by_key(|d| d["pk"][0].as_i64());
    assert_eq!(got, want, "{kind:?}: differing rows and columns");
    assert_eq!(t["differing_count"], COLS.len());
    assert_eq!(t["missing"], json!([[150]]), "{kind:?}");
    assert_eq!(t["extra"], json!([[500]]), "{kind:?}");
    // Text output names them too.
    let o = c.run(&["verify", &job]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stdout(&o).contains("missing at destination: 1 (pk [150])"),
        "{}",
        stdout(&o)
    );
    // Repair: source wins, the extra row goes, and it verifies again.
    let (code, r) = verify(&c, &job, &["--repair"]);
    assert_eq!(code, 0, "{kind:?}: repaired: {r}");
    let (code, _) = verify(&c, &job, &[]);
    assert_eq!(code, 0);
    assert_eq!(
        c.db("s1").scalar("SELECT COUNT(*) FROM t WHERE id = 500"),
        "0"
    );
    assert_eq!(
        c.db("s1").scalar("SELECT COUNT(*) FROM t WHERE id = 10"),
        "1"
    );
}

#[test]
fn detects_every_difference_sqlite() {
    detects_every_difference(Kind::Sqlite);
}
#[test]
fn detects_every_difference_postgres() {
    detects_every_difference(Kind::Postgres);
}
#[test]
fn detects_every_difference_mysql() {
    detects_every_difference(Kind::Mysql);
}

/// A ring move: SQL cannot select its rows, so each source page holds rows that stay, routed
/// out in Rust, and the move's rows are hashed in runs. It verifies on the fast path, and a
/// changed destination row is still found.
fn ring_move(kind: Kind) {
    let maps = (ring("sha1", 8, &["s0"]), ring("sha1", 8, &["s0", "s1"]));
    let fill = |c: &Cluster| insert_rows(c, "s0", 1..=300, false);
    let Some((c, job)) = setup_maps(kind, "vring", &ddl(kind, false), fill, maps) else {
        return;
    };
    let (code, r) = verify(&c, &job, &["--chunk-rows", "40"]);
    assert_eq!(code, 0, "{kind:?}: {r}");
    let t = table(&r);
    let moved: i64 = c.db("s1").scalar("SELECT COUNT(*) FROM t").parse().unwrap();
    assert!(
        moved > 30 && moved < 270,
        "a share of the keys moves: {moved}"
    );
    assert_eq!(t["rows_source"], moved);
    assert_eq!(t["chunks_reread"], 0, "{kind:?}: {r}");
    let id = c.db("s1").scalar("SELECT MIN(id) FROM t");
    c.db("s1")
        .exec_unguarded(&format!("UPDATE t SET s = 'changed' WHERE id = {id}"));
    let (code, r) = verify(&c, &job, &["--chunk-rows", "40"]);
    assert_eq!(code, 3, "{kind:?}: {r}");
    let id: i64 = id.parse().unwrap();
    assert_eq!(
        table(&r)["differing"],
        json!([{"pk": [id], "columns": ["s"]}])
    );
}

#[test]
fn ring_move_sqlite() {
    ring_move(Kind::Sqlite);
}
#[test]
fn ring_move_postgres() {
    ring_move(Kind::Postgres);
}
#[test]
fn ring_move_mysql() {
    ring_move(Kind::Mysql);
}

/// Equivalent forms written at the destination: no mismatch.
fn no_false_mismatch(kind: Kind) {
    let Some((c, job)) = setup(kind, "vsame", true) else {
        return;
    };
    let d = c.db("s1");
    let s = c.db("s0");
    // -0.0 and 0.0 (documented: folded), on both sides of one row.
    s.exec_unguarded("UPDATE t SET f = 0 WHERE id = 61");
    d.exec_unguarded("UPDATE t SET f = -0.0 WHERE id = 61");
    match kind {
        Kind::Postgres => {
            s.exec_unguarded("UPDATE t SET f = 'NaN', r = 'NaN' WHERE id = 62");
            d.exec_unguarded("UPDATE t SET f = 'NaN'::float8, r = 'NaN' WHERE id = 62");
            // json (not jsonb) keeps its text: spacing and key order differ.
            d.exec_unguarded("UPDATE t SET j = '{ \"b\" : [1, 2.0],  \"a\" : 63 }' WHERE id = 63");
            d.exec_unguarded("UPDATE t SET c = 'c64     ' WHERE id = 64");
        }
        Kind::Sqlite => {
            d.exec_unguarded("UPDATE t SET j = '{ \"b\" : [1, 2.0],  \"a\" : 63 }' WHERE id = 63");
            d.exec_unguarded("UPDATE t SET c = 'c64    ' WHERE id = 64");
            // The same instant written with another offset, a decimal with another scale.
            d.exec_unguarded("UPDATE t SET tz = '2024-03-01 15:30:00+05:30' WHERE id = 65");
            d.exec_unguarded("UPDATE t SET d = '66.50000' WHERE id = 66");
            d.exec_unguarded("UPDATE t SET ts = '2024-03-01T10:00:00.000' WHERE id = 67");
        }
        Kind::Mysql => {
            d.exec_unguarded("UPDATE t SET c = 'c64   ' WHERE id = 64");
            d.exec_unguarded("UPDATE t SET d = 66.50 WHERE id = 66");
            // The same instant written in another session time zone.
            d.exec_unguarded(
                "SET time_zone = '+05:30'; UPDATE t SET tz = '2024-03-01 15:30:00' WHERE id = 65",
            );
        }
    }
    let (code, r) = verify(&c, &job, &[]);
    assert_eq!(
        code, 0,
        "{kind:?}: equivalent values reported as different: {r}"
    );
    assert_eq!(
        table(&r)["chunks_reread"],
        0,
        "{kind:?}: equivalent on the fast path too: {r}"
    );
    // The test can fail: a real change in the same run is still found.
    d.exec_unguarded("UPDATE t SET f = 1 WHERE id = 61");
    let (code, r) = verify(&c, &job, &[]);
    assert_eq!(code, 3, "{r}");
    assert_eq!(
        table(&r)["differing"],
        json!([{"pk": [61], "columns": ["f"]}])
    );
}

#[test]
fn no_false_mismatch_sqlite() {
    no_false_mismatch(Kind::Sqlite);
}
#[test]
fn no_false_mismatch_postgres() {
    no_false_mismatch(Kind::Postgres);
}
#[test]
fn no_false_mismatch_mysql() {
    no_false_mismatch(Kind::Mysql);
}

/// MariaDB's JSON is LONGTEXT with a `json_valid` CHECK, and it keeps the text as written: the
/// verify path must find such columns (declared `JSON`, or LONGTEXT with the CHECK on the column
/// or on the table) and compare them as JSON. Key order, spacing, `\u` escapes and `2.0` vs `2`
/// are no difference; a changed value is, with its column named.
#[test]
fn mariadb_json_compares_as_json() {
    let ddl = "CREATE TABLE t (id bigint PRIMARY KEY, j json, k longtext CHECK (json_valid(k)), \
               m longtext, CONSTRAINT m_is_json CHECK (JSON_VALID(m)))";
    let doc = |id: i64| format!(r#"'{{"a":{id},"b":[1,2],"c":{{"x":"é","y":null}}}}'"#);
    let Some((c, job)) = setup_with(Kind::Mysql, "vjson", ddl, |c| {
        let rows: Vec<String> = (1..=200)
            .map(|id| format!("({id}, {0}, {0}, {0})", doc(id)))
            .collect();
        c.db("s0")
            .exec_unguarded(&format!("INSERT INTO t VALUES {}", rows.join(", ")));
    }) else {
        return;
    };
    let d = c.db("s1");
    for (id, col) in [(60, "j"), (61, "k"), (62, "m")] {
        let same =
            format!(r#"'{{ "c" : {{"y": null, "x": "\\u00e9"}},  "b" : [1, 2.0], "a" : {id} }}'"#);
        d.exec_unguarded(&format!("UPDATE t SET {col} = {same} WHERE id = {id}"));
        assert_ne!(
            d.scalar(&format!("SELECT {col} FROM t WHERE id = {id}")),
            c.db("s0")
                .scalar(&format!("SELECT {col} FROM t WHERE id = {id}")),
            "the test needs different text for the same JSON"
        );
    }
    let (code, r) = verify(&c, &job, &[]);
    assert_eq!(
        code, 0,
        "the same JSON written differently is no difference: {r}"
    );
    d.exec_unguarded(r#"UPDATE t SET m = '{"a":63,"b":[1,2],"c":{"x":"é","y":0}}' WHERE id = 63"#);
    let (code, r) = verify(&c, &job, &[]);
    assert_eq!(code, 3, "{r}");
    assert_eq!(
        table(&r)["differing"],
        json!([{"pk": [63], "columns": ["m"]}]),
        "{r}"
    );
}

/// The same rows on SQLite, PostgreSQL and MariaDB: the same chunk checksums.
#[test]
fn same_checksums_on_every_backend() {
    let mut sums = Vec::new();
    for kind in Kind::ALL {
        let Some((c, job)) = setup(kind, "vsum", false) else {
            continue;
        };
        let (code, r) = verify(&c, &job, &["--chunk-rows", "40"]);
        assert_eq!(code, 0, "{r}");
        sums.push((
            kind,
            table(&r)["source_checksum"].clone(),
            table(&r)["chunks"].clone(),
        ));
    }
    for w in sums.windows(2) {
        assert_eq!(w[0].1, w[1].1, "{:?} vs {:?}", w[0].0, w[1].0);
        assert_eq!(w[0].2, w[1].2);
    }
}

/// kill -9 (failpoint) after the third chunk; the next run continues from the fourth.
#[test]
fn killed_verification_resumes_from_its_last_chunk() {
    let Some((c, job)) = setup(Kind::Sqlite, "vkill", false) else {
        return;
    };
    let o = c
        .cmd(&["verify", &job, "--chunk-rows", "20"])
        .env("RESHARD_FAILPOINT", "verify_chunk:3")
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "the failpoint must abort: {}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("failpoint verify_chunk:3"),
        "{}",
        stderr(&o)
    );
    let (code, r) = verify(&c, &job, &["--chunk-rows", "20"]);
    assert_eq!(code, 0, "{r}");
    let t = table(&r);
    // The range filter is pushed down: the 151 moving rows in chunks of 20, 7 full chunks and
    // the open-ended last.
    assert_eq!(t["chunks"], 8);
    assert_eq!(
        t["chunks_computed"], 5,
        "resumed after chunk 3, not restarted: {r}"
    );
    assert_eq!(t["rows_source"], 151);
    // A finished pass: the next verification is a new full pass.
    let (_, r) = verify(&c, &job, &["--chunk-rows", "20"]);
    assert_eq!(table(&r)["chunks_computed"], 8);
}

/// After "completion" (moved rows removed from their old owner): every row on its owner, the
/// count as recorded at job start; a stray row or a lost row is reported (exit 3).
fn audit(kind: Kind) {
    let Some((c, job)) = setup(kind, "vaudit", false) else {
        return;
    };
    let o = c.run(&["verify", &job, "--audit"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "moved rows still at s0: {}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("151 misplaced"), "{}", stdout(&o));
    c.db("s0").exec_unguarded("DELETE FROM t WHERE id >= 50");
    let o = c.run(&["verify", &job, "--audit", "--format", "json"]);
    let r: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(o.status.code(), Some(0), "{r}");
    assert_eq!(r["tables"][0]["rows"], 200);
    assert_eq!(r["tables"][0]["expected_rows"], 200);
    // A row of key 70 (owner s1) also at s0, and a lost row: both found.
    insert_rows(&c, "s0", [70].into_iter(), false);
    c.db("s1").exec_unguarded("DELETE FROM t WHERE id = 80");
    let o = c.run(&["verify", &job, "--audit", "--format", "json"]);
    let r: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(o.status.code(), Some(3), "{r}");
    assert_eq!(
        r["tables"][0]["misplaced"],
        json!([{"shard": "s0", "key": 70, "rows": 1, "owner": "s1"}])
    );
    assert_eq!(r["tables"][0]["rows"], 200);
    // With a writer's tally instead of the recorded count.
    let o = c.run(&["verify", &job, "--audit", "--expect-rows", "t=200"]);
    assert_eq!(o.status.code(), Some(3));
    c.db("s0").exec_unguarded("DELETE FROM t WHERE id = 70");
    let o = c.run(&["verify", &job, "--audit", "--expect-rows", "t=199"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn audit_sqlite() {
    audit(Kind::Sqlite);
}
#[test]
fn audit_postgres() {
    audit(Kind::Postgres);
}
#[test]
fn audit_mysql() {
    audit(Kind::Mysql);
}

/// `--progress json` (stderr) counts the rows verified per move and ends with the move's
/// verdict; stdout holds only the report.
#[test]
fn progress_counts_rows_verified() {
    let Some((c, job)) = setup(Kind::Sqlite, "vprog", false) else {
        return;
    };
    let o = c.run(&[
        "verify",
        &job,
        "--format",
        "json",
        "--progress",
        "json",
        "--chunk-rows",
        "40",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_str(&stdout(&o)).expect("stdout is the JSON report");
    assert_eq!(table(&report)["rows_source"], 151);
    let events: Vec<Value> = stderr(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let last = events
        .iter()
        .rev()
        .find(|e| e["event"] == "move_state")
        .expect("a move_state event");
    assert_eq!(last["state"], "match", "{last}");
    assert_eq!(last["rows_verified"], 151, "{last}");
    let done = events.last().expect("events");
    assert_eq!(done["event"], "progress");
    assert_eq!(done["rows_verified"], 151, "{done}");
    assert!(done.get("rows_copied").is_none(), "{done}");
}

#[test]
fn bad_input_exits_2() {
    let Some((c, job)) = setup(Kind::Sqlite, "vbad", false) else {
        return;
    };
    assert_eq!(
        c.run(&["verify", &job, "--move", "m99"]).status.code(),
        Some(2)
    );
    assert_eq!(c.run(&["verify", "nojob"]).status.code(), Some(2));
    assert_eq!(
        c.run(&["verify", &job, "--audit", "--expect-rows", "t"])
            .status
            .code(),
        Some(2)
    );
}
