//! suggest's I/O: connects read-only to each shard of the map and measures it into
//! [`Measurements`]. Nothing here decides anything, and nothing is written to any database:
//! SQLite files are opened read-only (never created), PostgreSQL sessions start with
//! `default_transaction_read_only`, MariaDB/MySQL sessions with `SET SESSION TRANSACTION READ
//! ONLY`.
//!
//! Table and column names come from the map (checked to be plain identifiers when it was
//! loaded) and are quoted with [`Dialect::quote`]; every value is bound.

use std::collections::BTreeMap;
use std::str::FromStr as _;

use anyhow::{anyhow, Context as _, Result};
use sqlx::{Connection as _, Executor as _, Row as _};

use super::{KeySample, Measurements, QuantileMethod, RangeData, ShardLoad, TableLoad, QUANTILES};
use crate::error::InputError;
use crate::ident::Dialect;
use crate::map::{Bound, KeyKind, Map, Partitioning, RangeSpec, TableSpec};
use crate::shard_url::{dialect_of, ShardUrl};

mod rates;

/// How key quantiles and write rates are measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct MeasureOptions {
    /// Always by key order (`ORDER BY key LIMIT 1 OFFSET n`), never from pg_stats.
    pub exact: bool,
    /// The write-rate sampling window; zero: no write rates.
    pub sample: std::time::Duration,
}

/// A read-only connection to one shard.
enum Conn {
    Sqlite(sqlx::SqliteConnection),
    Pg(sqlx::PgConnection),
    My(sqlx::MySqlConnection),
}

#[derive(Debug, Clone)]
enum Bind {
    Int(i64),
    Text(String),
}

impl From<&Bound> for Bind {
    fn from(b: &Bound) -> Bind {
        match b {
            Bound::Int(v) => Bind::Int(*v),
            Bound::Text(s) => Bind::Text(s.clone()),
        }
    }
}

/// SQL text with its bound values, placeholders in the dialect's style.
struct Sql {
    dialect: Dialect,
    text: String,
    binds: Vec<Bind>,
}

impl Sql {
    fn new(dialect: Dialect) -> Sql {
        Sql {
            dialect,
            text: String::new(),
            binds: Vec::new(),
        }
    }
    fn push(&mut self, s: &str) -> &mut Sql {
        self.text.push_str(s);
        self
    }
    fn param(&mut self, b: Bind) -> &mut Sql {
        self.binds.push(b);
        let p = match self.dialect {
            Dialect::Postgres => format!("${}", self.binds.len()),
            _ => "?".to_string(),
        };
        self.text.push_str(&p);
        self
    }
    /// A bound compared with [`ordered_key`]: bytewise for text on MariaDB/MySQL too.
    fn bound(&mut self, b: &Bound) -> &mut Sql {
        match (self.dialect, b) {
            (Dialect::Mysql, Bound::Text(_)) => {
                self.push("CAST(").param(b.into()).push(" AS BINARY)")
            }
            _ => self.param(b.into()),
        }
    }
    /// ` WHERE key >= lo AND key < hi` for the bounds given; `key` from [`ordered_key`].
    fn range(&mut self, key: &str, lo: Option<&Bound>, hi: Option<&Bound>) -> &mut Sql {
        let mut word = " WHERE ";
        if let Some(lo) = lo {
            self.push(word).push(key).push(" >= ").bound(lo);
            word = " AND ";
        }
        if let Some(hi) = hi {
            self.push(word).push(key).push(" < ").bound(hi);
        }
        self
    }
}

/// The (quoted) key column as the map orders keys: integers by value, text bytewise (UTF-8
/// bytes, Rust's `str` order) whatever the column's collation: PostgreSQL `COLLATE "C"`,
/// MariaDB/MySQL `CAST(.. AS BINARY)` (utf8mb4's bytes, no padding, no case folding), SQLite
/// `COLLATE BINARY`.
fn ordered_key(d: Dialect, key: &str, integer: bool) -> String {
    match (d, integer) {
        (_, true) => key.to_string(),
        (Dialect::Postgres, false) => format!("{key} COLLATE \"C\""),
        (Dialect::Mysql, false) => format!("CAST({key} AS BINARY)"),
        (Dialect::Sqlite, false) => format!("{key} COLLATE BINARY"),
    }
}

