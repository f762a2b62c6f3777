//! Throwaway test databases on SQLite, PostgreSQL and MariaDB.
//!
//! `TestDb::create(kind, tag)` makes a uniquely named database (a file in a temporary directory for
//! SQLite) and drops it when the `TestDb` is dropped, so tests can run in parallel and leave
//! nothing behind. When a server is unreachable the test is skipped with one line on stderr, unless
//! `RESHARD_REQUIRE_BACKENDS=1` (CI), where it fails.
//!
//! Setup and checks go through `exec`/`query`, which use their own connections and never the
//! code under test. Both are blocking and safe to call from inside a tokio runtime (they run on a
//! dedicated thread); `exec_async`/`query_async` are the async forms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::Duration;

use sqlx::{Column, Connection, Row, TypeInfo, ValueRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Sqlite,
    Postgres,
    Mysql,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Sqlite, Kind::Postgres, Kind::Mysql];

    pub fn dialect(self) -> reshard::ident::Dialect {
        match self {
            Kind::Sqlite => reshard::ident::Dialect::Sqlite,
            Kind::Postgres => reshard::ident::Dialect::Postgres,
            Kind::Mysql => reshard::ident::Dialect::Mysql,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Sqlite => "sqlite",
            Kind::Postgres => "postgres",
            Kind::Mysql => "mysql",
        }
    }

    /// The server URL tests connect to (from `PG_URL` / `MYSQL_URL`); None for SQLite.
    pub fn server_url(self) -> Option<String> {
        match self {
            Kind::Sqlite => None,
            Kind::Postgres => Some(
                std::env::var("PG_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
            ),
            Kind::Mysql => Some(
                std::env::var("MYSQL_URL")
                    .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".into()),
            ),
        }
    }
}

/// A database created for one test and dropped with it.
pub struct TestDb {
    /// The URL to give reshard (a shard URL or a catalog URL).
    pub url: String,
    pub kind: Kind,
    /// Database name (file stem for SQLite).
    pub name: String,
    server: Option<String>,
    dir: Option<tempfile::TempDir>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);
static SKIP_PG: Once = Once::new();
static SKIP_MY: Once = Once::new();

