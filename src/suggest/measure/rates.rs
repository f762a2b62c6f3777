//! Write rates from the servers' own counters, read at the start and at the end of a sampling
//! window on the read-only session; nothing is switched on or reset.
//!
//! - PostgreSQL: `pg_stat_user_tables` (`n_tup_ins + n_tup_upd + n_tup_del`). A session flushes
//!   its counts to the shared statistics when a transaction ends, at most once a second (a
//!   session that falls idle within that second flushes up to 10 s later), and each read here is
//!   its own transaction, so it sees every flush before it. A window of T seconds therefore
//!   counts a steady writer's rows to within about one second of them (±1/T), rows of rolled
//!   back transactions included.
//! - MariaDB: `information_schema.TABLE_STATISTICS` (`ROWS_CHANGED`, kept at statement end)
//!   when `userstat` is on; else `performance_schema.table_io_waits_summary_by_table`
//!   (`COUNT_INSERT + COUNT_UPDATE + COUNT_DELETE`, row operations) when performance_schema is
//!   on with the table I/O instrument enabled; else none.
//! - SQLite keeps no counters.

use anyhow::Result;
use sqlx::Row as _;

use super::{Bind, Conn, Sql};
use crate::ident::Dialect;

/// Where a shard's counters of rows written come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Counters {
    PgStat,
    UserStat,
    PerfSchema,
}

impl Counters {
    pub fn name(self) -> &'static str {
        match self {
            Counters::PgStat => "pg_stat_user_tables",
            Counters::UserStat => "information_schema.TABLE_STATISTICS",
            Counters::PerfSchema => "performance_schema.table_io_waits_summary_by_table",
        }
    }
}

impl Conn {
    /// A MariaDB/MySQL global variable's value (None where it does not exist).
    async fn global(&mut self, name: &'static str) -> Result<Option<String>> {
        let Conn::My(c) = self else {
            return Ok(None);
        };
        // SHOW takes no placeholders; the name is a constant of this module.
        let rows = sqlx::query(&format!("SHOW GLOBAL VARIABLES LIKE '{name}'"))
            .fetch_all(&mut *c)
            .await?;
        Ok(match rows.first() {
            Some(r) => Some(r.try_get::<String, _>(1)?),
            None => None,
        })
    }

    /// The counters this shard keeps, or why there are none.
    pub(super) async fn counters(&mut self) -> Result<Result<Counters, String>> {
        let on = |v: Option<String>| v.is_some_and(|v| v.eq_ignore_ascii_case("on") || v == "1");
        Ok(match self.dialect() {
            Dialect::Sqlite => {
                Err("write rate not available: SQLite keeps no write counters".into())
            }
            Dialect::Postgres => {
                let mut q = Sql::new(Dialect::Postgres);
                q.push("SELECT CAST(CASE WHEN current_setting('track_counts') = 'on' THEN 1 ELSE 0 END AS bigint)");
                match self.int(&q).await? {
                    Some(1) => Ok(Counters::PgStat),
                    _ => Err("write rate not available: track_counts is off".into()),
                }
            }
            Dialect::Mysql => {
                if on(self.global("userstat").await?) {
                    Ok(Counters::UserStat)
                } else if !on(self.global("performance_schema").await?) {
                    Err("write rate not available (userstat and performance_schema are off)".into())
                } else if self.table_io_instrumented().await? {
                    Ok(Counters::PerfSchema)
                } else {
                    Err(
                        "write rate not available: userstat is off and performance_schema's \
                         wait/io/table/sql/handler instrument is disabled"
                            .into(),
                    )
                }
            }
        })
    }

    async fn table_io_instrumented(&mut self) -> Result<bool> {
        let mut q = Sql::new(Dialect::Mysql);
        q.push(
            "SELECT CAST(COUNT(*) AS SIGNED) FROM performance_schema.setup_instruments \
             WHERE NAME = 'wait/io/table/sql/handler' AND ENABLED = 'YES'",
        );
        Ok(self.int(&q).await?.unwrap_or(0) > 0)
    }

    /// Rows written to `table` since the counters began, as the server counts them.
    pub(super) async fn written(&mut self, src: Counters, table: &str) -> Result<i64> {
        let mut q = Sql::new(self.dialect());
        q.push(match src {
            Counters::PgStat => {
                "SELECT CAST(n_tup_ins + n_tup_upd + n_tup_del AS bigint) \
                 FROM pg_catalog.pg_stat_user_tables \
                 WHERE schemaname = current_schema() AND relname = "
            }
            Counters::UserStat => {
                "SELECT CAST(ROWS_CHANGED AS SIGNED) FROM information_schema.TABLE_STATISTICS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = "
            }
            Counters::PerfSchema => {
                "SELECT CAST(COUNT_INSERT + COUNT_UPDATE + COUNT_DELETE AS SIGNED) \
                 FROM performance_schema.table_io_waits_summary_by_table \
                 WHERE OBJECT_TYPE = 'TABLE' AND OBJECT_SCHEMA = DATABASE() AND OBJECT_NAME = "
            }
        })
        .param(Bind::Text(table.to_string()));
        // No row yet: nothing written since the counters began.
        Ok(self.int(&q).await?.unwrap_or(0))
    }
}

/// The counters at the start of a window, per table.
pub(super) struct Window {
    pub src: Counters,
    pub start: Vec<(String, i64)>,
    pub at: std::time::Instant,
}

/// Reads every table's counter: the start of a window.
pub(super) async fn open(c: &mut Conn, src: Counters, tables: &[String]) -> Result<Window> {
    let mut start = Vec::with_capacity(tables.len());
    for t in tables {
        start.push((t.clone(), c.written(src, t).await?));
    }
    Ok(Window {
        src,
        start,
        at: std::time::Instant::now(),
    })
}

/// Waits out the window and reads the counters again: rows written per second per table, or
/// why not (a counter that went backwards was reset during the window).
pub(super) async fn close(
    c: &mut Conn,
    w: Window,
    length: std::time::Duration,
) -> Result<Result<Vec<(String, f64)>, String>> {
    tokio::time::sleep(length.saturating_sub(w.at.elapsed())).await;
    let mut end = Vec::with_capacity(w.start.len());
    for (t, _) in &w.start {
        end.push(c.written(w.src, t).await?);
    }
    let secs = w.at.elapsed().as_secs_f64().max(1e-3);
    let mut out = Vec::with_capacity(end.len());
    for ((t, a), b) in w.start.into_iter().zip(end) {
        if b < a {
            return Ok(Err(format!(
                "write rate not available: {}'s counters of {t} were reset during the window",
                w.src.name()
            )));
        }
        out.push((t, (b - a) as f64 / secs));
    }
    Ok(Ok(out))
}