macro_rules! fetch_column {
    ($conn:expr, $sql:expr, $ty:ty) => {{
        let mut q = sqlx::query(&$sql.text);
        for b in &$sql.binds {
            q = match b {
                Bind::Int(v) => q.bind(*v),
                Bind::Text(s) => q.bind(s.clone()),
            };
        }
        let rows = q.fetch_all(&mut *$conn).await?;
        let mut out: Vec<$ty> = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(row.try_get::<$ty, _>(0)?);
        }
        out
    }};
}

impl Conn {
    async fn open(shard: &str, url: &ShardUrl) -> Result<Conn> {
        let raw = url.resolve(shard).map_err(anyhow::Error::msg)?;
        // Parse errors could quote the URL, so they are not passed on.
        match dialect_of(&raw) {
            Some(Dialect::Sqlite) => {
                let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&raw)
                    .map_err(|_| anyhow!("shard {shard}: not a valid sqlite: URL"))?
                    .read_only(true)
                    .create_if_missing(false);
                let c = sqlx::SqliteConnection::connect_with(&opts)
                    .await
                    .map_err(|e| anyhow!("shard {shard}: cannot open the SQLite database: {e}"))?;
                Ok(Conn::Sqlite(c))
            }
            Some(Dialect::Postgres) => {
                let opts = sqlx::postgres::PgConnectOptions::from_str(&raw)
                    .map_err(|_| anyhow!("shard {shard}: not a valid postgres:// URL"))?
                    .application_name("reshard suggest")
                    .options([("default_transaction_read_only", "on")]);
                let c = sqlx::PgConnection::connect_with(&opts)
                    .await
                    .map_err(|e| anyhow!("shard {shard}: cannot connect to PostgreSQL: {e}"))?;
                Ok(Conn::Pg(c))
            }
            Some(Dialect::Mysql) => {
                let opts = sqlx::mysql::MySqlConnectOptions::from_str(&raw)
                    .map_err(|_| anyhow!("shard {shard}: not a valid mysql:// URL"))?
                    .charset("utf8mb4");
                let mut c = sqlx::MySqlConnection::connect_with(&opts)
                    .await
                    .map_err(|e| anyhow!("shard {shard}: cannot connect to MySQL/MariaDB: {e}"))?;
                c.execute("SET SESSION TRANSACTION READ ONLY").await?;
                Ok(Conn::My(c))
            }
            None => anyhow::bail!("shard {shard}: unsupported URL scheme"),
        }
    }

    fn dialect(&self) -> Dialect {
        match self {
            Conn::Sqlite(_) => Dialect::Sqlite,
            Conn::Pg(_) => Dialect::Postgres,
            Conn::My(_) => Dialect::Mysql,
        }
    }

    async fn ints(&mut self, sql: &Sql) -> Result<Vec<Option<i64>>> {
        Ok(match self {
            Conn::Sqlite(c) => fetch_column!(c, sql, Option<i64>),
            Conn::Pg(c) => fetch_column!(c, sql, Option<i64>),
            Conn::My(c) => fetch_column!(c, sql, Option<i64>),
        })
    }

    async fn texts(&mut self, sql: &Sql) -> Result<Vec<Option<String>>> {
        Ok(match self {
            Conn::Sqlite(c) => fetch_column!(c, sql, Option<String>),
            Conn::Pg(c) => fetch_column!(c, sql, Option<String>),
            Conn::My(c) => fetch_column!(c, sql, Option<String>),
        })
    }

    async fn int(&mut self, sql: &Sql) -> Result<Option<i64>> {
        Ok(self.ints(sql).await?.into_iter().next().flatten())
    }

    async fn exists(&mut self, table: &str) -> Result<bool> {
        let mut q = Sql::new(self.dialect());
        match self.dialect() {
            Dialect::Sqlite => q.push(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND lower(name) = lower(",
            ),
            Dialect::Postgres => q.push(
                "SELECT COUNT(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema() \
                 AND tablename = (",
            ),
            Dialect::Mysql => q.push(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() \
                 AND TABLE_NAME = (",
            ),
        };
        q.param(Bind::Text(table.to_string())).push(")");
        Ok(self.int(&q).await?.unwrap_or(0) > 0)
    }

    /// Rows of `table` with its key in the window.
    async fn count(&mut self, t: &TableSpec, w: &Window<'_>) -> Result<u64> {
        let d = self.dialect();
        let mut q = Sql::new(d);
        q.push("SELECT COUNT(*) FROM ")
            .push(&d.quote(&t.name))
            .range(&ordered_key(d, &d.quote(&t.key), w.integer), w.lo, w.hi);
        Ok(self.int(&q).await?.unwrap_or(0).max(0) as u64)
    }

    /// The table's size on disk, where the server keeps it (not SQLite).
    async fn bytes(&mut self, table: &str) -> Result<Option<u64>> {
        let d = self.dialect();
        let mut q = Sql::new(d);
        match d {
            Dialect::Sqlite => return Ok(None),
            Dialect::Postgres => q
                .push("SELECT CAST(pg_total_relation_size(to_regclass(")
                .param(Bind::Text(d.quote(table)))
                .push(")) AS bigint)"),
            Dialect::Mysql => q
                .push(
                    "SELECT CAST(DATA_LENGTH + INDEX_LENGTH AS SIGNED) FROM \
                     information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ",
                )
                .param(Bind::Text(table.to_string())),
        };
        Ok(self.int(&q).await?.map(|b| b.max(0) as u64))
    }

    /// The key at `offset` in key order among the rows with key in `[lo, hi)`.
    async fn key_at(
        &mut self,
        t: &TableSpec,
        r: &Window<'_>,
        offset: u64,
    ) -> Result<Option<Bound>> {
        let d = self.dialect();
        let key = d.quote(&t.key);
        let cast = match (d, r.integer) {
            (Dialect::Postgres, true) => "bigint",
            (Dialect::Mysql, true) => "SIGNED",
            (Dialect::Sqlite, true) => "INTEGER",
            (Dialect::Mysql, false) => "CHAR",
            (_, false) => "TEXT",
        };
        let ordered = ordered_key(d, &key, r.integer);
        let mut q = Sql::new(d);
        q.push(&format!("SELECT CAST({key} AS {cast}) FROM "))
            .push(&d.quote(&t.name))
            .range(&ordered, r.lo, r.hi)
            .push(&format!(" ORDER BY {ordered} LIMIT 1 OFFSET "))
            .param(Bind::Int(offset as i64));
        Ok(if r.integer {
            self.int(&q).await?.map(Bound::Int)
        } else {
            self.texts(&q)
                .await?
                .into_iter()
                .next()
                .flatten()
                .map(Bound::Text)
        })
    }

    /// Whether PostgreSQL orders this text column bytewise (collation "C" or "POSIX", its own
    /// or the database's libc default). pg_stats' histogram follows the column's collation.
    async fn bytewise_collation(&mut self, t: &TableSpec) -> bool {
        let mut q = Sql::new(Dialect::Postgres);
        q.push(
            "SELECT CAST(COUNT(*) AS bigint) FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation \
             CROSS JOIN pg_catalog.pg_database d \
             WHERE d.datname = current_database() AND a.attrelid = to_regclass(",
        )
        .param(Bind::Text(Dialect::Postgres.quote(&t.name)))
        .push(") AND a.attname = ")
        .param(Bind::Text(t.key.clone()))
        .push(
            " AND (co.collname IN ('C', 'POSIX') OR (co.collname = 'default' \
             AND d.datlocprovider = 'c' AND d.datcollate IN ('C', 'POSIX')))",
        );
        // An older server without datlocprovider: not known to be bytewise.
        matches!(self.int(&q).await, Ok(Some(n)) if n > 0)
    }

    /// PostgreSQL's histogram bounds of the key column, sorted; None when it keeps none (no
    /// ANALYZE yet) or elsewhere.
    async fn histogram(&mut self, t: &TableSpec, integer: bool) -> Option<Vec<Bound>> {
        if self.dialect() != Dialect::Postgres {
            return None;
        }

        let ty = if integer { "bigint" } else { "text" };
        let mut q = Sql::new(Dialect::Postgres);
        q.push(&format!(
            "SELECT CAST(b AS {ty}) FROM pg_catalog.pg_stats s, \
             unnest(CAST(CAST(s.histogram_bounds AS text) AS {ty}[])) AS b \
             WHERE s.schemaname = current_schema() AND s.tablename = "
        ))
        .param(Bind::Text(t.name.clone()))
        .push(" AND s.attname = ")
        .param(Bind::Text(t.key.clone()));
        let mut out: Vec<Bound> = if integer {
            self.ints(&q)
                .await
                .ok()?
                .into_iter()
                .flatten()
                .map(Bound::Int)
                .collect()
        } else {
            self.texts(&q)
                .await
                .ok()?
                .into_iter()
                .flatten()
                .map(Bound::Text)
                .collect()
        };
        out.sort();
        out.dedup();
        (!out.is_empty()).then_some(out)
    }

    async fn close(self) {
        let _ = match self {
            Conn::Sqlite(c) => c.close().await,
            Conn::Pg(c) => c.close().await,
            Conn::My(c) => c.close().await,
        };
    }
}

/// One range of one table to sample.
struct Window<'a> {
    lo: Option<&'a Bound>,
    hi: Option<&'a Bound>,
    integer: bool,
}

