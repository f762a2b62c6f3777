//! The capture and guard triggers on real databases: what they log, what they refuse, what they
//! let through, and that removing them leaves nothing behind.

mod common;

use common::conn::RawConn as AnyConnection;
use common::db::{Kind, TestDb};
use reshard::backend::{Column, TableSchema};
use reshard::ident::Dialect;
use reshard::map::{Key, Map};
use reshard::triggers::{self, is_fence_error};

fn dialect(kind: Kind) -> Dialect {
    match kind {
        Kind::Sqlite => Dialect::Sqlite,
        Kind::Postgres => Dialect::Postgres,
        Kind::Mysql => Dialect::Mysql,
    }
}

fn schema(kind: Kind) -> TableSchema {
    let (int, text) = match kind {
        Kind::Postgres => ("bigint", "text"),
        Kind::Mysql => ("bigint(20)", "text"),
        Kind::Sqlite => ("integer", "text"),
    };
    let col = |name: &str, ty: &str, nullable| Column {
        name: name.into(),
        data_type: ty.into(),
        nullable,
        default: None,
    };
    TableSchema {
        name: "posts".into(),
        columns: vec![
            col("id", int, false),
            col("user_id", int, false),
            col("body", text, true),
        ],
        primary_key: vec!["id".into()],
        indexes: vec![],
    }
}

fn map_of(part: &str) -> Map {
    Map::parse(
        &format!(
            r#"{{"shards":{{"s0":"sqlite://a","s1":"sqlite://b","s2":"sqlite://c"}},
               "tables":[{{"name":"posts","key":"user_id"}}],"partitioning":{part}}}"#
        ),
        "map.json",
    )
    .unwrap()
}