fn unique_name(tag: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    let rand = h.finish() & 0xff_ffff;
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    format!(
        "rt_{tag}_{}_{}_{rand:06x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Replaces the database part of a server URL (the path), keeping any query string.
pub fn with_database(server: &str, db: &str) -> String {
    let (base, query) = match server.find('?') {
        Some(q) => (&server[..q], &server[q..]),
        None => (server, ""),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[after_scheme..]
        .find('/')
        .map(|i| after_scheme + i)
        .unwrap_or(base.len());
    format!("{}/{db}{query}", &base[..host_end])
}

/// Runs a future to completion on a fresh thread with its own runtime, so that it works both
/// from plain tests and from inside a tokio runtime (including in `Drop`).
pub fn run_blocking<T, F>(f: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test runtime")
            .block_on(f())
    })
    .join()
    .expect("test helper thread panicked")
}

fn require_backends() -> bool {
    std::env::var("RESHARD_REQUIRE_BACKENDS").as_deref() == Ok("1")
}

async fn admin_exec(kind: Kind, server: String, sql: String) -> Result<(), sqlx::Error> {
    let fut = async move {
        match kind {
            Kind::Postgres => {
                let mut c = sqlx::PgConnection::connect(&server).await?;
                sqlx::raw_sql(&sql).execute(&mut c).await?;
                c.close().await
            }
            Kind::Mysql => {
                let mut c = sqlx::MySqlConnection::connect(&server).await?;
                sqlx::raw_sql(&sql).execute(&mut c).await?;
                c.close().await
            }
            Kind::Sqlite => Ok(()),
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Ok(r) => r,
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}

impl TestDb {
    /// A new empty database, or None (after one `skipped:` line) when the server is unreachable
    /// and `RESHARD_REQUIRE_BACKENDS` is not `1`.
    pub fn create(kind: Kind, tag: &str) -> Option<TestDb> {
        Self::create_on(kind, kind.server_url(), tag)
    }

    /// As [`TestDb::create`], on the server at `server` (ignored for SQLite), such as a
    /// test's own [`super::private::PrivateMariadb`].
    pub fn create_on(kind: Kind, server: Option<String>, tag: &str) -> Option<TestDb> {
        let name = unique_name(tag);
        match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let path = dir.path().join(format!("{name}.db"));
                let url = format!("sqlite://{}", path.display());
                // Create the file now so that the database exists like a server's would.
                let u = format!("{url}?mode=rwc");
                run_blocking(move || async move {
                    let c = sqlx::SqliteConnection::connect(&u).await?;
                    c.close().await
                })
                .expect("create sqlite test database");
                Some(TestDb {
                    url,
                    kind,
                    name,
                    server: None,
                    dir: Some(dir),
                })
            }
            Kind::Postgres | Kind::Mysql => {
                let server = server.expect("server url");
                let q = match kind {
                    Kind::Postgres => format!("CREATE DATABASE \"{name}\""),
                    _ => format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4"),
                };
                let s = server.clone();
                match run_blocking(move || admin_exec(kind, s, q)) {
                    Ok(()) => Some(TestDb {
                        url: with_database(&server, &name),
                        kind,
                        name,
                        server: Some(server),
                        dir: None,
                    }),
                    Err(e) => {
                        let shown = reshard::shard_url::redact(&server);
                        if require_backends() {
                            panic!(
                                "{} not reachable at {shown} and RESHARD_REQUIRE_BACKENDS=1: {e}",
                                kind.name()
                            );
                        }
                        let once = if kind == Kind::Postgres {
                            &SKIP_PG
                        } else {
                            &SKIP_MY
                        };
                        once.call_once(|| {
                            eprintln!("skipped: {} not reachable at {shown}", kind.name())
                        });
                        None
                    }
                }
            }
        }
    }

    /// Runs one or more statements (no results).
    pub fn exec(&self, sql: &str) {
        let (kind, url, sql) = (self.kind, self.url.clone(), sql.to_string());
        run_blocking(move || async move { exec_on(kind, &url, &sql).await })
            .unwrap_or_else(|e| panic!("exec failed: {e}"));
    }

    pub async fn exec_async(&self, sql: &str) {
        exec_on(self.kind, &self.url, sql)
            .await
            .unwrap_or_else(|e| panic!("exec failed: {e}\n{sql}"));
    }

    /// Rows as text. NULL is rendered as the string `NULL`; cast in SQL when a test must tell
    /// it from the text 'NULL', or when a column's type is not one of the common scalar types.
    pub fn query(&self, sql: &str) -> Vec<Vec<String>> {
        let (kind, url, sql) = (self.kind, self.url.clone(), sql.to_string());
        run_blocking(move || async move { query_on(kind, &url, &sql).await })
            .unwrap_or_else(|e| panic!("query failed: {e}"))
    }

    pub async fn query_async(&self, sql: &str) -> Vec<Vec<String>> {
        query_on(self.kind, &self.url, sql)
            .await
            .unwrap_or_else(|e| panic!("query failed: {e}\n{sql}"))
    }

    /// Runs statements as damage done behind reshard's back (tests of verification): past
    /// reshard's guards and unseen by its capture. PostgreSQL and MariaDB set the bypass flag
    /// reshard's own writes use; SQLite, which has none, loses the guard triggers.
    pub fn exec_unguarded(&self, sql: &str) {
        let full = match self.kind {
            Kind::Postgres => format!("SET reshard.bypass = 'on'; {sql}"),
            Kind::Mysql => format!("SET @reshard_bypass = 1; {sql}"),
            Kind::Sqlite => {
                let guards = self.query(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger' \
                     AND name LIKE '\\_rs\\_guard%' ESCAPE '\\'",
                );
                let drops: String = guards
                    .iter()
                    .map(|r| format!("DROP TRIGGER \"{}\"; ", r[0]))
                    .collect();
                format!("{drops}{sql}")
            }
        };
        self.exec(&full)
    }

    /// The single value of a one-row, one-column query.
    pub fn scalar(&self, sql: &str) -> String {
        let rows = self.query(sql);
        assert_eq!(rows.len(), 1, "expected one row from {sql}");
        rows[0][0].clone()
    }

    /// The directory holding the SQLite file (tests may put a catalog beside it).
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_ref().map(|d| d.path())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(server) = self.server.clone() else {
            return; // SQLite: the TempDir removes the file.
        };
        let sql = match self.kind {
            Kind::Postgres => format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
            _ => format!("DROP DATABASE IF EXISTS `{}`", self.name),
        };
        let kind = self.kind;
        if let Err(e) = run_blocking(move || admin_exec(kind, server, sql)) {
            eprintln!("warning: could not drop test database {}: {e}", self.name);
        }
    }
}

/// Rows of `sql` on a connection of its own to `url` (a server the test started itself, say),
/// as [`TestDb::query`] shows them.
pub fn query_url(kind: Kind, url: &str, sql: &str) -> Vec<Vec<String>> {
    let (url, sql) = (url.to_string(), sql.to_string());
    run_blocking(move || async move { query_on(kind, &url, &sql).await })
        .unwrap_or_else(|e| panic!("query failed: {e}"))
}

