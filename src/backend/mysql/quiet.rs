//! reshard's own writes to a MariaDB/MySQL shard, which the capture triggers do not record and
//! the guards let through (the `@reshard_bypass` session flag): the copy's and catch-up's
//! upserts and deletes, and complete's and cancel's deletes, whose lock waits are bounded.

use anyhow::{Context as _, Result};
use sqlx::mysql::MySqlArguments;
use sqlx::pool::PoolConnection;

use super::{bind, delete_in, lock_timed_out, upsert_in, Mysql, D};
use crate::backend::sql::{self, check_table};
use crate::backend::{KeyFilter, PkValues, TableSchema, Value};

/// Clears the flag and the lock timeouts that [`Mysql::begin_bypass`] set.
const RESET: &str = "SET @reshard_bypass = NULL";
const RESET_BOUNDED: &str = "SET @reshard_bypass = NULL, SESSION lock_wait_timeout = DEFAULT, \
     innodb_lock_wait_timeout = DEFAULT";

impl Mysql {
    /// A connection with the bypass session flag set, which the capture triggers and the
    /// guards read; with `bounded`, its lock waits (row and metadata locks) also bounded by
    /// [`crate::lockwait::timeout`] in whole seconds. Hand it back with [`Mysql::end_bypass`].
    async fn begin_bypass(&self, bounded: bool) -> Result<PoolConnection<sqlx::MySql>> {
        let mut conn = self.pool.acquire().await?;
        let set = if bounded {
            let n = crate::lockwait::timeout_secs();
            format!(
                "SET @reshard_bypass = 1, SESSION lock_wait_timeout = {n}, \
                 innodb_lock_wait_timeout = {n}"
            )
        } else {
            "SET @reshard_bypass = 1".to_string()
        };
        if let Err(e) = sqlx::query(&set).execute(&mut *conn).await {
            conn.close_on_drop();
            return Err(e.into());
        }
        Ok(conn)
    }

    /// Resets a [`Mysql::begin_bypass`] connection after `res`, the work done on it. Session
    /// variables: should anything have failed, the connection is closed rather than returned
    /// to the pool with them still set. With `bounded` (the statement run), a lock wait timeout
    /// becomes a [`crate::lockwait::Blocked`] naming the sessions with a transaction open.
    async fn end_bypass<T>(
        &self,
        mut conn: PoolConnection<sqlx::MySql>,
        res: Result<T>,
        bounded: Option<&str>,
    ) -> Result<T> {
        let lock = bounded.is_some()
            && res.as_ref().err().is_some_and(|e| {
                e.chain()
                    .filter_map(|c| c.downcast_ref::<sqlx::Error>())
                    .any(lock_timed_out)
            });
        let holders = if lock {
            super::mysql_holders(&mut conn).await
        } else {
            None
        };
        let reset = if bounded.is_some() {
            RESET_BOUNDED
        } else {
            RESET
        };
        let res = match res {
            Ok(v) => sqlx::query(reset)
                .execute(&mut *conn)
                .await
                .map(|_| v)
                .map_err(Into::into),
            Err(e) if lock => Err(e.context(crate::lockwait::Blocked {
                shard: self.shard.clone(),
                what: crate::lockwait::describe_stmt(bounded.unwrap_or("DELETE")),
                holders,
            })),
            Err(e) => Err(e),
        };
        if res.is_err() {
            conn.close_on_drop();
        }
        res
    }

    pub(super) async fn write_quiet_impl(
        &self,
        schema: &TableSchema,
        upserts: &[Vec<Value>],
        deletes: &[PkValues],
    ) -> Result<()> {
        check_table(&schema.name)?;
        if upserts.is_empty() && deletes.is_empty() {
            return Ok(());
        }
        let ctx = || self.ctx("write (bypassing triggers) to", &schema.name);
        let mut conn = self.begin_bypass(false).await.with_context(ctx)?;
        let res: Result<()> = async {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            upsert_in(&mut tx, schema, upserts).await?;
            delete_in(&mut tx, schema, deletes).await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        self.end_bypass(conn, res, None).await.with_context(ctx)
    }

    pub(super) async fn delete_range_quiet_impl(
        &self,
        schema: &TableSchema,
        key_column: &str,
        (after, upto): (Option<&PkValues>, Option<&PkValues>),
        filter: &KeyFilter,
    ) -> Result<u64> {
        check_table(&schema.name)?;
        let mut vals = Vec::new();
        let w = sql::where_clause_range(
            D,
            schema,
            key_column,
            after,
            upto,
            filter,
            &mut sql::question_marks(&mut vals),
        )?;
        let q = format!("DELETE FROM {} WHERE {w}", D.quote(&schema.name));
        let mut args = MySqlArguments::default();
        for v in &vals {
            bind(&mut args, v)?;
        }
        self.delete_bounded(schema, &q, args).await
    }

    /// complete's and cancel's delete by key, bounded like the range delete.
    pub(super) async fn delete_keys_quiet_impl(
        &self,
        schema: &TableSchema,
        keys: &[PkValues],
    ) -> Result<u64> {
        check_table(&schema.name)?;
        if keys.is_empty() {
            return Ok(0);
        }
        let ctx = || self.ctx("delete (bypassing triggers) from", &schema.name);
        let mut conn = self.begin_bypass(true).await.with_context(ctx)?;
        let res: Result<u64> = async {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            let n = delete_in(&mut tx, schema, keys).await?;
            tx.commit().await?;
            Ok(n)
        }
        .await;
        let stmt = format!("DELETE FROM {}", D.quote(&schema.name));
        self.end_bypass(conn, res, Some(&stmt))
            .await
            .with_context(ctx)
    }

    /// One of complete's or cancel's deletes, `q` with `args`, in a transaction of its own
    /// with its lock waits bounded: the old owner's rows may still be locked by an application
    /// transaction left open, and InnoDB's own 50 s wait, retried, kept cancel waiting for
    /// minutes. A lock wait timeout is a [`crate::lockwait::Blocked`]; the caller retries it.
    async fn delete_bounded(
        &self,
        schema: &TableSchema,
        q: &str,
        args: MySqlArguments,
    ) -> Result<u64> {
        let ctx = || self.ctx("delete (bypassing triggers) from", &schema.name);
        let mut conn = self.begin_bypass(true).await.with_context(ctx)?;
        let res: Result<u64> = async {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            let n = sqlx::query_with(q, args)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok(n)
        }
        .await;
        self.end_bypass(conn, res, Some(q)).await.with_context(ctx)
    }
}
