//! `reshard suggest` on what the servers measure besides rows: write rates sampled while a
//! writer works on one shard (PostgreSQL; MariaDB with userstat or performance_schema on, on a
//! test's own server), their absence said where there are none, `--remove` of a range shard, and
//! text keys ordered bytewise (as the map compares them) under case-insensitive collations.

mod common;

use std::path::{Path, PathBuf};

use common::db::{Kind, TestDb};
use common::private::PrivateMariadb;
use common::suggest::{load, reshard, text, write_map, Writer};
use serde_json::{json, Value};

/// Three range shards of 300 ids each, and the map of them.
fn three_shards(kind: Kind, server: Option<String>, dir: &Path) -> Option<(Vec<TestDb>, PathBuf)> {
    let dbs = (0..3)
        .map(|i| TestDb::create_on(kind, server.clone(), &format!("suggest_w{i}")))
        .collect::<Option<Vec<_>>>()?;
    for (i, db) in dbs.iter().enumerate() {
        let base = i as i64 * 100_000;
        load(db, &(0..300).map(|k| base + k * 10).collect::<Vec<_>>());
    }
    let from = dir.join("map.json");
    write_map(
        &from,
        &[dbs[0].url.clone(), dbs[1].url.clone(), dbs[2].url.clone()],
    );
    Some((dbs, from))
}

fn suggest(from: &Path, dir: &Path, extra: &[&str]) -> std::process::Output {
    let to = dir.join("new.json");
    let from = from.to_str().expect("utf-8");
    let add = format!("s3=sqlite://{}", dir.join("s3.db").display());
    let args = [
        "suggest",
        "--from",
        from,
        "--add",
        &add,
        "-o",
        to.to_str().expect("utf-8"),
    ];
    reshard(&[&args[..], extra].concat())
}

fn shard<'a>(report: &'a Value, side: &str, name: &str) -> &'a Value {
    let rows = report[side].as_array().expect("shard rows");
    rows.iter()
        .find(|r| r["shard"] == name)
        .expect("the shard is listed")
}

/// A writer on s1 during the window: s1's rate is above zero, the idle shards' are zero, and
/// `--weigh writes` splits s1 although every shard holds the same rows.
fn hot_shard_by_writes(kind: Kind, server: Option<String>, source: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((dbs, from)) = three_shards(kind, server, dir.path()) else {
        return;
    };
    let writer = Writer::start(&dbs[1], (0..300).map(|k| 100_000 + k * 10).collect());
    let args = [
        "--sample",
        "2s",
        "--weigh",
        "writes",
        "--max-share",
        "0.5",
        "--format",
        "json",
    ];
    let o = suggest(&from, dir.path(), &args);
    let written = writer.stop();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: Value = serde_json::from_slice(&o.stdout).expect("report JSON");
    let rate = |s: &str| shard(&report, "before", s)["writes_per_second"].as_f64();
    assert!(
        rate("s1").is_some_and(|r| r > 0.0),
        "{report:#}\n{written} written"
    );
    assert_eq!(
        (rate("s0"), rate("s2")),
        (Some(0.0), Some(0.0)),
        "{report:#}"
    );
    assert_eq!(report["writes_sources"]["s1"], source, "{report:#}");
    assert_eq!(report["weigh"], "writes");
    assert_eq!(shard(&report, "before", "s1")["share"], 1.0, "{report:#}");
    // Rows alone would see three even shards; writes make s1 the one to split.
    assert_eq!(report["splits"][0]["shard"], "s1", "{report:#}");
    assert_eq!(report["splits"][0]["new_shard"], "s3");
    assert_eq!(report["reached_target"], true, "{report:#}");
}

#[test]
fn postgres_write_rates_pick_the_hot_shard() {
    hot_shard_by_writes(
        Kind::Postgres,
        Kind::Postgres.server_url(),
        "pg_stat_user_tables",
    );
}

/// The same on a test's own MariaDB started with `option` (the shared one is never changed).
fn on_private_mariadb(option: &str, source: &str) {
    if let Some(server) = PrivateMariadb::start_with(&[option]) {
        hot_shard_by_writes(Kind::Mysql, Some(server.url.clone()), source);
    }
}

#[test]
fn mariadb_userstat_write_rates_pick_the_hot_shard() {
    on_private_mariadb("--userstat=1", "information_schema.TABLE_STATISTICS");
}

