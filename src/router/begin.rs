//! `Router::begin`: a write transaction at a key's owner with its ownership asserted first, so
//! that a stale UPDATE or DELETE is refused even when it matches no row (the row guards fire
//! only on rows that match). docs/writer-contract.md.

use anyhow::{Context as _, Result};

use super::{Route, Router, ShardPool};
use crate::map::Key;
use crate::triggers::ASSERT_OWNER_FUNCTION;

/// An open transaction at a shard, begun by [`Router::begin`]. Commit or roll it back with
/// sqlx as usual; dropping it rolls back.
pub enum ShardTx {
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    Mysql(sqlx::Transaction<'static, sqlx::MySql>),
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

impl ShardTx {
    pub fn dialect(&self) -> crate::ident::Dialect {
        match self {
            ShardTx::Postgres(_) => crate::ident::Dialect::Postgres,
            ShardTx::Mysql(_) => crate::ident::Dialect::Mysql,
            ShardTx::Sqlite(_) => crate::ident::Dialect::Sqlite,
        }
    }
}

/// Whether the error says the assertion function does not exist: the shard has no guard (none
/// was ever installed, or they were removed with it), so routing alone decides.
fn is_missing_function(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("42883") // PostgreSQL undefined_function
                || db.code().as_deref() == Some("42000") && db.message().contains("does not exist")
        }
        _ => false,
    }
}

macro_rules! assert_in {
    ($pool:expr, $sql:expr, $key:expr, $variant:ident) => {{
        let mut tx = $pool.begin().await.context("beginning a transaction")?;
        let sql: String = $sql;
        let q = sqlx::query(&sql);
        let q = match $key {
            Key::Int(i) => q.bind(*i),
            Key::Text(s) => q.bind(s.clone()),
        };
        match q.execute(&mut *tx).await {
            Ok(_) => Ok(Some(ShardTx::$variant(tx))),
            Err(e) if is_missing_function(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }};
}

impl Router {
    /// Routes `key` and begins a transaction at its owner that has asserted, inside the
    /// database, that this shard owns the key now. The assertion takes the same shared lock on
    /// the key's fence row as the row guards, so it waits for a fence being raised, and a
    /// fenced or moved-away key is refused with the fence error (SQLSTATE `RS001`; MariaDB's
    /// drivers may show only errno 1644): the router then reloads its routing, and the caller
    /// retries with a new `begin`. SQLite shards have no stored functions: there the
    /// transaction is returned without the assertion, and only the row guards apply.
    pub async fn begin(&self, key: &Key) -> Result<(Route, ShardTx)> {
        let route = self.route(key).await?;
        let pool = self.pool(&route.shard).await?;
        let shard = route.shard.clone();
        let asserted: std::result::Result<Option<ShardTx>, sqlx::Error> = match &pool {
            ShardPool::Postgres(p) => assert_in!(
                p,
                format!("SELECT {ASSERT_OWNER_FUNCTION}($1)"),
                key,
                Postgres
            ),
            ShardPool::Mysql(p) => {
                assert_in!(p, format!("SELECT {ASSERT_OWNER_FUNCTION}(?)"), key, Mysql)
            }
            // A writer from the start: the lock is waited for (busy timeout) at BEGIN, never
            // upgraded mid-transaction.
            ShardPool::Sqlite(p) => {
                let tx = p
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .context("beginning a transaction")?;
                Ok(Some(ShardTx::Sqlite(tx)))
            }
        };
        let tx = match asserted {
            Ok(Some(tx)) => tx,
            // Never guarded: routing alone decides, as before any job.
            Ok(None) => match &pool {
                ShardPool::Postgres(p) => ShardTx::Postgres(p.begin().await?),
                ShardPool::Mysql(p) => ShardTx::Mysql(p.begin().await?),
                ShardPool::Sqlite(p) => ShardTx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
            },
            Err(e) => {
                self.note_error(&e);
                return Err(anyhow::Error::new(e)
                    .context(format!("shard {shard}: asserting ownership of a key")));
            }
        };
        Ok((route, tx))
    }
}
