//! Transient errors and bounded retry. A transient error (a dropped or refused connection, a
//! deadlock, a serialization failure, a lock timeout, SQLITE_BUSY) is worth trying again; any
//! other error stops the job as failed and resumable.

use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use backon::{ExponentialBuilder, Retryable};

/// PostgreSQL SQLSTATEs that a retry can cure.
const PG_TRANSIENT: &[&str] = &[
    "40001", // serialization_failure
    "40P01", // deadlock_detected
    "55P03", // lock_not_available
    "57P01", // admin_shutdown
    "57P02", // crash_shutdown
    "57P03", // cannot_connect_now
    "53300", // too_many_connections
];

/// MySQL/MariaDB error numbers that a retry can cure.
const MYSQL_TRANSIENT: &[&str] = &[
    "1213", // ER_LOCK_DEADLOCK
    "1205", // ER_LOCK_WAIT_TIMEOUT
    "1040", // ER_CON_COUNT_ERROR
    "2006", // CR_SERVER_GONE_ERROR
    "2013", // CR_SERVER_LOST
    "1927", // ER_CONNECTION_KILLED
];

/// Message fragments for errors that reach us only as text (a backend that wrapped a driver
/// error in its own message).
const TRANSIENT_TEXT: &[&str] = &[
    "connection refused",
    "connection reset",
    "broken pipe",
    "database is locked",
    "database table is locked",
    "deadlock",
    "serialization failure",
    "could not serialize access",
    "lock wait timeout",
    "pool timed out",
];

pub fn is_transient(err: &anyhow::Error) -> bool {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<sqlx::Error>() {
            match e {
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => {
                    return true
                }
                sqlx::Error::Database(db) => {
                    if let Some(code) = db.code() {
                        let code = code.as_ref();
                        if PG_TRANSIENT.contains(&code) || code.starts_with("08") {
                            return true;
                        }
                        if MYSQL_TRANSIENT.contains(&code) {
                            return true;
                        }
                        // SQLite primary result codes: 5 SQLITE_BUSY, 6 SQLITE_LOCKED (extended
                        // codes keep the primary code in their low byte).
                        if let Ok(n) = code.parse::<i64>() {
                            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
                                && matches!(n & 0xff, 5 | 6)
                            {
                                return true;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | ConnectionReset | ConnectionAborted | BrokenPipe | TimedOut
            ) {
                return true;
            }
        }
    }
    let text = format!("{err:#}").to_ascii_lowercase();
    TRANSIENT_TEXT.iter().any(|t| text.contains(t))
}

/// The retry policy: exponential from 100 ms, capped at 5 s per wait, 6 retries (about 15 s
/// in all) before the error is final. `RESHARD_RETRY_MAX` overrides the count (tests use 0-2).
pub fn policy() -> ExponentialBuilder {
    let times = std::env::var("RESHARD_RETRY_MAX")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(6);
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(times)
        .with_jitter()
}

/// Runs `f` until it succeeds, fails with a non-transient error, or the retries run out.
/// `what` names the operation in the one line printed per retry.
pub async fn retry<T, F, Fut>(what: &str, f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    retry_when(what, f, is_transient).await
}

/// [`retry`] with its own idea of what is transient ([`crate::lockwait`] takes lock timeouts
/// out: it retries those itself, printing who holds the lock).
pub async fn retry_when<T, F, Fut>(
    what: &str,
    f: F,
    when: impl FnMut(&anyhow::Error) -> bool,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    f.retry(policy())
        .sleep(tokio::time::sleep)
        .when(when)
        .notify(|e, d| {
            crate::progress::say(format!(
                "reshard: {what}: transient error, retrying in {} ms: {e:#}",
                d.as_millis()
            ))
        })
        .await
}

/// `Backend::describe`, retried: a definition read that a dropped connection used to turn into
/// "cannot be described" (preflight refused, `complete` stopped).
pub async fn describe(
    b: &dyn crate::backend::Backend,
    table: &str,
) -> Result<Option<crate::backend::TableSchema>> {
    retry(&format!("shard {}: describing {table}", b.shard()), || {
        b.describe(table)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_text_and_io_kind() {
        assert!(is_transient(&anyhow::anyhow!(
            "Connection refused (os error 111)"
        )));
        assert!(is_transient(&anyhow::anyhow!("database is locked")));
        assert!(!is_transient(&anyhow::anyhow!("no such table: t")));
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(is_transient(&anyhow::Error::new(io).context("reading")));
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert!(!is_transient(&anyhow::Error::new(io)));
    }

    #[tokio::test]
    async fn retries_transient_then_gives_up_and_never_retries_permanent() {
        std::env::set_var("RESHARD_RETRY_MAX", "2");
        let mut n = 0;
        let r: Result<()> = retry("t", || {
            n += 1;
            async { Err(anyhow::anyhow!("connection reset by peer")) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(n, 3);
        let mut m = 0;
        let r: Result<()> = retry("t", || {
            m += 1;
            async { Err(anyhow::anyhow!("syntax error")) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(m, 1);
    }
}