/// Exact points: the keys at ranks `i * rows / QUANTILES`, and the largest key.
async fn exact_sample(c: &mut Conn, t: &TableSpec, w: &Window<'_>, rows: u64) -> Result<KeySample> {
    let mut ranks: Vec<u64> = (0..QUANTILES).map(|i| i * rows / QUANTILES).collect();
    ranks.push(rows.saturating_sub(1));
    ranks.dedup();
    let mut points: Vec<(Bound, u64)> = Vec::new();
    if rows > 0 {
        for r in ranks {
            if let Some(k) = c.key_at(t, w, r).await? {
                if points.last().is_none_or(|(last, _)| *last < k) {
                    points.push((k, r));
                }
            }
        }
    }
    Ok(KeySample {
        rows,
        points,
        method: QuantileMethod::Exact,
    })
}

/// Points from the histogram bounds inside the window, taken as evenly spaced in rank.
fn histogram_sample(bounds: &[Bound], w: &Window<'_>, rows: u64) -> Option<KeySample> {
    let inside: Vec<&Bound> = bounds
        .iter()
        .filter(|b| w.lo.is_none_or(|l| *b >= l) && w.hi.is_none_or(|h| *b < h))
        .collect();
    let m = inside.len() as u64;
    if m < 4 || rows == 0 {
        return None;
    }
    let points = inside
        .into_iter()
        .enumerate()
        .map(|(j, b)| (b.clone(), rows * j as u64 / m))
        .collect();
    Some(KeySample {
        rows,
        points,
        method: QuantileMethod::Histogram,
    })
}

