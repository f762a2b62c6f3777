//! The ownership assertion (issue 13): a stale UPDATE or DELETE at a key's old owner that
//! matches no row is refused with the fence error when the writer asserts ownership first
//! (`SELECT reshard_assert_owner(key)`, what `Router::begin` does), in dual write, after a
//! rollback, after re-cutting over and after `complete`. A key that does not move passes.
//! On SQLite the assertion is an INSERT into a view whose trigger refuses
//! (`triggers::assert_owner_statement`).

#[macro_use]
mod common;

use common::cluster::{job_id, stderr};
use common::conn::RawConn;
use common::db::Kind;
use common::online::{run, setup, status};
use reshard::{Key, Router};

/// Identity modulo 2 -> 3: key 44 moves s0 -> s2 and is inserted at s2 after the flip; key 6
/// stays at s0.
const MOVED: i64 = 44;
const STAYS: i64 = 6;

/// Runs `BEGIN; <assert ownership of key>; <stmt>; COMMIT` on `conn`; the error if any.
async fn asserted(conn: &mut RawConn, kind: Kind, key: i64, stmt: &str) -> Option<sqlx::Error> {
    let sql = reshard::triggers::assert_owner_statement(kind.dialect());
    macro_rules! go {
        ($c:expr, $begin:expr) => {{
            use sqlx::Connection;
            let mut tx = $c.begin_with($begin).await.unwrap();
            if let Err(e) = sqlx::query(&sql).bind(key).execute(&mut *tx).await {
                return Some(e);
            }
            if let Err(e) = sqlx::query(stmt).execute(&mut *tx).await {
                return Some(e);
            }
            tx.commit().await.err()
        }};
    }
    match conn {
        RawConn::Pg(c) => go!(c, "BEGIN"),
        RawConn::My(c) => go!(c, "BEGIN"),
        RawConn::Lite(c) => go!(c, "BEGIN IMMEDIATE"),
    }
}

fn is_fence(e: &Option<sqlx::Error>) -> bool {
    e.as_ref().is_some_and(reshard::router::is_fence_error)
}

/// Every stale statement at `shard`, for the moved key, is refused; the key that stays passes.
async fn stale_refused(s: &common::online::Setup, kind: Kind, shard: &str, when: &str) {
    let mut c = RawConn::open(s.c.db(shard)).await;
    for stmt in [
        format!("UPDATE users SET name = 'stale' WHERE id = {MOVED}"),
        format!("DELETE FROM users WHERE id = {MOVED}"),
    ] {
        let e = asserted(&mut c, kind, MOVED, &stmt).await;
        assert!(
            is_fence(&e),
            "{when}: {stmt} at {shard} must be refused: {e:?}"
        );
    }
    if shard == "s0" {
        let e = asserted(
            &mut c,
            kind,
            STAYS,
            &format!("UPDATE users SET name = 'fine' WHERE id = {STAYS}"),
        )
        .await;
        assert!(
            e.is_none(),
            "{when}: a key that does not move passes: {e:?}"
        );
    }
}

/// Regression: the stale-writer guard is a row trigger, so a stale UPDATE or DELETE matching
/// no row at the old owner committed with 0 rows and was acknowledged; the write it meant to
/// change (made at the new owner) was lost.
async fn regression_stale_update_delete_matching_no_row_acknowledged(kind: Kind) {
    let Some(s) = setup(kind, "swz") else { return };
    let out = run(&s.c, &["apply", &s.plan, "--yes", "--progress", "plain"]).await;
    assert!(out.status.success(), "apply: {}", stderr(&out));
    let job = job_id(&out).unwrap();
    assert_eq!(status(&s.c, &job).await["state"], "dual_write");
    // Written at the new owner after the flip; the old owner has no such row.
    s.c.db("s2").exec(&format!(
        "INSERT INTO users (id, name, score) VALUES ({MOVED}, 'new', 1)"
    ));
    // Without the assertion the statement matches nothing and "succeeds": why it is needed.
    let mut plain = RawConn::open(s.c.db("s0")).await;
    plain
        .execute(&format!("DELETE FROM users WHERE id = {MOVED}"))
        .await
        .expect("a 0-row delete passes the row guards");
    stale_refused(&s, kind, "s0", "dual write").await;

    // Router::begin asserts at the owner: key 44 goes to s2, and the transaction writes there.
    let router = Router::connect(&s.c.catalog_url()).await.unwrap();
    let (route, tx) = router.begin(&Key::Int(MOVED)).await.unwrap();
    assert_eq!(route.shard, "s2");
    drop(tx);

    let out = run(&s.c, &["rollback", &job]).await;
    assert!(out.status.success(), "rollback: {}", stderr(&out));
    // Rolled back: s2 is no longer the owner.
    stale_refused(&s, kind, "s2", "after rollback").await;
    let out = run(&s.c, &["resume", &job]).await;
    assert!(out.status.success(), "resume: {}", stderr(&out));
    stale_refused(&s, kind, "s0", "after re-cutover").await;
    let out = run(&s.c, &["complete", &job]).await;
    assert!(out.status.success(), "complete: {}", stderr(&out));
    stale_refused(&s, kind, "s0", "after complete").await;
    let (route, tx) = router.begin(&Key::Int(MOVED)).await.unwrap();
    assert_eq!(route.shard, "s2");
    drop(tx);
    router.close().await;
    assert_eq!(
        s.c.db("s2")
            .scalar(&format!("SELECT name FROM users WHERE id = {MOVED}")),
        "new",
        "no stale statement reached the row"
    );
}

per_backend_async!(regression_stale_update_delete_matching_no_row_acknowledged);
