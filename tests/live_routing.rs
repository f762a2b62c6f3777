//! The catalog's `live_routing` view (docs/catalog.md): one read gives the whole live routing,
//! and the documented rule evaluated on it agrees with `reshard::Router` key for key, before
//! any flip, in dual write, with some moves flipped back, and after `complete`. On the SQLite
//! catalog and on a PostgreSQL catalog. Also the other rules of docs/routing.md: the version
//! moves with every routing change, cancelled and completed jobs do not count, and bootstrap
//! (no routing before the first job; the first job routes as its plan's `from` map, the
//! application's own, until a move flips, and a write by the old map is refused after it).

#[macro_use]
mod common;

use std::collections::BTreeSet;

use common::cluster::stderr;
use common::conn::RawConn;
use common::db::{Kind, TestDb};
use common::online::{setup, LiveRoutingRow as Row, Setup, LIVE_ROUTING as VIEW};
use reshard::{Key, Map, Router};

async fn read_view(kind: Kind, url: &str) -> Row {
    let mut c = RawConn::open_url(kind, url).await;
    match &mut c {
        RawConn::Pg(c) => sqlx::query_as::<_, Row>(VIEW).fetch_one(c).await.unwrap(),
        RawConn::Lite(c) => sqlx::query_as::<_, Row>(VIEW).fetch_one(c).await.unwrap(),
        RawConn::My(_) => unreachable!("catalogs are SQLite or PostgreSQL"),
    }
}

/// The documented live owner rule, on one row of the view.
fn live_owner(row: &Row, key: &Key) -> String {
    let map = |j: &str| Map::from_value(&serde_json::from_str(j).unwrap(), "view").unwrap();
    match (&row.4, &row.5, &row.6) {
        (Some(from), Some(to), Some(flipped)) => {
            let (from, to) = (map(from).compile(), map(to).compile());
            let pairs: BTreeSet<(String, String)> = serde_json::from_str(flipped).unwrap();
            let pair = (
                from.owner(key).unwrap().to_string(),
                to.owner(key).unwrap().to_string(),
            );
            if pairs.contains(&pair) {
                pair.1
            } else {
                pair.0
            }
        }
        _ => map(&row.1).compile().owner(key).unwrap().to_string(),
    }
}

async fn agrees(kind: Kind, url: &str, when: &str) -> Row {
    let row = read_view(kind, url).await;
    let router = Router::connect(url).await.unwrap();
    assert_eq!(router.version(), row.0, "{when}: version");
    for k in -10..60 {
        let key = Key::Int(k);
        let want = router.route(&key).await.unwrap().shard;
        assert_eq!(
            live_owner(&row, &key),
            want,
            "{when}: key {k}, view {row:?}"
        );
    }
    router.close().await;
    row
}

