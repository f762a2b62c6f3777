//! How far behind a job's change capture is, for `status`: the entries waiting in each change
//! log and the age of the oldest, read from the shards, and whether any reshard process is
//! serving the job at all.
//!
//! Applied entries are deleted from a log (by sequence number), so what a log holds is exactly
//! what no one has applied yet: before a move flips, writes at its source waiting to go
//! forward; in dual write, writes at its destination waiting to flow back to the old owner
//! (reverse sync). A backlog that only grows means no process is consuming it.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::{self, Backend};
use crate::ident::Dialect;
use crate::job::JobState;
use crate::plan::Plan;
use crate::triggers::{log_table, now_ms_sql, LOG_TIME_COLUMN};

/// One change log on one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogBacklog {
    pub shard: String,
    pub table: String,
    pub entries: u64,
    /// Milliseconds since the oldest waiting entry was logged; None when the log is empty or
    /// was made by a reshard that did not record times.
    pub oldest_ms: Option<i64>,
}

/// What `status` could read of one shard's logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardLogs {
    Read(Vec<LogBacklog>),
    Unreachable { shard: String, why: String },
}

/// The query for one log: entries, and the age of the oldest by the shard's own clock (so
/// that clocks of different machines never meet).
pub fn backlog_sql(dialect: Dialect, log: &str, timed: bool) -> String {
    let q = dialect.quote(log);
    let age = if timed {
        let t = dialect.quote(LOG_TIME_COLUMN);
        format!("{} - MIN({t})", now_ms_sql(dialect))
    } else {
        "NULL".to_string()
    };
    match dialect {
        // COUNT(*) is BIGINT already; the NULL needs a type for the decoder.
        Dialect::Postgres => format!("SELECT COUNT(*), CAST({age} AS bigint) FROM {q}"),
        Dialect::Mysql => format!("SELECT COUNT(*), CAST({age} AS SIGNED) FROM {q}"),
        Dialect::Sqlite => format!("SELECT COUNT(*), {age} FROM {q}"),
    }
}

/// A connection attempt or a read may take this long before status reports the shard as
/// unreachable instead of waiting: status must answer while a shard is down.
const SHARD_WAIT: Duration = Duration::from_secs(3);

/// Reads every change log of the job's shards, each shard concurrently.
pub async fn read(plan: &Plan) -> Vec<ShardLogs> {
    let mut shards: Vec<(String, crate::shard_url::ShardUrl)> = Vec::new();
    for m in &plan.moves {
        for (name, map) in [(&m.source, &plan.from), (&m.destination, &plan.to)] {
            if let Some(url) = map.shards.get(name) {
                if !shards.iter().any(|(n, _)| n == name) {
                    shards.push((name.clone(), url.clone()));
                }
            }
        }
    }
    let tables: Vec<String> = plan.from.tables.iter().map(|t| t.name.clone()).collect();
    let reads = shards.into_iter().map(|(name, url)| {
        let tables = tables.clone();
        async move {
            let res = tokio::time::timeout(SHARD_WAIT, async {
                let b = backend::connect(&name, &url).await?;
                shard_logs(&b, &tables).await
            })
            .await;
            match res {
                Ok(Ok(logs)) => ShardLogs::Read(logs),
                Ok(Err(e)) => ShardLogs::Unreachable {
                    shard: name,
                    why: format!("{e:#}"),
                },
                Err(_) => ShardLogs::Unreachable {
                    shard: name,
                    why: format!("no answer within {}s", SHARD_WAIT.as_secs()),
                },
            }
        }
    });
    futures_util::future::join_all(reads).await
}

async fn shard_logs(b: &Arc<dyn Backend>, tables: &[String]) -> anyhow::Result<Vec<LogBacklog>> {
    let mut out = Vec::new();
    for t in tables {
        let log = log_table(t);
        let Some(schema) = b.describe(&log).await? else {
            continue;
        };
        let timed = schema.column_index(LOG_TIME_COLUMN).is_some();
        let row = b.int_row(&backlog_sql(b.dialect(), &log, timed)).await?;
        out.push(LogBacklog {
            shard: b.shard().to_string(),
            table: t.clone(),
            entries: row.first().copied().flatten().unwrap_or(0).max(0) as u64,
            oldest_ms: row.get(1).copied().flatten(),
        });
    }
    Ok(out)
}

/// The warning `status` prints when a job in dual write has no live lease: no process applies
/// the new owners' writes to the old owners, so their logs grow, and a rollback must first
/// apply all of it under its fence. Pure: the lease expiry against `now_ms`.
pub fn unserved_warning(
    job: &str,
    state: JobState,
    lease_expires_ms: Option<i64>,
    now_ms: i64,
) -> Option<String> {
    let served = lease_expires_ms.is_some_and(|t| t > now_ms);
    (state == JobState::DualWrite && !served).then(|| {
        format!(
            "no reshard process is serving job {job}: writes at the new owners wait in their \
             change logs instead of flowing back to the old owners (a rollback applies them \
             first, under its fence). Start a worker: reshard worker (or reverse sync alone: \
             reshard sync {job})"
        )
    })
}

/// `1.2s`, `3m04s`, `2h05m`: a log's age, short enough for a status column.
pub fn age_text(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        _ if ms < 10_000 => format!("{:.1}s", ms.max(0) as f64 / 1000.0),
        0..=599 => format!("{s}s"),
        600..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dual_write_job_without_a_live_lease_is_unserved() {
        let now = 1_000_000;
        let w = unserved_warning("j1", JobState::DualWrite, None, now).unwrap();
        assert!(w.contains("reshard sync j1"), "{w}");
        assert!(unserved_warning("j1", JobState::DualWrite, Some(now - 1), now).is_some());
        assert!(unserved_warning("j1", JobState::DualWrite, Some(now + 5000), now).is_none());
        // Other states have no reverse sync to serve.
        assert!(unserved_warning("j1", JobState::Running, None, now).is_none());
        assert!(unserved_warning("j1", JobState::Completed, None, now).is_none());
    }

    #[test]
    fn ages_fit_a_column() {
        assert_eq!(age_text(0), "0.0s");
        assert_eq!(age_text(1234), "1.2s");
        assert_eq!(age_text(42_000), "42s");
        assert_eq!(age_text(184_000), "184s");
        assert_eq!(age_text(601_000), "10m01s");
        assert_eq!(age_text(7_500_000), "2h05m");
        assert_eq!(age_text(-5), "0.0s");
    }

    #[test]
    fn untimed_logs_have_no_age() {
        for d in [Dialect::Postgres, Dialect::Mysql, Dialect::Sqlite] {
            let sql = backlog_sql(d, "_rs_log_users", false);
            assert!(!sql.contains(LOG_TIME_COLUMN), "{sql}");
            assert!(backlog_sql(d, "_rs_log_users", true).contains(LOG_TIME_COLUMN));
        }
    }
}
