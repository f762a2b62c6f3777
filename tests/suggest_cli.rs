//! `reshard suggest` end to end: skewed data on real shards (SQLite, PostgreSQL, MariaDB), the
//! real binary, then `reshard plan` on the map it wrote. And bad input: exit 2, nothing written.

mod common;

use std::path::Path;

use common::db::{Kind, TestDb};
use common::suggest::{load, reshard, text, write_map};
use serde_json::{json, Value};

/// The guide's hot spot: the newest ids pile up at the top of the last range.
fn skewed_ids() -> [Vec<i64>; 3] {
    let s0 = (0..400).map(|i| i * 250).collect();
    let s1 = (0..400).map(|i| 100_000 + i * 250).collect();
    let mut s2: Vec<i64> = (0..100).map(|i| 200_000 + i * 7_000).collect();
    s2.extend(900_000..903_200);
    [s0, s1, s2]
}

fn split_hot_range(kind: Kind) {
    let dbs: Vec<TestDb> = match (0..3)
        .map(|i| TestDb::create(kind, &format!("suggest_s{i}")))
        .collect::<Option<Vec<_>>>()
    {
        Some(d) => d,
        None => return, // skipped: the server is not reachable (the harness said so)
    };
    let ids = skewed_ids();
    for (db, ids) in dbs.iter().zip(&ids) {
        load(db, ids);
    }
    if kind == Kind::Postgres {
        // pg_stats then has a histogram, and suggest takes the approximate path.
        dbs[2].exec("ANALYZE users");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (from, to, plan) = (
        dir.path().join("map.json"),
        dir.path().join("new.json"),
        dir.path().join("plan.json"),
    );
    write_map(
        &from,
        &[dbs[0].url.clone(), dbs[1].url.clone(), dbs[2].url.clone()],
    );
    let sqlite_before = sqlite_bytes(&dbs[2]);
    // A password in an --add URL is never printed (the new shard is not connected to).
    let add = "s3=postgres://app:s3cret-pw@127.0.0.1:5432/newshard";
    let args = [
        "suggest",
        "--from",
        from.to_str().expect("utf-8"),
        "--max-share",
        "0.5",
        "--add",
        add,
        "-o",
        to.to_str().expect("utf-8"),
    ];
    let o = reshard(&[&args[..], &["--format", "json"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: Value = serde_json::from_slice(&o.stdout).expect("report JSON");
    let split = &report["splits"][0];
    assert_eq!(split["new_shard"], "s3", "{report:#}");
    let at = split["at"].as_i64().expect("integer split key");
    // Counted on the shard itself: the two halves are within 5% of each other.
    let q = |sql: &str| dbs[2].scalar(sql).parse::<f64>().expect("count");
    let lower = q(&format!("SELECT COUNT(*) FROM users WHERE id < {at}"));
    let upper = q(&format!("SELECT COUNT(*) FROM users WHERE id >= {at}"));
    assert!(
        (lower - upper).abs() / lower.max(upper) <= 0.05,
        "{lower} / {upper}"
    );
    // The key midpoint, shown for contrast, is badly unbalanced.
    let mid = &split["midpoint"];
    let (a, b) = (
        mid["rows_lower"].as_f64().expect("rows"),
        mid["rows_upper"].as_f64().expect("rows"),
    );
    assert!(a.min(b) / a.max(b) < 0.1, "{mid}");
    let expected = if kind == Kind::Postgres {
        "histogram"
    } else {
        "exact"
    };
    assert_eq!(report["quantiles"]["users"], expected, "{report:#}");
    assert_eq!(report["reached_target"], true);

    // The text report says why, and never prints the password.
    let o = reshard(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let shown = text(&o);
    assert!(shown.contains("for contrast, the key midpoint"), "{shown}");
    assert!(!shown.contains("s3cret-pw"), "{shown}");

    plan_moves_upper_half(&from, &to, &plan);
    // Nothing was written to the shards.
    assert_eq!(sqlite_bytes(&dbs[2]), sqlite_before);
    assert_eq!(q("SELECT COUNT(*) FROM users"), 3_300.0);
}

/// reshard plan accepts the map: one move, s2 -> s3, of the upper half.
fn plan_moves_upper_half(from: &Path, to: &Path, plan: &Path) {
    let o = reshard(&[
        "plan",
        "--from",
        from.to_str().expect("utf-8"),
        "--to",
        to.to_str().expect("utf-8"),
        "-o",
        plan.to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let p: Value =
        serde_json::from_str(&std::fs::read_to_string(plan).expect("plan")).expect("plan JSON");
    let moves = p["moves"].as_array().expect("moves");
    assert_eq!(moves.len(), 1, "{p:#}");
    assert_eq!(
        (
            moves[0]["source"].as_str(),
            moves[0]["destination"].as_str()
        ),
        (Some("s2"), Some("s3"))
    );
}

/// The SQLite file's bytes (None for a server database).
fn sqlite_bytes(db: &TestDb) -> Option<Vec<u8>> {
    let path = db.url.strip_prefix("sqlite://")?;
    std::fs::read(path).ok()
}

#[test]
fn sqlite_hot_range_is_split_at_its_median() {
    split_hot_range(Kind::Sqlite);
}

#[test]
fn postgres_hot_range_is_split_at_its_median() {
    split_hot_range(Kind::Postgres);
}

#[test]
fn mysql_hot_range_is_split_at_its_median() {
    split_hot_range(Kind::Mysql);
}

#[test]
fn bad_input_exits_2_naming_every_problem_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let from = dir.path().join("bad.json");
    let to = dir.path().join("new.json");
    std::fs::write(
        &from,
        r#"{"shards": {"s0": "sqlite://a.db", "s1": "sqlite://b.db"},
            "tables": [{"name": "users", "key": "id"}],
            "partitioning": {"kind": "range", "ranges": [
                {"from": null, "to": 10, "shard": "s0"},
                {"from": 20, "to": null, "shard": "s9"}]}}"#,
    )
    .expect("write");
    let o = reshard(&[
        "suggest",
        "--from",
        from.to_str().expect("utf-8"),
        "--max-share",
        "1.5",
        "--add",
        "nourl",
        "-o",
        to.to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let label = from.display().to_string();
    assert!(
        err.contains(&format!(
            "{label}: partitioning.ranges[1].shard: unknown shard \"s9\""
        )),
        "{err}"
    );
    assert!(err.contains("--add[0]: expected NAME=URL"), "{err}");
    assert!(!to.exists(), "nothing may be written");

    // A valid map with a bad option: the option is named, nothing is written either.
    let good = dir.path().join("good.json");
    std::fs::write(
        &good,
        r#"{"shards": {"s0": "sqlite://a.db"}, "tables": [{"name": "users", "key": "id"}],
            "partitioning": {"kind": "range", "ranges": [{"from": null, "to": null, "shard": "s0"}]}}"#,
    )
    .expect("write");
    let o = reshard(&[
        "suggest",
        "--from",
        good.to_str().expect("utf-8"),
        "--max-share",
        "0",
        "--to-kind",
        "ring",
        "-o",
        to.to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--max-share: 0 is not a share"), "{err}");
    assert!(err.contains("--to-kind"), "{err}");
    assert!(!to.exists(), "nothing may be written");
}

/// A ring of 4 SQLite shards x 8 vnodes holding the keys it routes to each: suggest brings the
/// largest share under the target, and `plan` of its map moves no more than the report said.
#[test]
fn sqlite_ring_grows_under_the_target() {
    let Some(dbs) = (0..5)
        .map(|i| TestDb::create(Kind::Sqlite, &format!("suggest_ring{i}")))
        .collect::<Option<Vec<_>>>()
    else {
        return;
    };
    let names = ["s0", "s1", "s2", "s3"];
    let map = json!({
        "shards": {"s0": dbs[0].url, "s1": dbs[1].url, "s2": dbs[2].url, "s3": dbs[3].url},
        "tables": [{"name": "users", "key": "id"}],
        "partitioning": {"kind": "ring", "hash": "sha1", "vnodes": 8, "nodes": names}
    });
    let parsed = reshard::Map::from_value(&map, "ring.json").expect("valid map");
    let router = parsed.compile();
    let mut per: Vec<Vec<i64>> = vec![Vec::new(); 4];
    for k in 0..8_000i64 {
        let i = router.owner_index(&reshard::Key::Int(k)).expect("routes");
        let shard = &router.shards[i];
        per[names.iter().position(|n| n == shard).expect("a node")].push(k);
    }
    for (db, ids) in dbs.iter().zip(&per) {
        load(db, ids);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (from, to) = (dir.path().join("ring.json"), dir.path().join("new.json"));
    std::fs::write(&from, serde_json::to_string_pretty(&map).expect("json")).expect("write");
    let add = format!("s4={}", dbs[4].url);
    let o = reshard(&[
        "suggest",
        "--from",
        from.to_str().expect("utf-8"),
        "--max-share",
        "0.24",
        "--add",
        &add,
        "-o",
        to.to_str().expect("utf-8"),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: Value = serde_json::from_slice(&o.stdout).expect("report JSON");
    assert_eq!(report["reached_target"], true, "{report:#}");
    let max_share = |side: &str| {
        report[side]
            .as_array()
            .expect("shares")
            .iter()
            .map(|r| r["share"].as_f64().expect("share"))
            .fold(0.0, f64::max)
    };
    assert!(
        max_share("before") > 0.24,
        "the ring must start imbalanced: {report:#}"
    );
    assert!(max_share("after") <= 0.24, "{report:#}");
    let o = reshard(&[
        "plan",
        "--from",
        from.to_str().expect("utf-8"),
        "--to",
        to.to_str().expect("utf-8"),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let plan: Value = serde_json::from_slice(&o.stdout).expect("plan JSON");
    let planned = plan["summary"]["moved_fraction"]
        .as_f64()
        .expect("fraction");
    let said = report["moved_fraction"].as_f64().expect("fraction");
    assert!(planned <= said + 1e-12, "plan {planned} > report {said}");
}