/// What one shard contributes: its load, and the data of the ranges it owns.
struct ShardResult {
    load: ShardLoad,
    ranges: Vec<(usize, RangeData)>,
    problems: Vec<String>,
    notes: Vec<String>,
}

/// Opens the write-rate window on the shard's tables, or says why there is none (None: not
/// sampled).
async fn start_window(
    c: &mut Conn,
    map: &Map,
    opts: MeasureOptions,
) -> Result<Option<Result<rates::Window, String>>> {
    if opts.sample.is_zero() {
        return Ok(None);
    }
    let tables: Vec<String> = map.tables.iter().map(|t| t.name.clone()).collect();
    Ok(Some(match c.counters().await? {
        Ok(src) => Ok(rates::open(c, src, &tables).await?),
        Err(why) => Err(why),
    }))
}

/// Closes the window: each table's rate, or the shard's reason for having none.
async fn finish_window(
    c: &mut Conn,
    window: Option<Result<rates::Window, String>>,
    opts: MeasureOptions,
    load: &mut ShardLoad,
) -> Result<()> {
    let Some(window) = window else {
        return Ok(());
    };
    let src = window.as_ref().map(|w| w.src.name()).ok();
    let rates = match window {
        Ok(w) => rates::close(c, w, opts.sample).await?,
        Err(why) => Err(why),
    };
    match rates {
        Ok(list) => {
            for (t, r) in list {
                if let Some(tl) = load.tables.get_mut(&t) {
                    tl.writes_per_second = Some(r);
                }
            }
            load.writes_source = src.map(str::to_string);
        }
        Err(why) => load.writes_unavailable = Some(why),
    }
    Ok(())
}

/// The table's key histogram where it may be used; a note when a text key's collation rules
/// it out.
async fn usable_histogram(
    c: &mut Conn,
    t: &TableSpec,
    shard: &str,
    integer: bool,
    notes: &mut Vec<String>,
) -> Option<Vec<Bound>> {
    if c.dialect() != Dialect::Postgres {
        return None;
    }
    if !integer && !c.bytewise_collation(t).await {
        notes.push(format!(
            "shard {shard}: {}.{} is not collated \"C\", so pg_stats orders it otherwise than \
             the map (bytewise): its key quantiles come from the exact pass",
            t.name, t.key
        ));
        return None;
    }
    c.histogram(t, integer).await
}

