//! Bounded lock waits for reshard's DDL and fence statements (issue 12).
//!
//! A `CREATE TRIGGER` that waits for a lock held by an idle application transaction also
//! blocks every later writer of the table (PostgreSQL's lock queue; MariaDB's metadata locks).
//! So every such statement runs under a short lock timeout ([`timeout`], `--lock-timeout`,
//! default 1 s); when it expires the backend reports a [`Blocked`] error naming the holder, and
//! [`bounded`] prints it, sleeps (the application's queued writes get through meanwhile) and
//! tries again, [`attempts`] times in all, before failing the job as resumable.
//!
//! The timeout is process-wide, set once by the command handler from its parsed options
//! ([`set_timeout`]): every backend statement reads it without threading it through.

use std::fmt;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Result;

/// The default lock timeout for DDL and fence statements.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

static TIMEOUT: OnceLock<Duration> = OnceLock::new();

/// Sets the process's lock timeout (first call wins; the command handler calls it once).
pub fn set_timeout(d: Duration) {
    let _ = TIMEOUT.set(d);
}

/// The lock timeout each DDL or fence statement runs under.
pub fn timeout() -> Duration {
    TIMEOUT.get().copied().unwrap_or(DEFAULT_TIMEOUT)
}

/// Whole seconds for MariaDB (`lock_wait_timeout` counts seconds, minimum 1): rounded up.
pub fn timeout_secs() -> u64 {
    let d = timeout();
    (d.as_millis().div_ceil(1000) as u64).max(1)
}

/// Attempts before giving up: 10, or `RESHARD_LOCK_RETRIES` (tests use fewer).
pub fn attempts() -> u32 {
    std::env::var("RESHARD_LOCK_RETRIES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(10)
        .max(1)
}

/// The wait before attempt `n + 1` (n from 1): 200 ms doubling, at most 2 s.
pub fn backoff(n: u32) -> Duration {
    let ms = 200u64.saturating_mul(1u64 << (n.saturating_sub(1)).min(10));
    Duration::from_millis(ms.min(2000))
}

/// A DDL or fence statement gave up waiting for a lock: what it was and who held it. The
/// backend attaches it (as context) to the driver's lock-timeout error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub shard: String,
    /// The statement, shortened: `CREATE TRIGGER on users`.
    pub what: String,
    /// The holders, e.g. `pid 12345 (idle in transaction for 12 s: "UPDATE users ...")`, or
    /// None when they could not be found (they may have gone).
    pub holders: Option<String>,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} waits for a lock", self.shard, self.what)?;
        match &self.holders {
            Some(h) => write!(f, " held by {h}"),
            None => write!(f, " (holder not found)"),
        }
    }
}

impl std::error::Error for Blocked {}

/// The process got a second SIGINT/SIGTERM while waiting: stop now. The job is recorded
/// `interrupted` (exit 130).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped at once (second signal) while waiting")]
pub struct Aborted;

/// The [`Blocked`] in `err`'s chain (anyhow's own downcast: it sees context layers too).
pub fn blocked(err: &anyhow::Error) -> Option<&Blocked> {
    err.downcast_ref::<Blocked>()
}

pub fn is_aborted(err: &anyhow::Error) -> bool {
    err.downcast_ref::<Aborted>().is_some()
}

