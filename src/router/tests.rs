use super::*;
use crate::catalog::NewJob;
use serde_json::json;
use sqlx::Connection;

fn job(id: &str, state: &str, plan: &Plan, flipped: Vec<(String, String)>) -> JobRouting {
    JobRouting {
        id: id.into(),
        state: state.into(),
        plan_json: plan.to_json(),
        flipped,
    }
}

fn map(shards: &[&str], hash: &str) -> Map {
    let urls: serde_json::Map<String, serde_json::Value> = shards
        .iter()
        .map(|s| (s.to_string(), json!(format!("sqlite:///tmp/{s}.db"))))
        .collect();
    Map::from_value(
        &json!({
            "shards": urls,
            "tables": [{"name": "users", "key": "id"}],
            "partitioning": {"kind": "modulo", "hash": hash, "shards": shards},
        }),
        "test map",
    )
    .unwrap()
}

fn two_to_four() -> (Map, Map, Plan) {
    let from = map(&["s0", "s1"], "md5");
    let to = map(&["s0", "s1", "s2", "s3"], "md5");
    let plan = crate::planner::plan(&from, &to).unwrap();
    assert!(plan.moves.len() >= 2, "the test needs several moves");
    (from, to, plan)
}

fn keys() -> Vec<Key> {
    (-50..500).map(Key::Int).collect()
}

#[test]
fn before_any_flip_every_key_stays_with_its_old_owner() {
    let (from, _, plan) = two_to_four();
    let j = job("j1", "running", &plan, vec![]);
    let snap = RoutingSnapshot::build(3, &from.canonical_json(), &[j]).unwrap();
    let fp = from.compile();
    for k in keys() {
        let r = snap.route(&k).unwrap();
        assert_eq!(r.shard, fp.owner(&k).unwrap(), "key {k}");
        assert_eq!(r.version, 3);
    }
    assert_eq!(snap.active_job(), None);
}

#[test]
fn after_one_flip_only_that_moves_keys_change_owner() {
    let (from, to, plan) = two_to_four();
    let m = &plan.moves[0];
    let j = job(
        "j1",
        "running",
        &plan,
        vec![(m.source.clone(), m.destination.clone())],
    );
    let snap = RoutingSnapshot::build(4, &from.canonical_json(), &[j]).unwrap();
    assert_eq!(snap.active_job(), Some("j1"));
    let (fp, tp) = (from.compile(), to.compile());
    let (mut moved, mut stayed_moving) = (0, 0);
    for k in keys() {
        let (old, new) = (fp.owner(&k).unwrap(), tp.owner(&k).unwrap());
        let got = snap.route(&k).unwrap().shard;
        if old == m.source && new == m.destination {
            assert_eq!(got, new, "key {k} is in the flipped move");
            moved += 1;
        } else {
            assert_eq!(got, old, "key {k} is not in the flipped move");
            if old != new {
                stayed_moving += 1;
            }
        }
    }
    assert!(moved > 0 && stayed_moving > 0, "{moved} {stayed_moving}");
    // The shards of both maps are reachable by name.
    assert!(snap.shard_url("s3").is_some());
}

#[test]
fn a_completed_or_cancelled_job_no_longer_routes() {
    let (_, to, plan) = two_to_four();
    let all: Vec<(String, String)> = plan
        .moves
        .iter()
        .map(|m| (m.source.clone(), m.destination.clone()))
        .collect();
    for state in ["completed", "cancelled"] {
        // After completion the catalog map is the plan's `to`.
        let j = job("j1", state, &plan, all.clone());
        let snap = RoutingSnapshot::build(9, &to.canonical_json(), &[j]).unwrap();
        let tp = to.compile();
        for k in keys() {
            assert_eq!(snap.route(&k).unwrap().shard, tp.owner(&k).unwrap());
        }
    }
}

#[test]
fn every_move_flipped_routes_like_the_new_map() {
    let (from, to, plan) = two_to_four();
    let all: Vec<(String, String)> = plan
        .moves
        .iter()
        .map(|m| (m.source.clone(), m.destination.clone()))
        .collect();
    let j = job("j1", "running", &plan, all);
    let snap = RoutingSnapshot::build(5, &from.canonical_json(), &[j]).unwrap();
    let tp = to.compile();
    for k in keys() {
        assert_eq!(snap.route(&k).unwrap().shard, tp.owner(&k).unwrap());
    }
}

#[test]
fn two_unfinished_jobs_with_flips_are_refused() {
    let (from, _, plan) = two_to_four();
    let m = &plan.moves[0];
    let flips = vec![(m.source.clone(), m.destination.clone())];
    let a = job("ja", "running", &plan, flips.clone());
    let b = job("jb", "failed", &plan, flips);
    let err = RoutingSnapshot::build(2, &from.canonical_json(), &[a, b]).unwrap_err();
    assert!(err.to_string().contains("ambiguous"), "{err}");
}

