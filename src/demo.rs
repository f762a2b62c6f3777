//! The embedded cluster `reshard demo` runs on (the handler is `commands::demo`): four SQLite
//! shards `s0`..`s3` on a sha1 ring, a fifth shard `s4` to add, the two maps, and generated rows
//! of the writer workload's schema (`users` by `id`, `posts` by `user_id`), so that the demo's
//! writer and checker are the ones the online tests use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context as _, Result};
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{ConnectOptions, Connection, SqliteConnection};

use crate::ident::Dialect;
use crate::map::{Key, Map};
use crate::workload::{table_ddl, POSTS};

/// The shards of the old ring; the new ring adds [`NEW_SHARD`].
pub const OLD_SHARDS: [&str; 4] = ["s0", "s1", "s2", "s3"];
pub const NEW_SHARD: &str = "s4";
pub const VNODES: u32 = 64;
/// Rows come in groups of one user and this many posts.
pub const POSTS_PER_USER: u64 = 3;
/// Rows per INSERT statement (3 bound values each, far below SQLite's variable limit).
const ROWS_PER_INSERT: usize = 300;
/// Rows per transaction while generating.
const ROWS_PER_TX: usize = 30_000;

/// Where the demo's files are. Paths are absolute, so the maps work from any directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn shard_path(&self, shard: &str) -> PathBuf {
        self.dir.join(format!("{shard}.db"))
    }

    pub fn shard_url(&self, shard: &str) -> String {
        format!("sqlite://{}", self.shard_path(shard).display())
    }

    pub fn catalog_url(&self) -> String {
        format!("sqlite://{}", self.dir.join("catalog.db").display())
    }

    pub fn old_map_path(&self) -> PathBuf {
        self.dir.join("old.json")
    }

    pub fn new_map_path(&self) -> PathBuf {
        self.dir.join("new.json")
    }

    pub fn plan_path(&self) -> PathBuf {
        self.dir.join("plan.json")
    }

    /// Every shard, old and new.
    pub fn shards(&self) -> Vec<&'static str> {
        OLD_SHARDS.iter().copied().chain([NEW_SHARD]).collect()
    }
}

/// Whether a directory path can be written into a `sqlite://` URL unchanged: URL syntax
/// characters would be taken as query or fragment, and the maps must name the files exactly.
pub fn url_safe_path(p: &Path) -> bool {
    p.to_str()
        .is_some_and(|s| !s.contains(['?', '#', '%']) && !s.chars().any(char::is_control))
}

/// (users, posts) for `rows` rows in all: row i belongs to user i / 4 + 1 and is the user
/// itself or one of its posts.
pub fn split_rows(rows: u64) -> (u64, u64) {
    let per = POSTS_PER_USER + 1;
    let users = rows.div_ceil(per);
    (users, rows - users)
}

fn map_json(layout: &Layout, shards: &[&str]) -> serde_json::Value {
    let urls: serde_json::Map<String, serde_json::Value> = shards
        .iter()
        .map(|s| (s.to_string(), json!(layout.shard_url(s))))
        .collect();
    json!({
        "shards": urls,
        "tables": [{"name": "users", "key": "id"}, {"name": POSTS.name, "key": "user_id"}],
        "partitioning": {"kind": "ring", "hash": "sha1", "vnodes": VNODES, "nodes": shards},
    })
}

