//! The catalog's `live_routing` view (docs/catalog.md): one read gives the whole live routing,
//! and the documented rule evaluated on it agrees with `reshard::Router` key for key, before
//! any flip, in dual write, with some moves flipped back, and after `complete`. On the SQLite
//! catalog and on a PostgreSQL catalog.

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
    let out = cmd(&["rollback", &job, "--move", "m1"]);
    assert!(out.status.success(), "rollback: {}", stderr(&out));
    agrees(catalog_kind, &url, "m1 rolled back").await;
    let out = cmd(&["rollback", &job]);
    assert!(out.status.success(), "rollback: {}", stderr(&out));
    let row = agrees(catalog_kind, &url, "rolled back").await;
    assert_eq!(row.6.as_deref(), Some("[]"));
    let out = cmd(&["resume", &job]);
    assert!(out.status.success(), "resume: {}", stderr(&out));
    let out = cmd(&["complete", &job]);
    assert!(out.status.success(), "complete: {}", stderr(&out));
    let row = agrees(catalog_kind, &url, "completed").await;
    assert_eq!(row.2, None, "no unfinished job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_catalog() {
    follow_a_job(Kind::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_catalog() {
    follow_a_job(Kind::Postgres).await
}