/// Runs `sql` on a connection of its own to `url` on a thread of its own, panicking on an
/// error: for a session held busy while the test goes on. Join the handle to wait for it.
pub fn exec_in_background(kind: Kind, url: String, sql: String) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        run_blocking(move || async move {
            exec_on(kind, &url, &sql)
                .await
                .unwrap_or_else(|e| panic!("exec failed: {e}\n{sql}"))
        })
    })
}

async fn exec_on(kind: Kind, url: &str, sql: &str) -> Result<(), sqlx::Error> {
    match kind {
        Kind::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await?;
            sqlx::raw_sql(sql).execute(&mut c).await?;
            c.close().await
        }
        Kind::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await?;
            sqlx::raw_sql(sql).execute(&mut c).await?;
            c.close().await
        }
        Kind::Mysql => {
            let mut c = sqlx::MySqlConnection::connect(url).await?;
            sqlx::raw_sql(sql).execute(&mut c).await?;
            c.close().await
        }
    }
}

async fn query_on(kind: Kind, url: &str, sql: &str) -> Result<Vec<Vec<String>>, sqlx::Error> {
    match kind {
        Kind::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await?;
            let rows = sqlx::query(sql).fetch_all(&mut c).await?;
            c.close().await?;
            Ok(rows.iter().map(|r| row_text(r, |_, _| None)).collect())
        }
        Kind::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await?;
            let rows = sqlx::query(sql).fetch_all(&mut c).await?;
            c.close().await?;
            Ok(rows
                .iter()
                .map(|r| {
                    row_text(r, |r, i| {
                        r.try_get::<rust_decimal::Decimal, _>(i)
                            .ok()
                            .map(|d| d.to_string())
                    })
                })
                .collect())
        }
        Kind::Mysql => {
            let mut c = sqlx::MySqlConnection::connect(url).await?;
            let rows = sqlx::query(sql).fetch_all(&mut c).await?;
            c.close().await?;
            Ok(rows
                .iter()
                .map(|r| {
                    row_text(r, |r, i| {
                        r.try_get::<u64, _>(i)
                            .ok()
                            .map(|v| v.to_string())
                            .or_else(|| {
                                r.try_get::<rust_decimal::Decimal, _>(i)
                                    .ok()
                                    .map(|d| d.to_string())
                            })
                    })
                })
                .collect())
        }
    }
}

/// Renders each column of a row as text, trying the common scalar types in turn.
fn row_text<R>(row: &R, extra: fn(&R, usize) -> Option<String>) -> Vec<String>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database>,
    for<'r> i16: sqlx::Decode<'r, R::Database>,
    for<'r> f64: sqlx::Decode<'r, R::Database>,
    for<'r> f32: sqlx::Decode<'r, R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database>,
    String: sqlx::Type<R::Database>,
    i64: sqlx::Type<R::Database>,
    i32: sqlx::Type<R::Database>,
    i16: sqlx::Type<R::Database>,
    f64: sqlx::Type<R::Database>,
    f32: sqlx::Type<R::Database>,
    bool: sqlx::Type<R::Database>,
    Vec<u8>: sqlx::Type<R::Database>,
{
    (0..row.columns().len())
        .map(|i| {
            let raw = row.try_get_raw(i).expect("column");
            if raw.is_null() {
                return "NULL".to_string();
            }
            let type_name = raw.type_info().name().to_ascii_uppercase();
            drop(raw);
            if let Ok(v) = row.try_get::<String, _>(i) {
                return v;
            }
            if let Ok(v) = row.try_get::<i64, _>(i) {
                return v.to_string();
            }
            if let Ok(v) = row.try_get::<i32, _>(i) {
                return v.to_string();
            }
            if let Ok(v) = row.try_get::<i16, _>(i) {
                return v.to_string();
            }
            if let Ok(v) = row.try_get::<bool, _>(i) {
                return v.to_string();
            }
            if let Ok(v) = row.try_get::<f64, _>(i) {
                return v.to_string();
            }
            if let Ok(v) = row.try_get::<f32, _>(i) {
                return v.to_string();
            }
            if let Some(v) = extra(row, i) {
                return v;
            }
            if let Ok(v) = row.try_get_unchecked::<Vec<u8>, _>(i) {
                return match String::from_utf8(v) {
                    Ok(s) => s,
                    Err(e) => e.into_bytes().iter().map(|b| format!("{b:02x}")).collect(),
                };
            }
            panic!(
                "column {} of type {type_name}: cast it to text in the query",
                row.columns()[i].name()
            )
        })
        .collect()
}
