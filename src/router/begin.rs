//! `Router::begin`: a write transaction at a key's owner with its ownership asserted first, so
//! that a stale UPDATE or DELETE is refused even when it matches no row (the row guards fire
//! only on rows that match). docs/writer-contract.md.

use anyhow::{Context as _, Result};

use super::{Route, Router, ShardPool};
use crate::ident::Dialect;
use crate::map::Key;
use crate::triggers::{assert_owner_statement, ASSERT_OWNER_FUNCTION};

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
            ShardTx::Postgres(_) => Dialect::Postgres,
            ShardTx::Mysql(_) => Dialect::Mysql,
            ShardTx::Sqlite(_) => Dialect::Sqlite,
        }
    }
}

/// Whether the error says the assertion does not exist: the shard has no guard (none was ever
/// installed, or they were removed with it), so routing alone decides.
fn is_missing_function(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            let msg = db.message();
            db.code().as_deref() == Some("42883") // PostgreSQL undefined_function
                || db.code().as_deref() == Some("42000") && msg.contains("does not exist")
                // SQLite: the assertion is a view that is not there.
                || msg.contains(&format!("no such table: {ASSERT_OWNER_FUNCTION}"))
        }
        _ => false,
    }
}

macro_rules! assert_in {
    ($pool:expr, $begin:expr, $dialect:expr, $key:expr, $variant:ident) => {{
        let mut tx = $pool
            .begin_with($begin)
            .await
            .context("beginning a transaction")?;
        let sql = assert_owner_statement($dialect);
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
    /// retries with a new `begin`. On SQLite the assertion is an INSERT into a view whose
    /// trigger raises the same error (`triggers::assert_owner_statement`).
    pub async fn begin(&self, key: &Key) -> Result<(Route, ShardTx)> {
        let route = self.route(key).await?;
        let pool = self.pool(&route.shard).await?;
        let shard = route.shard.clone();
        // BEGIN IMMEDIATE on SQLite: a writer from the start, so the lock is waited for (busy
        // timeout) at BEGIN and never upgraded mid-transaction, and no fence can go up between
        // the assertion and the writes after it.
        let asserted: std::result::Result<Option<ShardTx>, sqlx::Error> = match &pool {
            ShardPool::Postgres(p) => assert_in!(p, "BEGIN", Dialect::Postgres, key, Postgres),
            ShardPool::Mysql(p) => assert_in!(p, "BEGIN", Dialect::Mysql, key, Mysql),
            ShardPool::Sqlite(p) => {
                assert_in!(p, "BEGIN IMMEDIATE", Dialect::Sqlite, key, Sqlite)
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