async fn follow_a_job(catalog_kind: Kind) {
    let Some(s) = setup(Kind::Sqlite, "lrv") else {
        return;
    };
    let pg = match catalog_kind {
        Kind::Postgres => match TestDb::create(Kind::Postgres, "lrv_cat") {
            Some(db) => Some(db),
            None => return,
        },
        _ => None,
    };
    let url = pg
        .as_ref()
        .map_or_else(|| s.c.catalog_url(), |db| db.url.clone());
    let cmd = |args: &[&str]| {
        let mut c = s.c.cmd(args);
        c.env("RESHARD_CATALOG", &url);
        c.output().unwrap()
    };
    let Setup { plan, .. } = &s;
    let out = cmd(&["apply", plan, "--yes", "--progress", "plain"]);
    assert!(out.status.success(), "apply: {}", stderr(&out));
    let job = common::cluster::job_id(&out).unwrap();
    let row = agrees(catalog_kind, &url, "dual write").await;
    assert_eq!(row.2.as_deref(), Some(job.as_str()));
    assert_eq!(row.3.as_deref(), Some("dual_write"));
    // Every routing change bumps the version: a reader that saw a version saw all of it.
    let mut versions = vec![row.0];
    let out = cmd(&["rollback", &job, "--move", "m1"]);
    assert!(out.status.success(), "rollback: {}", stderr(&out));
    versions.push(agrees(catalog_kind, &url, "m1 rolled back").await.0);
    let out = cmd(&["rollback", &job]);
    assert!(out.status.success(), "rollback: {}", stderr(&out));
    let row = agrees(catalog_kind, &url, "rolled back").await;
    assert_eq!(
        row.3.as_deref(),
        Some("rolled_back"),
        "a rolled-back job counts"
    );
    assert_eq!(row.6.as_deref(), Some("[]"));
    versions.push(row.0);
    let out = cmd(&["resume", &job]);
    assert!(out.status.success(), "resume: {}", stderr(&out));
    versions.push(agrees(catalog_kind, &url, "re-cut over").await.0);
    let out = cmd(&["complete", &job]);
    assert!(out.status.success(), "complete: {}", stderr(&out));
    let row = agrees(catalog_kind, &url, "completed").await;
    assert_eq!(row.2, None, "no unfinished job");
    versions.push(row.0);
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "the version moves with each change: {versions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_catalog() {
    follow_a_job(Kind::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_catalog() {
    follow_a_job(Kind::Postgres).await
}

/// The owner of every test key under a map given as JSON.
fn owners(map: &serde_json::Value) -> Vec<String> {
    let m = Map::from_value(map, "map").unwrap().compile();
    (-10..60)
        .map(|k| m.owner(&Key::Int(k)).unwrap().to_string())
        .collect()
}

/// Runs `BEGIN; <assert ownership of key>; COMMIT` at `shard`, as an application routing by
/// its own map does; the error if any.
async fn assert_at(s: &Setup, kind: Kind, shard: &str, key: i64) -> Option<sqlx::Error> {
    let sql = reshard::triggers::assert_owner_statement(kind.dialect());
    let mut conn = RawConn::open(s.c.db(shard)).await;
    macro_rules! go {
        ($c:expr, $begin:expr) => {{
            use sqlx::Connection;
            let mut tx = $c.begin_with($begin).await.unwrap();
            if let Err(e) = sqlx::query(&sql).bind(key).execute(&mut *tx).await {
                return Some(e);
            }
            tx.commit().await.err()
        }};
    }
    match &mut conn {
        RawConn::Pg(c) => go!(c, "BEGIN"),
        RawConn::My(c) => go!(c, "BEGIN"),
        RawConn::Lite(c) => go!(c, "BEGIN IMMEDIATE"),
    }
}

/// Bootstrap (docs/routing.md): before the first job there is no routing to follow and the
/// application routes by its own map; the first job's routing is its plan's `from` map (the
/// application's own), so switching to the catalog changes no owner before a move flips; after
/// the flip, a write by the old map at the old owner is refused, which is the application's cue
/// to follow the catalog.
async fn bootstrap_from_the_applications_own_map(kind: Kind) {
    let Some(s) = setup(kind, "lrb") else { return };
    let url = s.c.catalog_url();
    let out =
        s.c.cmd(&["route", "--catalog", &url, "42"])
            .output()
            .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "no catalog yet: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("no routing to follow until a job has been applied"),
        "{}",
        stderr(&out)
    );
    // Stopped at the first copied batch: the job exists, nothing has flipped.
    let out =
        s.c.cmd(&["apply", &s.plan, "--yes", "--progress", "plain"])
            .env("RESHARD_FAILPOINT", "before_upsert:1")
            .output()
            .unwrap();
    assert!(!out.status.success(), "killed at the failpoint");
    let row = agrees(Kind::Sqlite, &url, "before the first flip").await;
    assert_eq!(row.0, 1, "the first job's routing is version 1");
    assert_eq!(row.3.as_deref(), Some("running"));
    assert_eq!(row.6.as_deref(), Some("[]"));
    let from: serde_json::Value = serde_json::from_str(row.4.as_deref().unwrap()).unwrap();
    let map_json: serde_json::Value = serde_json::from_str(&row.1).unwrap();
    assert_eq!(
        owners(&from),
        owners(&s.from),
        "the plan's from is the own map"
    );
    assert_eq!(owners(&map_json), owners(&s.from), "so is the routing map");
    // Key 44 is s0's under the own map; the assertion passes there before any flip.
    let e = assert_at(&s, kind, "s0", 44).await;
    assert!(e.is_none(), "before the flip the own map is right: {e:?}");

    let job = common::cluster::job_id(&out).unwrap();
    let out = s.c.cmd(&["resume", &job]).output().unwrap();
    assert!(out.status.success(), "resume: {}", stderr(&out));
    let e = assert_at(&s, kind, "s0", 44).await;
    assert!(
        e.as_ref().is_some_and(reshard::router::is_fence_error),
        "after the flip the own map's owner refuses: {e:?}"
    );
    agrees(Kind::Sqlite, &url, "after the flip").await;
}

/// A cancelled job does not count: the view has no job, and the routing map answers.
async fn a_cancelled_job_does_not_count(kind: Kind) {
    let Some(s) = setup(kind, "lrc") else { return };
    let url = s.c.catalog_url();
    let job = common::online::applied(&s).await;
    for args in [vec!["rollback", &job], vec!["cancel", &job]] {
        let out = s.c.cmd(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let row = agrees(Kind::Sqlite, &url, "cancelled").await;
    assert_eq!(row.2, None, "a cancelled job is not in the view");
    let map_json: serde_json::Value = serde_json::from_str(&row.1).unwrap();
    assert_eq!(owners(&map_json), owners(&s.from));
}

per_backend_async!(
    bootstrap_from_the_applications_own_map,
    a_cancelled_job_does_not_count
);
