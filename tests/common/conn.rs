//! One raw connection of whichever kind, so that a test reads the same on every backend and
//! talks to the database without going through the code under test.

use sqlx::{Connection, Executor, Row};

use super::db::{Kind, TestDb};

pub enum RawConn {
    Pg(sqlx::PgConnection),
    My(sqlx::MySqlConnection),
    Lite(sqlx::SqliteConnection),
}

impl RawConn {
    pub async fn open(db: &TestDb) -> RawConn {
        Self::open_url(db.kind, &db.url).await
    }

    pub async fn open_url(kind: Kind, url: &str) -> RawConn {
        match kind {
            Kind::Postgres => RawConn::Pg(sqlx::PgConnection::connect(url).await.unwrap()),
            Kind::Mysql => RawConn::My(sqlx::MySqlConnection::connect(url).await.unwrap()),
            Kind::Sqlite => RawConn::Lite(sqlx::SqliteConnection::connect(url).await.unwrap()),
        }
    }

    /// Like [`RawConn::open`], with reshard's SQL functions registered on a SQLite connection:
    /// what a writer following docs/writer-contract.md has. Without them a write to a table
    /// guarded for a hash-routed map fails with "no such function".
    pub async fn open_registered(db: &TestDb) -> RawConn {
        let mut c = Self::open(db).await;
        if let RawConn::Lite(l) = &mut c {
            reshard::register_sqlite_functions(l).await.unwrap();
        }
        c
    }

    pub async fn execute(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        match self {
            RawConn::Pg(c) => c.execute(sql).await.map(|_| ()),
            RawConn::My(c) => c.execute(sql).await.map(|_| ()),
            RawConn::Lite(c) => c.execute(sql).await.map(|_| ()),
        }
    }

    /// Runs each statement, panicking with the statement on failure.
    pub async fn run_all(&mut self, stmts: &[String]) {
        for s in stmts {
            self.execute(s).await.unwrap_or_else(|e| panic!("{e}\n{s}"));
        }
    }

    /// The first two columns of every row as (i64 or text, i64): for key/value checks.
    pub async fn pairs(&mut self, sql: &str, int_key: bool) -> Vec<(reshard::Key, i64)> {
        macro_rules! rows {
            ($c:expr) => {{
                let rows = sqlx::query(sql)
                    .fetch_all($c)
                    .await
                    .unwrap_or_else(|e| panic!("{e}\n{sql}"));
                rows.iter()
                    .map(|r| {
                        let k = if int_key {
                            reshard::Key::Int(r.get::<i64, _>(0))
                        } else {
                            reshard::Key::Text(r.get::<String, _>(0))
                        };
                        let v = r
                            .try_get::<i64, _>(1)
                            .unwrap_or_else(|_| r.get::<i32, _>(1) as i64);
                        (k, v)
                    })
                    .collect()
            }};
        }
        match self {
            RawConn::Pg(c) => rows!(c),
            RawConn::My(c) => rows!(c),
            RawConn::Lite(c) => rows!(c),
        }
    }
}
