//! Replication positions, for `apply --read-from replica` (src/replica_read.rs): where a primary
//! is now, and whether a replica has replayed past that point. The position is the server's
//! own text (a PostgreSQL LSN, a MariaDB GTID list) and is always bound, never spliced.

use anyhow::{Context as _, Result};
use sqlx::{MySqlPool, PgPool, Row};

/// What a replica says of a primary's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// It has replayed past the position: what it shows now includes every commit before it.
    Past,
    /// Not yet; where it is, in the server's terms.
    Behind(String),
    /// The server is not replaying anything (it is a primary, or was promoted).
    NotReplica,
}

pub(super) async fn pg_position(shard: &str, pool: &PgPool) -> Result<Option<String>> {
    let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(pool)
        .await
        .with_context(|| format!("shard {shard}: reading its WAL position"))?;
    Ok(Some(lsn))
}

pub(super) async fn pg_replayed(shard: &str, pool: &PgPool, pos: &str) -> Result<Replayed> {
    let row = sqlx::query(
        "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, \
                pg_last_wal_replay_lsn() >= $1::pg_lsn",
    )
    .bind(pos)
    .fetch_one(pool)
    .await
    .with_context(|| format!("{shard}: reading its replay position"))?;
    let recovering: bool = row.try_get(0)?;
    let at: Option<String> = row.try_get(1)?;
    let past: Option<bool> = row.try_get(2)?;
    Ok(match (recovering, at, past) {
        (false, _, _) | (_, None, _) => Replayed::NotReplica,
        (true, Some(_), Some(true)) => Replayed::Past,
        (true, Some(at), _) => Replayed::Behind(at),
    })
}

pub(super) async fn mysql_position(shard: &str, pool: &MySqlPool) -> Result<Option<String>> {
    let row = sqlx::query("SELECT @@GLOBAL.log_bin, CAST(@@GLOBAL.gtid_binlog_pos AS CHAR)")
        .fetch_one(pool)
        .await
        .with_context(|| format!("shard {shard}: reading its binlog GTID position"))?;
    let log_bin: i64 = row.try_get(0)?;
    if log_bin == 0 {
        anyhow::bail!(
            "shard {shard} has no binary log (log_bin is off), so no replica can be compared \
             with it; copy from the primary (--read-from primary)"
        );
    }
    Ok(Some(row.try_get(1)?))
}

pub(super) async fn mysql_replayed(shard: &str, pool: &MySqlPool, pos: &str) -> Result<Replayed> {
    // MASTER_GTID_WAIT returns 0 once the replica's applied position includes `pos`, -1 after
    // the timeout (a fraction of a second: the caller polls, bounded, and stays stoppable).
    let row = sqlx::query(
        "SELECT MASTER_GTID_WAIT(?, 0.2), CAST(@@GLOBAL.gtid_slave_pos AS CHAR), \
                (SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE COMMAND IN ('Slave_IO', 'Slave_SQL'))",
    )
    .bind(pos)
    .fetch_one(pool)
    .await
    .with_context(|| format!("{shard}: reading its GTID position"))?;
    let waited: Option<i64> = row.try_get(0)?;
    let at: Option<String> = row.try_get(1)?;
    let threads: i64 = row.try_get(2)?;
    Ok(match waited {
        Some(0) => Replayed::Past,
        _ if threads == 0 && at.as_deref().unwrap_or("").is_empty() => Replayed::NotReplica,
        _ => Replayed::Behind(at.unwrap_or_default()),
    })
}