/// A SQLite catalog with one job of `plan`, recorded through the catalog API.
async fn catalog_with_job(dir: &std::path::Path, plan: &Plan) -> String {
    let url = format!("sqlite://{}", dir.join("catalog.db").display());
    let cat = Catalog::open_rw(&url).await.unwrap();
    let tables = vec!["users".to_string()];
    cat.create_job(NewJob {
        id: "j1",
        plan_fingerprint: &plan.fingerprint,
        plan_json: &plan.to_json(),
        options_json: "{}",
        from: &plan.from,
        tables: &tables,
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
    url
}

/// What the online flip does in one catalog transaction: the move flipped, the version bumped.
async fn flip(url: &str, mv: &str) {
    let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
    let mut tx = c.begin().await.unwrap();
    sqlx::query("UPDATE moves SET flipped = 1 WHERE job_id = 'j1' AND move_id = $1")
        .bind(mv)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE routing SET version = version + 1")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

fn moved_key(plan: &Plan, mv: usize) -> Key {
    let (fp, tp) = (plan.from.compile(), plan.to.compile());
    let m = &plan.moves[mv];
    keys()
        .into_iter()
        .find(|k| fp.owner(k).unwrap() == m.source && tp.owner(k).unwrap() == m.destination)
        .unwrap()
}

#[tokio::test]
async fn a_version_bump_in_the_catalog_triggers_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, plan) = two_to_four();
    let url = catalog_with_job(dir.path(), &plan).await;
    let opts = RouterOptions {
        check_interval: Duration::ZERO,
        ..RouterOptions::default()
    };
    let router = Router::connect_with(&url, opts).await.unwrap();
    let k = moved_key(&plan, 0);
    let m = &plan.moves[0];
    assert_eq!(
        router.route(&k).await.unwrap(),
        Route {
            shard: m.source.clone(),
            version: 1
        }
    );
    flip(&url, &m.id).await;
    assert_eq!(
        router.route(&k).await.unwrap(),
        Route {
            shard: m.destination.clone(),
            version: 2
        }
    );
    // A key of another move still goes to its source.
    let other = moved_key(&plan, 1);
    assert_eq!(
        router.route(&other).await.unwrap().shard,
        plan.moves[1].source
    );
    router.close().await;
}

#[tokio::test]
async fn the_cache_answers_until_the_check_interval_or_a_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, plan) = two_to_four();
    let url = catalog_with_job(dir.path(), &plan).await;
    let opts = RouterOptions {
        check_interval: Duration::from_secs(3600),
        ..RouterOptions::default()
    };
    let router = Router::connect_with(&url, opts).await.unwrap();
    let k = moved_key(&plan, 0);
    let m = &plan.moves[0];
    flip(&url, &m.id).await;
    // Cached: the flip is not seen yet (this is why a stale writer needs the guard).
    assert_eq!(router.route(&k).await.unwrap().shard, m.source);
    router.refresh().await.unwrap();
    assert_eq!(router.route(&k).await.unwrap().shard, m.destination);
    assert_eq!(router.version(), 2);
    router.close().await;
}

/// A real fence refusal, as SQLite's guard raises it.
async fn fence_error() -> sqlx::Error {
    let mut c = sqlx::SqliteConnection::connect("sqlite::memory:")
        .await
        .unwrap();
    sqlx::raw_sql(&format!(
        "CREATE TABLE t (id INTEGER PRIMARY KEY); \
         CREATE TRIGGER g BEFORE INSERT ON t BEGIN SELECT RAISE(ABORT, '{}'); END;",
        crate::triggers::FENCE_MESSAGE
    ))
    .execute(&mut c)
    .await
    .unwrap();
    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&mut c)
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_fence_error_forces_a_reload_and_other_errors_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, plan) = two_to_four();
    let url = catalog_with_job(dir.path(), &plan).await;
    let opts = RouterOptions {
        check_interval: Duration::from_secs(3600),
        ..RouterOptions::default()
    };
    let router = Router::connect_with(&url, opts).await.unwrap();
    let k = moved_key(&plan, 0);
    let m = &plan.moves[0];
    flip(&url, &m.id).await;
    let other = sqlx::Error::RowNotFound;
    assert!(!router.note_error(&other));
    assert_eq!(router.route(&k).await.unwrap().shard, m.source);
    let fenced = fence_error().await;
    assert!(is_fence_error(&fenced), "{fenced}");
    assert!(is_fence_error_any(
        &anyhow::Error::new(fence_error().await).context("writing")
    ));
    assert!(router.note_error(&fenced));
    assert_eq!(router.route(&k).await.unwrap().shard, m.destination);
    router.close().await;
}

#[tokio::test]
async fn a_missing_catalog_is_a_clear_error_and_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.db");
    let url = format!("sqlite://{}", path.display());
    let err = match Router::connect(&url).await {
        Ok(_) => panic!("connected to a catalog that does not exist"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("does not exist"), "{err:#}");
    assert_eq!(crate::error::exit_code(&err), 2);
    assert!(!path.exists(), "the router created the catalog");
}