/// A statement's short description for messages: its verb and the table it acts on
/// (`CREATE TRIGGER on users`), never its body.
pub fn describe_stmt(stmt: &str) -> String {
    let words: Vec<&str> = stmt.split_whitespace().collect();
    let mut verb: Vec<&str> = Vec::new();
    for w in words.iter().take(4) {
        let up = w.to_ascii_uppercase();
        if matches!(
            up.as_str(),
            "CREATE"
                | "DROP"
                | "ALTER"
                | "OR"
                | "REPLACE"
                | "TRIGGER"
                | "TABLE"
                | "FUNCTION"
                | "INDEX"
                | "UPDATE"
                | "INSERT"
                | "DELETE"
                | "ANALYZE"
                | "IF"
                | "EXISTS"
                | "NOT"
                | "INTO"
                | "FROM"
        ) {
            verb.push(w);
        } else {
            break;
        }
    }
    let verb = if verb.is_empty() {
        words.first().copied().unwrap_or("statement").to_string()
    } else {
        verb.join(" ").to_ascii_uppercase()
    };
    let table = words
        .windows(2)
        .find(|w| w[0].eq_ignore_ascii_case("ON"))
        .map(|w| w[1])
        .or_else(|| {
            // `DROP TABLE IF EXISTS t`, `UPDATE t SET`, `INSERT INTO t`.
            words
                .iter()
                .position(|w| !verb.split(' ').any(|v| v.eq_ignore_ascii_case(w)))
                .and_then(|i| words.get(i).copied())
        });
    let on = words.iter().any(|w| w.eq_ignore_ascii_case("ON"));
    match table {
        Some(t) => {
            let t: String = t
                .trim_matches(|c| matches!(c, '"' | '`' | '(' | ')' | ';'))
                .chars()
                .take(64)
                .collect();
            format!("{verb}{}{t}", if on { " on " } else { " " })
        }
        None => verb,
    }
}

/// Runs `f` (one DDL or fence operation, idempotent) until it succeeds. A lock timeout
/// ([`Blocked`]) is retried [`attempts`] times with [`backoff`], printing the holder once per
/// attempt; other transient errors go through [`crate::retry`]'s policy. A second signal
/// ([`crate::signals::hard_stopped`]) aborts the attempt or the sleep at once with [`Aborted`].
pub async fn bounded<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let max = attempts();
    let mut n = 1;
    loop {
        let attempt = crate::retry::retry_when(what, &mut f, |e| {
            crate::retry::is_transient(e) && blocked(e).is_none()
        });
        let r = tokio::select! {
            r = attempt => r,
            _ = crate::signals::hard_stopped() => return Err(anyhow::Error::new(Aborted)),
        };
        let e = match r {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let Some(b) = blocked(&e).cloned() else {
            return Err(e);
        };
        if n >= max {
            return Err(e.context(format!(
                "{b}; gave up after {max} attempt(s) of {} ms each (--lock-timeout). End \
                 that transaction, then resume the job",
                timeout().as_millis()
            )));
        }
        let wait = backoff(n);
        n += 1;
        crate::progress::say(format!(
            "reshard: {b}; retry {n}/{max} in {} ms",
            wait.as_millis()
        ));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = crate::signals::hard_stopped() => return Err(anyhow::Error::new(Aborted)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_described_by_verb_and_table() {
        assert_eq!(
            describe_stmt("CREATE TRIGGER _rs_cap_users AFTER INSERT ON users FOR EACH ROW"),
            "CREATE TRIGGER on users"
        );
        assert_eq!(
            describe_stmt("DROP TABLE IF EXISTS \"_rs_log_users\""),
            "DROP TABLE IF EXISTS _rs_log_users"
        );
        assert_eq!(describe_stmt("ANALYZE \"users\""), "ANALYZE users");
    }

    #[test]
    fn backoff_doubles_to_two_seconds_and_seconds_round_up() {
        let ms: Vec<u128> = (1..=6).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(ms, vec![200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(DEFAULT_TIMEOUT.as_millis().div_ceil(1000), 1);
    }

    #[tokio::test]
    async fn blocked_is_retried_then_reported_with_the_holder() {
        std::env::set_var("RESHARD_LOCK_RETRIES", "2");
        let mut calls = 0;
        let r: Result<()> = bounded("t", || {
            calls += 1;
            async {
                Err(anyhow::anyhow!("lock timeout").context(Blocked {
                    shard: "s0".into(),
                    what: "CREATE TRIGGER on users".into(),
                    holders: Some("pid 7".into()),
                }))
            }
        })
        .await;
        let e = r.unwrap_err();
        assert_eq!(calls, 2);
        assert!(format!("{e:#}").contains("held by pid 7"), "{e:#}");
        assert!(blocked(&e).is_some());
    }
}