async fn measure_shard(
    map: &Map,
    label: &str,
    shard: &str,
    ranges: &[(usize, &RangeSpec)],
    opts: MeasureOptions,
) -> Result<ShardResult> {
    let url = map
        .shards
        .get(shard)
        .ok_or_else(|| anyhow!("shard {shard} is not in shards"))?;
    let mut c = Conn::open(shard, url).await?;
    let integer = map.partitioning.key_kind() != KeyKind::Text;
    let mut out = ShardResult {
        load: ShardLoad::default(),
        ranges: ranges
            .iter()
            .map(|(i, _)| (*i, RangeData::default()))
            .collect(),
        problems: Vec::new(),
        notes: Vec::new(),
    };
    let window = start_window(&mut c, map, opts)
        .await
        .with_context(|| format!("shard {shard}: reading its write counters"))?;
    for t in &map.tables {
        let ctx = || format!("shard {shard}: measuring table {}", t.name);
        if !c.exists(&t.name).await.with_context(ctx)? {
            out.problems.push(format!(
                "{label}: tables: shard {shard} has no table {} (the map lists it)",
                t.name
            ));
            continue;
        }
        let all = Window {
            lo: None,
            hi: None,
            integer,
        };
        let rows = c.count(t, &all).await.with_context(ctx)?;
        let bytes = c.bytes(&t.name).await.with_context(ctx)?;
        let load = TableLoad {
            rows,
            bytes,
            writes_per_second: None,
        };
        out.load.tables.insert(t.name.clone(), load);
        let hist = match opts.exact || ranges.is_empty() {
            true => None,
            false => usable_histogram(&mut c, t, shard, integer, &mut out.notes).await,
        };
        for (slot, (_, r)) in out.ranges.iter_mut().zip(ranges) {
            let w = Window {
                lo: r.from.as_ref(),
                hi: r.to.as_ref(),
                integer,
            };
            let n = c.count(t, &w).await.with_context(ctx)?;
            let sample = match hist.as_deref().and_then(|h| histogram_sample(h, &w, n)) {
                Some(s) => s,
                None => exact_sample(&mut c, t, &w, n).await.with_context(ctx)?,
            };
            slot.1.tables.insert(t.name.clone(), sample);
        }
    }
    if out.problems.is_empty() {
        finish_window(&mut c, window, opts, &mut out.load)
            .await
            .with_context(|| format!("shard {shard}: reading its write counters"))?;
    }
    c.close().await;
    Ok(out)
}

/// Measures every shard that owns keys under the map, one connection each, side by side.
/// Missing tables are bad input (exit 2, each named); a shard that cannot be reached fails.
pub async fn measure(map: &Map, label: &str, opts: MeasureOptions) -> Result<Measurements> {
    let owners = map.partitioning.owners();
    let range_list: Vec<(usize, &RangeSpec)> = match &map.partitioning {
        Partitioning::Range { ranges } => ranges.iter().enumerate().collect(),
        _ => Vec::new(),
    };
    let futures = owners.iter().map(|s| {
        let mine: Vec<(usize, &RangeSpec)> = range_list
            .iter()
            .filter(|(_, r)| &r.shard == s)
            .copied()
            .collect();
        async move { measure_shard(map, label, s, &mine, opts).await }
    });
    let results = futures_util::future::join_all(futures).await;
    let mut m = Measurements {
        shards: BTreeMap::new(),
        ranges: vec![RangeData::default(); range_list.len()],
        sample_seconds: (!opts.sample.is_zero()).then_some(opts.sample.as_secs_f64()),
        notes: Vec::new(),
    };
    let mut problems = Vec::new();
    for (s, r) in owners.iter().zip(results) {
        let r = r?;
        problems.extend(r.problems);
        m.notes.extend(r.notes);
        m.shards.insert(s.clone(), r.load);
        for (i, d) in r.ranges {
            m.ranges[i] = d;
        }
    }
    if !problems.is_empty() {
        return Err(InputError::many(problems).into());
    }
    Ok(m)
}
