//! `reshard route --catalog` through the real binary: the live owner and version per key,
//! before any flip, after one flip, and after completion.

use std::process::{Command, Output};

use reshard::catalog::{map_fingerprint, Catalog, NewJob};
use reshard::map::{Key, Map};
use reshard::Plan;
use serde_json::json;
use sqlx::Connection;

const BIN: &str = env!("CARGO_BIN_EXE_reshard");

fn map(shards: &[&str]) -> Map {
    let urls: serde_json::Map<String, serde_json::Value> = shards
        .iter()
        .map(|s| (s.to_string(), json!(format!("sqlite:///tmp/{s}.db"))))
        .collect();
    Map::from_value(
        &json!({
            "shards": urls,
            "tables": [{"name": "users", "key": "id"}],
            "partitioning": {"kind": "ring", "hash": "sha1", "vnodes": 16, "nodes": shards},
        }),
        "map",
    )
    .unwrap()
}

fn route(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("route")
        .args(args)
        .env_remove("RESHARD_CATALOG")
        .output()
        .unwrap()
}

const KEYS: std::ops::Range<i64> = -20..200;

fn key_args() -> Vec<String> {
    KEYS.map(|k| k.to_string()).collect()
}

/// (key, shard, version) from `--format json` (one object per line).
fn parse_json(o: &Output) -> Vec<(i64, String, i64)> {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["key"].as_i64().unwrap(),
                v["shard"].as_str().unwrap().to_string(),
                v["version"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn sql(url: &str, stmts: &[String]) {
    let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
    let mut tx = c.begin().await.unwrap();
    for s in stmts {
        sqlx::query(s).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn route_catalog_follows_flips_and_completion() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("catalog.db").display());
    let (from, to) = (map(&["a", "b", "c"]), map(&["a", "b", "c", "d", "e"]));
    let plan: Plan = reshard::planner::plan(&from, &to).unwrap();
    assert!(plan.moves.len() >= 2);
    let cat = Catalog::open_rw(&url).await.unwrap();
    cat.create_job(NewJob {
        id: "j1",
        plan_fingerprint: &plan.fingerprint,
        plan_json: &plan.to_json(),
        options_json: "{}",
        from: &plan.from,
        tables: &["users".to_string()],
        row_counts: &[],
        moves: plan
            .moves
            .iter()
            .map(|m| (m.id.clone(), m.source.clone(), m.destination.clone(), 0, 0))
            .collect(),
    })
    .await
    .unwrap();
    cat.close().await;
    let (fp, tp) = (from.compile(), to.compile());
    let args = key_args();
    let mut argv: Vec<&str> = vec!["--catalog", &url, "--format", "json"];
    argv.extend(args.iter().map(String::as_str));

    // Before any flip: the old owner, version 1.
    let got = parse_json(&route(&argv));
    assert_eq!(got.len(), args.len());
    for (k, shard, version) in &got {
        assert_eq!(shard, fp.owner(&Key::Int(*k)).unwrap(), "key {k}");
        assert_eq!(*version, 1);
    }

    // One flip (what cutover commits in one transaction): that move's keys change owner.
    let m = &plan.moves[0];
    sql(
        &url,
        &[
            format!("UPDATE moves SET flipped = 1 WHERE move_id = '{}'", m.id),
            "UPDATE routing SET version = version + 1".into(),
        ],
    )
    .await;
    let got = parse_json(&route(&argv));
    let mut moved = 0;
    for (k, shard, version) in &got {
        let key = Key::Int(*k);
        let (old, new) = (fp.owner(&key).unwrap(), tp.owner(&key).unwrap());
        let want = if old == m.source && new == m.destination {
            moved += 1;
            new
        } else {
            old
        };
        assert_eq!(shard, want, "key {k}");
        assert_eq!(*version, 2);
    }
    assert!(moved > 0, "no key of {} among the test keys", m.id);

    // The text form: KEY<TAB>SHARD<TAB>VERSION, in argument order.
    let o = route(&["--catalog", &url, "7", "-3"]);
    assert_eq!(o.status.code(), Some(0));
    let want: String = [7i64, -3]
        .iter()
        .map(|k| {
            let s = &got.iter().find(|g| g.0 == *k).unwrap().1;
            format!("{k}\t{s}\t2\n")
        })
        .collect();
    assert_eq!(String::from_utf8(o.stdout).unwrap(), want);

    // Completion: the catalog map becomes `to`, the version moves, the job no longer routes.
    sql(
        &url,
        &[
            "UPDATE moves SET flipped = 1".into(),
            "UPDATE jobs SET state = 'completed'".into(),
            format!(
                "UPDATE routing SET version = version + 1, map_json = '{}', fingerprint = '{}'",
                to.canonical_json().replace('\'', "''"),
                map_fingerprint(&to)
            ),
        ],
    )
    .await;
    for (k, shard, version) in parse_json(&route(&argv)) {
        assert_eq!(shard, tp.owner(&Key::Int(k)).unwrap(), "key {k}");
        assert_eq!(version, 3);
    }
}

#[test]
fn route_catalog_refuses_a_missing_catalog_without_creating_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.db");
    let url = format!("sqlite://{}", path.display());
    let o = route(&["--catalog", &url, "1"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!path.exists());
}

/// `route` without --map finds its catalog as every command does: RESHARD_CATALOG, else
/// sqlite://reshard.db in the working directory; --map wins over both.
#[tokio::test]
async fn regression_route_ignored_reshard_catalog_and_the_default_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    // Named as the default catalog, so that one file serves both ways of finding it.
    let url = format!("sqlite://{}", dir.path().join("reshard.db").display());
    let from = map(&["a", "b", "c"]);
    reshard::workload::init_routing(&url, &from).await.unwrap();
    let fp = from.compile();
    let want: String = [7i64, -3]
        .iter()
        .map(|k| format!("{k}\t{}\t1\n", fp.owner(&Key::Int(*k)).unwrap()))
        .collect();
    let from_env = Command::new(BIN)
        .args(["route", "7", "-3"])
        .env("RESHARD_CATALOG", &url)
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert_eq!(from_env.status.code(), Some(0), "{from_env:?}");
    assert_eq!(String::from_utf8(from_env.stdout).unwrap(), want);
    // The default catalog, in the working directory.
    let from_default = Command::new(BIN)
        .args(["route", "7", "-3"])
        .env_remove("RESHARD_CATALOG")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(from_default.status.code(), Some(0), "{from_default:?}");
    assert_eq!(String::from_utf8(from_default.stdout).unwrap(), want);
    // --map wins over RESHARD_CATALOG: two columns, no version.
    let m = dir.path().join("m.json");
    std::fs::write(&m, from.canonical_json()).unwrap();
    let by_map = Command::new(BIN)
        .args(["route", "--map", m.to_str().unwrap(), "7"])
        .env("RESHARD_CATALOG", &url)
        .output()
        .unwrap();
    assert_eq!(by_map.status.code(), Some(0), "{by_map:?}");
    assert_eq!(
        String::from_utf8(by_map.stdout).unwrap(),
        format!("7\t{}\n", fp.owner(&Key::Int(7)).unwrap())
    );
}

#[test]
fn route_without_a_catalog_refuses_and_creates_none() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(BIN)
        .args(["route", "1"])
        .env_remove("RESHARD_CATALOG")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(!dir.path().join("reshard.db").exists());
}

#[test]
fn route_catalog_never_prints_a_password() {
    // Nothing listens on port 1: the connection fails, and the error shows a redacted URL.
    let o = route(&["--catalog", "postgres://u:sekrit@127.0.0.1:1/cat", "1"]);
    assert_ne!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("sekrit"), "{err}");
    assert!(err.contains("REDACTED"), "{err}");
    // regression: the cause after a 10 s wait was only "pool timed out", and sqlx's own
    // source was printed twice.
    assert!(!err.contains("pool timed out"), "{err}");
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
}