#[test]
fn mariadb_performance_schema_write_rates_pick_the_hot_shard() {
    let source = "performance_schema.table_io_waits_summary_by_table";
    on_private_mariadb("--performance-schema=ON", source);
}

/// Where the server keeps no counters: the report says so per shard, and `--weigh writes` exits
/// 2 naming each shard and the reason, writing nothing.
fn no_write_rates(kind: Kind, why: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((_dbs, from)) = three_shards(kind, kind.server_url(), dir.path()) else {
        return;
    };
    let o = suggest(&from, dir.path(), &["--sample", "1s", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: Value = serde_json::from_slice(&o.stdout).expect("report JSON");
    for s in ["s0", "s1", "s2"] {
        assert_eq!(report["writes_unavailable"][s], why, "{report:#}");
        assert!(shard(&report, "before", s)
            .get("writes_per_second")
            .is_none());
    }
    std::fs::remove_file(dir.path().join("new.json")).expect("the map was written");
    let o = suggest(&from, dir.path(), &["--sample", "1s", "--weigh", "writes"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--weigh writes: not measured on every shard"),
        "{err}"
    );
    assert!(
        err.contains(&format!("s0 ({why}), s1 ({why}), s2 ({why})")),
        "{err}"
    );
    assert!(
        !dir.path().join("new.json").exists(),
        "nothing may be written"
    );
}

#[test]
fn sqlite_has_no_write_rates_and_says_so() {
    no_write_rates(
        Kind::Sqlite,
        "write rate not available: SQLite keeps no write counters",
    );
}

/// The shared MariaDB: as it is configured (never changed here), rates or their absence.
#[test]
fn mariadb_shared_server_reports_what_it_keeps() {
    let Some(db) = TestDb::create(Kind::Mysql, "suggest_vars") else {
        return;
    };
    let on = |v: &str| {
        let rows = db.query(&format!("SHOW GLOBAL VARIABLES LIKE '{v}'"));
        rows.first()
            .is_some_and(|r| r[1].eq_ignore_ascii_case("on"))
    };
    match (on("userstat"), on("performance_schema")) {
        (false, false) => no_write_rates(
            Kind::Mysql,
            "write rate not available (userstat and performance_schema are off)",
        ),
        (true, _) => hot_shard_by_writes(
            Kind::Mysql,
            Kind::Mysql.server_url(),
            "information_schema.TABLE_STATISTICS",
        ),
        (false, true) => eprintln!("performance_schema on: covered by the private server's test"),
    }
}

/// `--remove s1`: its range goes to the colder neighbour, and `reshard plan` of the new map moves
/// exactly s1's rows there and nothing else.
#[test]
fn sqlite_remove_merges_into_the_colder_neighbour_and_plan_moves_only_its_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((dbs, from)) = three_shards(Kind::Sqlite, None, dir.path()) else {
        return;
    };
    // s2 is the hotter neighbour by rows. By the default target over the two shards left
    // (62.5%) the merge (66.5%) is refused, saying why.
    let o = suggest(&from, dir.path(), &["--sample", "0s", "--remove", "s1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("above the target of 62.5%"), "{err}");
    dbs[2].exec("INSERT INTO users (id, name) VALUES (900000, 'x'), (900001, 'y')");
    let o = suggest(
        &from,
        dir.path(),
        &[
            "--sample",
            "0s",
            "--remove",
            "s1",
            "--max-share",
            "0.7",
            "--format",
            "json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: Value = serde_json::from_slice(&o.stdout).expect("report JSON");
    assert_eq!(report["merges"][0]["into"], "s0", "{report:#}");
    assert_eq!(report["rows_moved"], 300);
    assert_eq!(report["removed_shards"], json!(["s1"]));
    let o = reshard(&[
        "plan",
        "--from",
        from.to_str().expect("utf-8"),
        "--to",
        dir.path().join("new.json").to_str().expect("utf-8"),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let plan: Value = serde_json::from_slice(&o.stdout).expect("plan JSON");
    let moves = plan["moves"].as_array().expect("moves");
    assert_eq!(moves.len(), 1, "{plan:#}");
    assert_eq!(
        (&moves[0]["source"], &moves[0]["destination"]),
        (&json!("s1"), &json!("s0"))
    );
    let segs = moves[0]["segments"]["ranges"]
        .as_array()
        .expect("key intervals");
    // The rows each shard holds inside the moving intervals: all of s1's, none of the others'.
    let inside = |db: &TestDb| -> i64 {
        let cond: Vec<String> = segs
            .iter()
            .map(|s| {
                let lo = s["from"]
                    .as_i64()
                    .map_or("1=1".into(), |v| format!("id >= {v}"));
                let hi = s["to"]
                    .as_i64()
                    .map_or("1=1".into(), |v| format!("id < {v}"));
                format!("({lo} AND {hi})")
            })
            .collect();
        let sql = format!("SELECT COUNT(*) FROM users WHERE {}", cond.join(" OR "));
        db.scalar(&sql).parse().expect("count")
    };
    assert_eq!(
        (inside(&dbs[0]), inside(&dbs[1]), inside(&dbs[2])),
        (0, 300, 0),
        "{plan:#}"
    );
    assert_eq!(plan["summary"]["removed_shards"], json!(["s1"]));
}

/// Keys whose case-insensitive order differs from the bytewise one: 1,000 starting with a capital
/// letter, 1,000 with a small one. Bytewise every capital comes first.
fn mixed_case_keys() -> Vec<String> {
    let mut keys = Vec::new();
    for i in 0..1000u32 {
        keys.push(format!("{}{i:04}", char::from(b'A' + (i % 26) as u8)));
        keys.push(format!(
            "{}{:04}",
            char::from(b'a' + (i % 26) as u8),
            1000 + i
        ));
    }
    keys
}

/// A text-keyed range under the server's case-insensitive collation: the split key halves its
/// rows within 5% in the map's (bytewise) order.
fn text_keys_split_bytewise(kind: Kind) {
    let Some(db) = TestDb::create(kind, "suggest_text") else {
        return;
    };
    let collate = match kind {
        Kind::Postgres => " COLLATE \"en-x-icu\"",
        Kind::Sqlite => " COLLATE NOCASE",
        Kind::Mysql => "", // the database's utf8mb4_general_ci
    };
    db.exec(&format!(
        "CREATE TABLE users (id VARCHAR(20){collate} PRIMARY KEY, name VARCHAR(40) NOT NULL)"
    ));
    let keys = mixed_case_keys();
    let values: Vec<String> = keys.iter().map(|k| format!("('{k}', 'n')")).collect();
    db.exec(&format!(
        "INSERT INTO users (id, name) VALUES {}",
        values.join(", ")
    ));
    if kind == Kind::Postgres {
        db.exec("ANALYZE users");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let from = dir.path().join("map.json");
    let map = json!({
        "shards": {"s0": db.url},
        "tables": [{"name": "users", "key": "id"}],
        "partitioning": {"kind": "range", "ranges": [{"from": null, "to": "~", "shard": "s0"},
            {"from": "~", "to": null, "shard": "s0"}]}
    });
    std::fs::write(&from, map.to_string()).expect("write map");
    let args = ["--sample", "0s", "--max-share", "0.6", "--format", "json"];
    let o = suggest(&from, dir.path(), &args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: Value = serde_json::from_slice(&o.stdout).expect("report JSON");
    let at = report["splits"][0]["at"]
        .as_str()
        .expect("a text split key");
    let below = keys.iter().filter(|k| k.as_str() < at).count() as f64;
    let above = keys.len() as f64 - below;
    assert!(
        (below - above).abs() / below.max(above) <= 0.05,
        "split at {at}: {below} / {above}"
    );
    assert_eq!(
        report["splits"][0]["rows_lower"].as_f64(),
        Some(below),
        "{report:#}"
    );
    if kind == Kind::Postgres {
        // pg_stats orders by the column's collation: the exact pass is used, and said so.
        assert_eq!(report["quantiles"]["users"], "exact", "{report:#}");
        let notes = report["notes"].to_string();
        assert!(notes.contains("is not collated"), "{notes}");
    }
}

#[test]
fn postgres_text_keys_split_bytewise() {
    text_keys_split_bytewise(Kind::Postgres);
}

#[test]
fn mysql_text_keys_split_bytewise() {
    text_keys_split_bytewise(Kind::Mysql);
}

#[test]
fn sqlite_text_keys_split_bytewise() {
    text_keys_split_bytewise(Kind::Sqlite);
}