/// The old ring (four nodes) and the new one (the same plus `s4`), written as `old.json` and
/// `new.json` and read back through the map parser, as `reshard plan` would.
pub fn write_maps(layout: &Layout) -> Result<(Map, Map)> {
    let all = layout.shards();
    let mut out = Vec::new();
    for (path, shards) in [
        (layout.old_map_path(), &OLD_SHARDS[..]),
        (layout.new_map_path(), &all[..]),
    ] {
        let text = serde_json::to_string_pretty(&map_json(layout, shards))?;
        crate::atomic::write(&path, &format!("{text}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
        out.push(Map::load(&path)?);
    }
    let new = out.pop().context("two maps")?;
    let old = out.pop().context("two maps")?;
    Ok((old, new))
}

/// A connection of the demo's own (generating, counting, the damage failpoint), with reshard's
/// SQL functions registered, as every writer to a guarded SQLite shard must.
async fn open(path: &Path) -> Result<SqliteConnection> {
    let url = format!("sqlite://{}", path.display());
    let mut conn = SqliteConnectOptions::from_str(&url)
        .with_context(|| format!("{}: not a usable SQLite path", path.display()))?
        .create_if_missing(true)
        // An application sharing SQLite files between processes would run them in WAL, so
        // that readers (the copy, verification) never wait for writers.
        .journal_mode(SqliteJournalMode::Wal)
        .connect()
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    crate::register_sqlite_functions(&mut conn)
        .await
        .with_context(|| format!("{}: registering reshard's SQL functions", path.display()))?;
    Ok(conn)
}

/// Rows generated per shard: (users, posts).
pub type Counts = BTreeMap<String, (u64, u64)>;

/// Creates the five shard files with both tables and fills the four old shards with `rows`
/// rows, each at its owner under `old`. Batched multi-row INSERTs, one transaction per
/// `ROWS_PER_TX` rows of a shard.
pub async fn create_cluster(layout: &Layout, old: &Map, rows: u64) -> Result<Counts> {
    let (users, _) = split_rows(rows);
    let ring = old.compile();
    let mut by_shard: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for id in 1..=users as i64 {
        let owner = ring.owner(&Key::Int(id))?;
        by_shard.entry(owner.to_string()).or_default().push(id);
    }
    let mut counts = Counts::new();
    for shard in layout.shards() {
        let path = layout.shard_path(shard);
        let mut conn = open(&path).await?;
        for ddl in table_ddl(Dialect::Sqlite, &POSTS) {
            sqlx::query(&ddl)
                .execute(&mut conn)
                .await
                .with_context(|| format!("{}: creating the tables", path.display()))?;
        }
        let ids = by_shard.remove(shard).unwrap_or_default();
        let c = fill(&mut conn, &ids, rows)
            .await
            .with_context(|| format!("{}: generating rows", path.display()))?;
        conn.close().await?;
        counts.insert(shard.to_string(), c);
    }
    Ok(counts)
}

/// One generated row: a user `(id, name, score)` or a post `(user_id, post_id, body)`.
enum Row {
    User(i64),
    Post(i64, i64),
}

async fn fill(conn: &mut SqliteConnection, ids: &[i64], rows: u64) -> Result<(u64, u64)> {
    let per = POSTS_PER_USER as i64 + 1;
    let mut users = Vec::new();
    let mut posts = Vec::new();
    for &id in ids {
        users.push(Row::User(id));
        // Row numbers (id - 1) * 4 .. id * 4 - 1; the last user may have fewer posts.
        let first = (id - 1) * per;
        for p in 1..per {
            if ((first + p) as u64) < rows {
                posts.push(Row::Post(id, p));
            }
        }
    }
    let post_cols = format!("user_id, {}, {}", POSTS.id, POSTS.text);
    for (table, cols, batch) in [
        ("users", "id, name, score", &users),
        (POSTS.name, post_cols.as_str(), &posts),
    ] {
        for tx_rows in batch.chunks(ROWS_PER_TX) {
            let mut tx = conn.begin().await?;
            for stmt_rows in tx_rows.chunks(ROWS_PER_INSERT) {
                let sql = format!(
                    "INSERT INTO {table} ({cols}) VALUES {}",
                    vec!["(?, ?, ?)"; stmt_rows.len()].join(", ")
                );
                let mut q = sqlx::query(&sql);
                for r in stmt_rows {
                    q = match r {
                        Row::User(id) => q
                            .bind(*id)
                            .bind(format!("user {id}"))
                            .bind((id % 1000) as f64 / 4.0),
                        Row::Post(u, p) => {
                            q.bind(*u).bind(*p).bind(format!("post {p} by user {u}"))
                        }
                    };
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
    }
    Ok((users.len() as u64, posts.len() as u64))
}

/// Rows per table at each shard, read directly from the files.
pub async fn count_rows(layout: &Layout) -> Result<Counts> {
    let mut out = Counts::new();
    for shard in layout.shards() {
        let path = layout.shard_path(shard);
        let mut conn = open(&path).await?;
        let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&mut conn)
            .await?;
        let posts: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", POSTS.name))
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        out.insert(shard.to_string(), (users as u64, posts as u64));
    }
    Ok(out)
}

/// For the `demo_damage` failpoint: moves one user row from its shard `from` to `to`, behind
/// reshard's back, so that the final checks must fail. Returns the user id moved.
pub async fn misplace_one_user(layout: &Layout, from: &str, to: &str) -> Result<Option<i64>> {
    let mut src = open(&layout.shard_path(from)).await?;
    let row: Option<(i64, String, Option<f64>)> =
        sqlx::query_as("SELECT id, name, score FROM users ORDER BY id LIMIT 1")
            .fetch_optional(&mut src)
            .await?;
    let Some((id, name, score)) = row else {
        return Ok(None);
    };
    let mut dst = open(&layout.shard_path(to)).await?;
    sqlx::query("INSERT INTO users (id, name, score) VALUES (?, ?, ?)")
        .bind(id)
        .bind(name)
        .bind(score)
        .execute(&mut dst)
        .await?;
    sqlx::query("DELETE FROM users WHERE id = ?")
        .bind(id)
        .execute(&mut src)
        .await?;
    src.close().await?;
    dst.close().await?;
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_split_into_users_and_their_posts() {
        assert_eq!(split_rows(200_000), (50_000, 150_000));
        assert_eq!(split_rows(1), (1, 0));
        assert_eq!(split_rows(5), (2, 3));
        assert_eq!(split_rows(3000), (750, 2250));
    }

    #[test]
    fn paths_that_would_change_meaning_in_a_url_are_refused() {
        assert!(url_safe_path(Path::new("/tmp/reshard demo/x")));
        assert!(!url_safe_path(Path::new("/tmp/a?mode=ro")));
        assert!(!url_safe_path(Path::new("/tmp/a#b")));
        assert!(!url_safe_path(Path::new("/tmp/100%")));
    }

    #[tokio::test]
    async fn generated_rows_sit_at_their_owner_and_add_up() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout {
            dir: dir.path().to_path_buf(),
        };
        let (old, _) = write_maps(&layout).unwrap();
        let made = create_cluster(&layout, &old, 1001).await.unwrap();
        let counted = count_rows(&layout).await.unwrap();
        assert_eq!(made, counted);
        let total: u64 = counted.values().map(|(u, p)| u + p).sum();
        assert_eq!(total, 1001);
        assert_eq!(counted[NEW_SHARD], (0, 0));
        let ring = old.compile();
        for shard in OLD_SHARDS {
            let url = layout.shard_url(shard);
            let mut c = SqliteConnection::connect(&url).await.unwrap();
            let ids: Vec<i64> = sqlx::query_scalar("SELECT user_id FROM posts")
                .fetch_all(&mut c)
                .await
                .unwrap();
            assert!(!ids.is_empty(), "{shard} holds no posts");
            for id in ids {
                assert_eq!(ring.owner(&Key::Int(id)).unwrap(), shard);
            }
        }
    }
}