/// Old and new maps routed by hash: every backend computes both digests in its guard (SQLite
/// through reshard's registered functions).
fn maps() -> (Map, Map) {
    (
        map_of(r#"{"kind":"modulo","hash":"md5","shards":["s0","s1"]}"#),
        map_of(r#"{"kind":"ring","hash":"sha1","vnodes":16,"nodes":["s0","s1","s2"]}"#),
    )
}

/// Old and new maps by integer ranges.
fn range_maps() -> (Map, Map) {
    (
        map_of(
            r#"{"kind":"range","ranges":[{"from":null,"to":150,"shard":"s0"},{"from":150,"to":null,"shard":"s1"}]}"#,
        ),
        map_of(
            r#"{"kind":"range","ranges":[{"from":null,"to":100,"shard":"s0"},{"from":100,"to":200,"shard":"s1"},{"from":200,"to":null,"shard":"s2"}]}"#,
        ),
    )
}

/// Every (old owner, new owner) pair that is a move, as fence rows.
fn move_pairs(old: &Map, new: &Map) -> Vec<(usize, usize)> {
    let (o, n) = (old.compile(), new.compile());
    let mut pairs = Vec::new();
    for (i, a) in o.shards.iter().enumerate() {
        for (j, b) in n.shards.iter().enumerate() {
            if a != b {
                pairs.push((i, j));
            }
        }
    }
    pairs
}

/// (old index, new index) of a key.
fn pair_of(old: &Map, new: &Map, k: i64) -> (usize, usize) {
    (
        old.compile().owner_index(&Key::Int(k)).unwrap(),
        new.compile().owner_index(&Key::Int(k)).unwrap(),
    )
}

/// A key that moves into s2, and one that does not move.
fn keys(old: &Map, new: &Map) -> (i64, i64) {
    let n = new.compile();
    let s2 = n.shards.iter().position(|s| s == "s2").unwrap();
    let moving = (1..10_000).find(|k| pair_of(old, new, *k).1 == s2).unwrap();
    let staying = (1..10_000)
        .find(|k| {
            let (a, b) = pair_of(old, new, *k);
            old.compile().shards[a] == n.shards[b]
        })
        .unwrap();
    (moving, staying)
}

/// Runs a write and says whether the fence refused it (any other error fails the test).
async fn refused(c: &mut AnyConnection, sql: &str) -> bool {
    match c.execute(sql).await {
        Ok(_) => false,
        Err(e) => {
            let db = e
                .as_database_error()
                .unwrap_or_else(|| panic!("{e}\n{sql}"));
            let code = db.code().map(|c| c.to_string());
            assert!(
                is_fence_error(code.as_deref(), db.message()),
                "unexpected error {e}\n{sql}"
            );
            true
        }
    }
}

fn log_rows(db: &TestDb) -> Vec<Vec<String>> {
    db.query("SELECT op, CAST(p0 AS CHAR(20)), CAST(k AS CHAR(20)) FROM _rs_log_posts ORDER BY seq")
        .into_iter()
        .map(|r| r.into_iter().map(|v| v.trim().to_string()).collect())
        .collect()
}

async fn check(kind: Kind, (old, new): (Map, Map)) {
    let Some(db) = TestDb::create(kind, "triggers") else {
        return;
    };
    let d = dialect(kind);
    let sch = schema(kind);
    db.exec(match kind {
        Kind::Mysql => {
            "CREATE TABLE posts (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, body TEXT)"
        }
        _ => "CREATE TABLE posts (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, body TEXT)",
    });
    let cap = triggers::capture(d, &sch, "user_id").unwrap();
    let pairs = move_pairs(&old, &new);
    let guard = triggers::guard(
        d,
        &sch,
        "user_id",
        &old.partitioning,
        &new.partitioning,
        &pairs,
    )
    .unwrap();
    let mut c = AnyConnection::open_registered(&db).await;
    c.run_all(&cap.install).await;
    c.run_all(&guard.shared).await;
    c.run_all(&guard.install).await;
    // Installing twice is harmless (resume re-runs it).
    c.run_all(&cap.install).await;
    c.run_all(&guard.shared).await;
    c.run_all(&guard.install).await;

    // Capture: one entry per row image, old and new when the key changes.
    c.execute("INSERT INTO posts VALUES (1, 10, 'a')")
        .await
        .unwrap();
    c.execute("UPDATE posts SET body = 'b' WHERE id = 1")
        .await
        .unwrap();
    c.execute("UPDATE posts SET user_id = 11 WHERE id = 1")
        .await
        .unwrap();
    c.execute("DELETE FROM posts WHERE id = 1").await.unwrap();
    let want: Vec<Vec<String>> = [("I", 10), ("U", 10), ("U", 10), ("U", 11), ("D", 11)]
        .iter()
        .map(|(op, k)| vec![op.to_string(), "1".into(), k.to_string()])
        .collect();
    assert_eq!(log_rows(&db), want, "{kind:?}");

    // Fence the move of one key; a key that does not move stays writable.
    let (moving, staying) = keys(&old, &new);
    let (src, dst) = pair_of(&old, &new, moving);
    let rows = format!("INSERT INTO posts VALUES (100, {moving}, 'm'), (101, {staying}, 's')");
    c.execute(&rows).await.unwrap();
    let fence = d.quote(triggers::FENCE_TABLE);
    let raise = format!("UPDATE {fence} SET fenced = 1 WHERE src = {src} AND dst = {dst}");
    c.execute(&raise).await.unwrap();
    let before = log_rows(&db).len();
    assert!(
        refused(
            &mut c,
            &format!("INSERT INTO posts VALUES (2, {moving}, 'x')")
        )
        .await,
        "{kind:?} insert"
    );
    assert!(
        refused(&mut c, "UPDATE posts SET body = 'y' WHERE id = 100").await,
        "{kind:?} update"
    );
    assert!(
        refused(&mut c, "DELETE FROM posts WHERE id = 100").await,
        "{kind:?} delete"
    );
    assert!(
        refused(
            &mut c,
            &format!("UPDATE posts SET user_id = {moving} WHERE id = 101")
        )
        .await,
        "{kind:?} update into a moving key"
    );
    assert!(
        !refused(
            &mut c,
            &format!("INSERT INTO posts VALUES (3, {staying}, 'z')")
        )
        .await,
        "{kind:?}"
    );
    assert!(
        !refused(&mut c, "UPDATE posts SET body = 'w' WHERE id = 101").await,
        "{kind:?}"
    );
    assert_eq!(
        log_rows(&db).len(),
        before + 2,
        "{kind:?}: refused writes are not logged"
    );
    assert_eq!(db.scalar("SELECT body FROM posts WHERE id = 100"), "m");

    // reshard's own session passes the guard and is not captured.
    if let Some(on) = triggers::bypass_sql(d, true) {
        c.execute(on).await.unwrap();
        assert!(!refused(&mut c, "UPDATE posts SET body = 'mine' WHERE id = 100").await);
        assert_eq!(
            log_rows(&db).len(),
            before + 2,
            "{kind:?}: bypassed writes are not logged"
        );
        c.execute(triggers::bypass_sql(d, false).unwrap())
            .await
            .unwrap();
        assert!(refused(&mut c, "UPDATE posts SET body = 'again' WHERE id = 100").await);
    }

    // Removal leaves nothing of reshard behind.
    c.run_all(&guard.remove).await;
    c.run_all(&cap.remove).await;
    // A writer's ownership assertion between any two removal statements either passes or finds
    // no function (and then writes unasserted, like on a shard never guarded): a function left
    // behind its fence table failed every write with "table does not exist".
    for stmt in &guard.remove_shared {
        c.run_all(std::slice::from_ref(stmt)).await;
        if kind == Kind::Sqlite {
            continue;
        }
        let sql = format!("SELECT {}(10)", triggers::ASSERT_OWNER_FUNCTION);
        if let Err(sqlx::Error::Database(e)) = c.execute(&sql).await {
            let missing = matches!(e.code().as_deref(), Some("42883") | Some("42000"))
                && e.message().contains("does not exist");
            assert!(missing, "{kind:?}: after {stmt}: {e}");
        }
    }
    let leftovers = match kind {
        Kind::Postgres => db.scalar(
            "SELECT (SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal) \
             + (SELECT count(*) FROM pg_proc WHERE proname LIKE '\\_rs\\_%') \
             + (SELECT count(*) FROM pg_class WHERE relname LIKE '\\_rs\\_%' OR relname LIKE '\\_reshard%')",
        ),
        Kind::Mysql => db.scalar(
            "SELECT (SELECT count(*) FROM information_schema.triggers WHERE trigger_schema = DATABASE()) \
             + (SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name <> 'posts')",
        ),
        Kind::Sqlite => db.scalar(
            "SELECT count(*) FROM sqlite_master WHERE name LIKE '\\_rs\\_%' ESCAPE '\\' OR name LIKE '\\_reshard%' ESCAPE '\\'",
        ),
    };
    assert_eq!(leftovers, "0", "{kind:?}");
    assert!(!refused(&mut c, "UPDATE posts SET body = 'free' WHERE id = 100").await);
}

#[tokio::test]
async fn sqlite_capture_and_guard() {
    check(Kind::Sqlite, maps()).await;
}

#[tokio::test]
async fn sqlite_capture_and_guard_ranges() {
    check(Kind::Sqlite, range_maps()).await;
}

#[tokio::test]
async fn postgres_capture_and_guard() {
    check(Kind::Postgres, maps()).await;
}

#[tokio::test]
async fn mariadb_capture_and_guard() {
    check(Kind::Mysql, maps()).await;
}

/// Raising a fence waits for a transaction that already wrote a moving key, and a REPEATABLE
/// READ writer whose snapshot predates the fence is still refused.
async fn fence_waits_for_in_flight_writers(kind: Kind) {
    let Some(db) = TestDb::create(kind, "fence_wait") else {
        return;
    };
    let d = dialect(kind);
    let sch = schema(kind);
    db.exec("CREATE TABLE posts (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, body TEXT)");
    let (old, new) = maps();
    let pairs = move_pairs(&old, &new);
    let guard = triggers::guard(
        d,
        &sch,
        "user_id",
        &old.partitioning,
        &new.partitioning,
        &pairs,
    )
    .unwrap();
    let mut admin = AnyConnection::open(&db).await;
    admin.run_all(&guard.shared).await;
    admin.run_all(&guard.install).await;
    let (first, _) = keys(&old, &new);
    let (src, dst) = pair_of(&old, &new, first);
    let moving: Vec<i64> = (1..10_000)
        .filter(|k| pair_of(&old, &new, *k) == (src, dst))
        .take(2)
        .collect();
    let fence = d.quote(triggers::FENCE_TABLE);

    // A writer holds an uncommitted write of a moving key.
    let mut w = AnyConnection::open(&db).await;
    w.execute("BEGIN").await.unwrap();
    w.execute(format!("INSERT INTO posts VALUES (1, {}, 'in flight')", moving[0]).as_str())
        .await
        .unwrap();
    let timeout = match kind {
        Kind::Postgres => "SET lock_timeout = '300ms'",
        _ => "SET SESSION innodb_lock_wait_timeout = 1",
    };
    admin.execute(timeout).await.unwrap();
    let raise = format!("UPDATE {fence} SET fenced = 1 WHERE src = {src} AND dst = {dst}");
    assert!(
        admin.execute(raise.as_str()).await.is_err(),
        "{kind:?}: the fence must wait for the writer"
    );
    w.execute("COMMIT").await.unwrap();
    admin.execute(raise.as_str()).await.unwrap();

    // A REPEATABLE READ writer that took its snapshot before the fence is refused anyway.
    let mut rr = AnyConnection::open(&db).await;
    let lower = format!("UPDATE {fence} SET fenced = 0 WHERE src = {src} AND dst = {dst}");
    admin.execute(lower.as_str()).await.unwrap();
    match kind {
        Kind::Postgres => rr
            .execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            .await
            .unwrap(),
        _ => rr
            .execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await
            .unwrap(),
    };
    rr.execute("SELECT count(*) FROM posts").await.unwrap();
    admin.execute(raise.as_str()).await.unwrap();
    let r = rr
        .execute(
            format!(
                "INSERT INTO posts VALUES (2, {}, 'stale snapshot')",
                moving[1]
            )
            .as_str(),
        )
        .await;
    let err = r.expect_err("a writer with an old snapshot must not get through the fence");
    let db_err = err.as_database_error().unwrap();
    let code = db_err.code().map(|c| c.to_string());
    // PostgreSQL may instead refuse with a serialization failure; either way the write fails.
    assert!(
        is_fence_error(code.as_deref(), db_err.message()) || code.as_deref() == Some("40001"),
        "{kind:?}: {err}"
    );
    rr.execute("ROLLBACK").await.unwrap();
    assert_eq!(db.scalar("SELECT count(*) FROM posts"), "1");
}

#[tokio::test]
async fn postgres_fence_waits_for_in_flight_writers() {
    fence_waits_for_in_flight_writers(Kind::Postgres).await;
}

#[tokio::test]
async fn mariadb_fence_waits_for_in_flight_writers() {
    fence_waits_for_in_flight_writers(Kind::Mysql).await;
}

/// A SQLite connection that has not registered reshard's functions cannot write to a table
/// guarded for hash maps: SQLite resolves the guard's `reshard_sha1` when it prepares the write,
/// so every write fails loudly, fence up or not, and none slips past the guard.
#[tokio::test]
async fn sqlite_writer_without_functions_is_refused() {
    let Some(db) = TestDb::create(Kind::Sqlite, "nofunc") else {
        return;
    };
    db.exec("CREATE TABLE posts (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, body TEXT)");
    let (old, new) = maps();
    let guard = triggers::guard(
        Dialect::Sqlite,
        &schema(Kind::Sqlite),
        "user_id",
        &old.partitioning,
        &new.partitioning,
        &move_pairs(&old, &new),
    )
    .unwrap();
    let mut admin = AnyConnection::open_registered(&db).await;
    admin.run_all(&guard.shared).await;
    admin.run_all(&guard.install).await;
    let (moving, staying) = keys(&old, &new);
    admin
        .execute(&format!(
            "INSERT INTO posts VALUES (1, {moving}, 'm'), (2, {staying}, 's')"
        ))
        .await
        .unwrap();
    let rows = || db.query("SELECT id, user_id, body FROM posts ORDER BY id");
    let before = rows();

    let mut plain = AnyConnection::open(&db).await;
    for sql in [
        format!("INSERT INTO posts VALUES (3, {moving}, 'x')"),
        format!("INSERT INTO posts VALUES (4, {staying}, 'x')"),
        "UPDATE posts SET body = 'x' WHERE id = 2".to_string(),
        "DELETE FROM posts WHERE id = 2".to_string(),
    ] {
        let e = plain.execute(&sql).await.expect_err(&sql).to_string();
        assert!(e.contains("no such function: reshard_"), "{sql}: {e}");
    }
    assert_eq!(rows(), before);

    // One call on the same connection, and it writes like any other (no fence is up).
    let AnyConnection::Lite(l) = &mut plain else {
        unreachable!()
    };
    reshard::register_sqlite_functions(l).await.unwrap();
    plain
        .execute("UPDATE posts SET body = 'ok' WHERE id = 2")
        .await
        .unwrap();
    assert_eq!(db.scalar("SELECT body FROM posts WHERE id = 2"), "ok");
}
