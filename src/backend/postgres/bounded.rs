//! Statements whose lock waits are bounded by [`crate::lockwait::timeout`]: DDL, the fence
//! row's UPDATE, and complete's and cancel's deletes. A lock timeout (55P03) becomes a
//! [`crate::lockwait::Blocked`] naming the sessions that held the lock.

use std::time::Duration;

use anyhow::Result;
use sqlx::postgres::PgPool;

use super::{Postgres, D};

impl Postgres {
    /// The fence row's UPDATE in a transaction of its own under `wait`: a lock timeout is a
    /// [`crate::lockwait::Blocked`] naming the holders.
    pub(super) async fn update_fence(
        &self,
        pair: crate::triggers::FencePair,
        move_id: &str,
        on: bool,
        wait: Duration,
    ) -> Result<()> {
        let q = crate::triggers::set_fence_sql(D);
        let (mut tx, pid) = self.begin_bounded_for(wait).await?;
        let watch = self.watch_for(pid, wait);
        let res = sqlx::query(&q)
            .bind(on as i32)
            .bind(move_id)
            .bind(pair.0 as i32)
            .bind(pair.1 as i32)
            .execute(&mut *tx)
            .await;
        self.end_bounded(tx, &q, res, watch).await.map(drop)
    }

    /// A transaction for one DDL or fence statement, under `SET LOCAL lock_timeout`
    /// ([`crate::lockwait::timeout`]), and its backend's pid.
    pub(super) async fn begin_bounded(
        &self,
    ) -> Result<(sqlx::Transaction<'static, sqlx::Postgres>, i32)> {
        self.begin_bounded_for(crate::lockwait::timeout()).await
    }

    /// [`Postgres::begin_bounded`] under `wait` instead (a fence raise within its budget).
    pub(super) async fn begin_bounded_for(
        &self,
        wait: Duration,
    ) -> Result<(sqlx::Transaction<'static, sqlx::Postgres>, i32)> {
        let mut tx = self.pool.begin().await?;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(&format!(
            "SET LOCAL lock_timeout = '{}ms'",
            wait.as_millis().clamp(1, 3_600_000)
        ))
        .execute(&mut *tx)
        .await?;
        Ok((tx, pid))
    }

    /// Watches the statement about to run on backend `pid`: should it still wait at half the
    /// lock timeout, the sessions blocking it are read from a second connection
    /// (`pg_blocking_pids`) while it waits.
    pub(super) fn watch(&self, pid: i32) -> tokio::task::JoinHandle<Option<String>> {
        self.watch_for(pid, crate::lockwait::timeout())
    }

    pub(super) fn watch_for(
        &self,
        pid: i32,
        wait: Duration,
    ) -> tokio::task::JoinHandle<Option<String>> {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait / 2).await;
            blockers(&pool, pid).await
        })
    }

    /// Commits (the rows `res` affected), or turns a lock timeout (55P03) into a [`crate::lockwait::Blocked`] naming
    /// the `holders`.
    pub(super) async fn end_bounded(
        &self,
        tx: sqlx::Transaction<'static, sqlx::Postgres>,
        stmt: &str,
        res: std::result::Result<sqlx::postgres::PgQueryResult, sqlx::Error>,
        watch: tokio::task::JoinHandle<Option<String>>,
    ) -> Result<u64> {
        match res {
            Ok(r) => {
                watch.abort();
                tx.commit().await?;
                Ok(r.rows_affected())
            }
            Err(e) => {
                drop(tx);
                let lock = matches!(&e, sqlx::Error::Database(db)
                    if db.code().as_deref() == Some("55P03"));
                if lock {
                    let holders = watch.await.ok().flatten();
                    Err(anyhow::Error::new(e).context(crate::lockwait::Blocked {
                        shard: self.shard.clone(),
                        what: crate::lockwait::describe_stmt(stmt),
                        holders,
                    }))
                } else {
                    watch.abort();
                    Err(e.into())
                }
            }
        }
    }
}

/// The sessions blocking backend `pid`, described for a message: pid, state, how long
/// their transaction has been open and the start of their last statement.
async fn blockers(pool: &PgPool, pid: i32) -> Option<String> {
    let q = sqlx::query_as::<_, (i32, Option<String>, Option<f64>, Option<String>)>(
        "SELECT a.pid, a.state, EXTRACT(EPOCH FROM now() - a.xact_start)::float8, \
             left(regexp_replace(a.query, '\\s+', ' ', 'g'), 80) \
             FROM pg_stat_activity a WHERE a.pid = ANY(pg_blocking_pids($1)) ORDER BY a.pid",
    )
    .bind(pid)
    .fetch_all(pool);
    let rows = tokio::time::timeout(Duration::from_secs(2), q)
        .await
        .ok()?
        .ok()?;
    if rows.is_empty() {
        return None;
    }
    Some(
        rows.iter()
            .map(|(pid, state, secs, query)| {
                format!(
                    "pid {pid} ({} for {} s: {:?})",
                    state.as_deref().unwrap_or("unknown state"),
                    secs.unwrap_or(0.0).round() as i64,
                    query.as_deref().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
    )
}
