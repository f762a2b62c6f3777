//! Helpers of the `reshard suggest` tests: the real binary, a table of ids, a range map.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::json;
use sqlx::Connection as _;

use super::db::{Kind, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_reshard");

pub fn reshard(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run reshard")
}

pub fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Inserts these ids into `users`, a few hundred rows a statement.
pub fn load(db: &TestDb, ids: &[i64]) {
    db.exec("CREATE TABLE users (id BIGINT PRIMARY KEY, name VARCHAR(40) NOT NULL)");
    for chunk in ids.chunks(500) {
        let values: Vec<String> = chunk.iter().map(|i| format!("({i}, 'u{i}')")).collect();
        db.exec(&format!(
            "INSERT INTO users (id, name) VALUES {}",
            values.join(", ")
        ));
    }
}

/// Three range shards: `(-inf, 100000)`, `[100000, 200000)` and `[200000, +inf)`, one table
/// `users` keyed by `id`.
pub fn write_map(path: &Path, urls: &[String; 3]) {
    let map = json!({
        "shards": {"s0": urls[0], "s1": urls[1], "s2": urls[2]},
        "tables": [{"name": "users", "key": "id"}],
        "partitioning": {"kind": "range", "ranges": [
            {"from": null, "to": 100000, "shard": "s0"},
            {"from": 100000, "to": 200000, "shard": "s1"},
            {"from": 200000, "to": null, "shard": "s2"}
        ]}
    });
    std::fs::write(path, serde_json::to_string_pretty(&map).expect("json")).expect("write map");
}

/// A writer updating rows of `users` on one database, on one connection held open as an
/// application's would (PostgreSQL then flushes its counts at most once a second), until
/// stopped.
pub struct Writer {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

async fn update_loop(
    kind: Kind,
    url: String,
    ids: Vec<i64>,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) {
    let sql = "UPDATE users SET name = 'written' WHERE id = ";
    macro_rules! run {
        ($conn:ty, $p:literal) => {{
            let mut c = <$conn>::connect(&url).await.expect("writer connects");
            for id in ids.iter().cycle() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                sqlx::query(&format!("{sql}{}", $p))
                    .bind(*id)
                    .execute(&mut c)
                    .await
                    .expect("writer's update");
                done.fetch_add(1, Ordering::Relaxed);
            }
            let _ = c.close().await;
        }};
    }
    match kind {
        Kind::Postgres => run!(sqlx::PgConnection, "$1"),
        Kind::Mysql => run!(sqlx::MySqlConnection, "?"),
        Kind::Sqlite => run!(sqlx::SqliteConnection, "?"),
    }
}

impl Writer {
    /// Starts writing to these ids of `db` in turn, and returns once it has written a few.
    pub fn start(db: &TestDb, ids: Vec<i64>) -> Writer {
        let (stop, done) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (kind, url, s, d) = (db.kind, db.url.clone(), stop.clone(), done.clone());
        let handle = std::thread::spawn(move || {
            super::db::run_blocking(move || update_loop(kind, url, ids, s, d))
        });
        while done.load(Ordering::Relaxed) < 10 {
            assert!(!handle.is_finished(), "the writer stopped early");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Writer {
            stop,
            done,
            handle: Some(handle),
        }
    }

    /// Stops it: how many updates it made.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().expect("writer thread");
        }
        self.done.load(Ordering::Relaxed)
    }
}
