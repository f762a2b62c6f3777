//! `reshard::Router`: the live owner of a key, read from the catalog, for applications that write
//! to the shards while a job moves keys between them (docs/writer-contract.md).
//!
//! The router only ever reads the catalog. Its answer follows the catalog's routing semantics:
//!
//! - while a job that is neither completed nor cancelled has flipped moves, a key whose
//!   (old owner, new owner) pair under that job's plan is a flipped move belongs to the new owner,
//!   and every other key to its old owner (the plan's `from` map);
//! - otherwise the catalog's routing map answers.
//!
//! The version is `routing.version`, which every flip, rollback and completion bumps in the same
//! transaction as the change it publishes. The router caches one snapshot, checks the version at
//! most every `check_interval`, reloads when it moved, and reloads at the next `route` after a
//! write met the fence error ([`Router::note_error`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

use crate::catalog::{Access, Catalog};
use crate::error::InputError;
use crate::ident::Dialect;
use crate::map::{Key, KeyKind, Map, Partitioner};
use crate::plan::Plan;
use crate::shard_url::{dialect_of, redact, ShardUrl};

/// Where a key's writes go now, and under which routing version that was decided.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Route {
    pub shard: String,
    pub version: i64,
}

#[derive(Debug, Clone)]
pub struct RouterOptions {
    /// How often, at most, `route` asks the catalog whether the routing version moved.
    pub check_interval: Duration,
    /// Connections per shard pool opened by [`Router::pool`].
    pub pool_size: u32,
    /// SQLite shards: how long a write waits for the database's lock (one writer at a time).
    pub sqlite_busy_timeout: Duration,
}

impl Default for RouterOptions {
    fn default() -> Self {
        RouterOptions {
            check_interval: Duration::from_millis(100),
            pool_size: 8,
            sqlite_busy_timeout: Duration::from_secs(10),
        }
    }
}

/// The job whose flipped moves currently decide routing.
#[derive(Debug, Clone)]
struct ActiveJob {
    id: String,
    from: Partitioner,
    to: Partitioner,
    /// (index in `from.shards`, index in `to.shards`) of every flipped move.
    flipped: BTreeSet<(usize, usize)>,
}

/// An unfinished job as routing sees it.
#[derive(Debug, Clone)]
pub struct JobRouting {
    pub id: String,
    pub state: String,
    pub plan_json: String,
    /// (source, destination) of every flipped move.
    pub flipped: Vec<(String, String)>,
}

/// One consistent view of the catalog's routing: everything `route` needs, without I/O.
#[derive(Debug, Clone)]
pub struct RoutingSnapshot {
    pub version: i64,
    current: Partitioner,
    active: Option<ActiveJob>,
    key_kind: KeyKind,
    urls: BTreeMap<String, ShardUrl>,
}

impl RoutingSnapshot {
    /// Builds a snapshot from the catalog's rows; pure, so it is tested without a database.
    pub fn build(
        version: i64,
        routing_map_json: &str,
        jobs: &[JobRouting],
    ) -> Result<RoutingSnapshot> {
        let routing = Map::parse(routing_map_json, "catalog routing map")
            .map_err(|e| anyhow!("the catalog's routing map is invalid: {e}"))?;
        let mut urls = routing.shards.clone();
        let mut key_kind = routing.partitioning.key_kind();
        let mut with_flips = Vec::new();
        for j in jobs {
            if matches!(j.state.as_str(), "completed" | "cancelled") || j.flipped.is_empty() {
                continue;
            }
            let id = &j.id;
            let plan = Plan::parse(&j.plan_json, &format!("plan of job {id}"))
                .map_err(|e| anyhow!("the catalog's plan of job {id} is invalid: {e}"))?;
            with_flips.push((id.clone(), plan, j.flipped.clone()));
        }
        if with_flips.len() > 1 {
            let ids: Vec<&str> = with_flips.iter().map(|j| j.0.as_str()).collect();
            bail!(
                "jobs {} all have flipped moves and none is completed: routing is ambiguous; \
                 complete or roll back all but one",
                ids.join(", ")
            );
        }
        let active = match with_flips.pop() {
            None => None,
            Some((id, plan, pairs)) => {
                let from = plan.from.compile();
                let to = plan.to.compile();
                let mut flipped = BTreeSet::new();
                for (src, dst) in &pairs {
                    let s = from.shards.iter().position(|n| n == src);
                    let d = to.shards.iter().position(|n| n == dst);
                    match (s, d) {
                        (Some(s), Some(d)) => {
                            flipped.insert((s, d));
                        }
                        _ => bail!(
                            "job {id}: flipped move {src} -> {dst} names a shard its plan does not route to"
                        ),
                    }
                }
                for m in [&plan.from, &plan.to] {
                    for (name, url) in &m.shards {
                        urls.entry(name.clone()).or_insert_with(|| url.clone());
                    }
                }
                key_kind = crate::planner::common_key_kind(&plan.from, &plan.to);
                Some(ActiveJob {
                    id,
                    from,
                    to,
                    flipped,
                })
            }
        };
        Ok(RoutingSnapshot {
            version,
            current: routing.compile(),
            active,
            key_kind,
            urls,
        })
    }

    pub fn route(&self, key: &Key) -> Result<Route> {
        let shard = match &self.active {
            None => self.current.owner(key)?.to_string(),
            Some(job) => {
                let old = job.from.owner_index(key)?;
                let new = job.to.owner_index(key)?;
                if job.flipped.contains(&(old, new)) {
                    job.to.shards[new].clone()
                } else {
                    job.from.shards[old].clone()
                }
            }
        };
        Ok(Route {
            shard,
            version: self.version,
        })
    }

    /// The key type keys typed by a person should be parsed as.
    pub fn key_kind(&self) -> KeyKind {
        self.key_kind
    }

    /// The job whose flips decide routing, if any.
    pub fn active_job(&self) -> Option<&str> {
        self.active.as_ref().map(|j| j.id.as_str())
    }

    /// Every shard some key may be routed to (old and new owners while a job runs).
    pub fn shards(&self) -> Vec<String> {
        self.urls.keys().cloned().collect()
    }

    pub fn shard_url(&self, name: &str) -> Option<&ShardUrl> {
        self.urls.get(name)
    }
}

/// A connection pool to one shard, of whichever database it is.
#[derive(Clone, Debug)]
pub enum ShardPool {
    Postgres(PgPool),
    Mysql(MySqlPool),
    Sqlite(SqlitePool),
}

impl ShardPool {
    pub fn dialect(&self) -> Dialect {
        match self {
            ShardPool::Postgres(_) => Dialect::Postgres,
            ShardPool::Mysql(_) => Dialect::Mysql,
            ShardPool::Sqlite(_) => Dialect::Sqlite,
        }
    }

    pub async fn close(&self) {
        match self {
            ShardPool::Postgres(p) => p.close().await,
            ShardPool::Mysql(p) => p.close().await,
            ShardPool::Sqlite(p) => p.close().await,
        }
    }
}

pub struct Router {
    catalog: Catalog,
    opts: RouterOptions,
    snapshot: RwLock<Arc<RoutingSnapshot>>,
    last_check: Mutex<Instant>,
    /// Set by a fence error: the next `route` reloads before answering.
    stale: AtomicBool,
    /// One reload at a time; concurrent callers wait and then use its result.
    reload: tokio::sync::Mutex<()>,
    pools: tokio::sync::Mutex<HashMap<String, ShardPool>>,
}

/// Whether a database error is the fence's refusal (SQLSTATE RS001, or its message where the
/// database cannot raise a custom SQLSTATE).
pub fn is_fence_error(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            crate::triggers::is_fence_error(db.code().as_deref(), db.message())
        }
        _ => false,
    }
}

/// [`is_fence_error`] anywhere in an anyhow chain (the backends wrap sqlx errors in context).
pub fn is_fence_error_any(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<sqlx::Error>().is_some_and(is_fence_error)
            || c.to_string().contains(crate::triggers::FENCE_MESSAGE)
    })
}

impl Router {
    /// Connects to an existing catalog (never creates one) and loads its routing.
    pub async fn connect(catalog_url: &str) -> Result<Router> {
        Router::connect_with(catalog_url, RouterOptions::default()).await
    }

    pub async fn connect_with(catalog_url: &str, opts: RouterOptions) -> Result<Router> {
        let Some(catalog) = Catalog::open(catalog_url, Access::ReadOnly).await? else {
            return Err(InputError::one(format!(
                "catalog {} does not exist: there is no routing to follow until a job has been \
                 applied with it",
                redact(catalog_url)
            ))
            .into());
        };
        let snap = load(&catalog).await?;
        Ok(Router {
            catalog,
            opts,
            snapshot: RwLock::new(Arc::new(snap)),
            last_check: Mutex::new(Instant::now()),
            stale: AtomicBool::new(false),
            reload: tokio::sync::Mutex::new(()),
            pools: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The cached snapshot, without any catalog access.
    pub fn snapshot(&self) -> Arc<RoutingSnapshot> {
        match self.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The routing version of the cached snapshot.
    pub fn version(&self) -> i64 {
        self.snapshot().version
    }

    /// The owner of `key` now: from the cache, after a version check when the last one is older
    /// than `check_interval`, and after a reload when a fence error was noted.
    pub async fn route(&self, key: &Key) -> Result<Route> {
        if self.stale.load(Ordering::Acquire) {
            let _guard = self.reload.lock().await;
            // Another task may have reloaded while this one waited for the lock.
            if self.stale.swap(false, Ordering::AcqRel) {
                self.install(load(&self.catalog).await?);
            }
        } else if self.check_due() {
            let _guard = self.reload.lock().await;
            if self.check_due() {
                self.check_locked().await?;
            }
        }
        self.snapshot().route(key)
    }

    /// Reloads the routing from the catalog now.
    pub async fn refresh(&self) -> Result<()> {
        let _guard = self.reload.lock().await;
        self.stale.store(false, Ordering::Release);
        let snap = load(&self.catalog).await?;
        self.install(snap);
        Ok(())
    }

    /// Asks the catalog for its version now (not from the cache) and reloads when it moved.
    /// Returns the catalog's version.
    pub async fn check_version(&self) -> Result<i64> {
        let _guard = self.reload.lock().await;
        self.check_locked().await
    }

    async fn check_locked(&self) -> Result<i64> {
        let current = self.snapshot().version;
        let version = read_version(&self.catalog).await?;
        if version != current {
            let snap = load(&self.catalog).await?;
            self.install(snap);
        } else if let Ok(mut t) = self.last_check.lock() {
            *t = Instant::now();
        }
        Ok(version)
    }

    /// Records a failed write: when it is the fence's refusal, the next `route` reloads the
    /// routing first. Returns whether it was (the caller then retries after a backoff).
    pub fn note_error(&self, err: &sqlx::Error) -> bool {
        let fenced = is_fence_error(err);
        if fenced {
            self.stale.store(true, Ordering::Release);
        }
        fenced
    }

    /// [`Router::note_error`] for an anyhow error wrapping the database's.
    pub fn note_error_any(&self, err: &anyhow::Error) -> bool {
        let fenced = is_fence_error_any(err);
        if fenced {
            self.stale.store(true, Ordering::Release);
        }
        fenced
    }

    /// The URL of a shard known to the current routing. Print it only through its Display,
    /// which hides any password.
    pub fn shard_url(&self, name: &str) -> Option<ShardUrl> {
        self.snapshot().shard_url(name).cloned()
    }

    /// A (cached) connection pool to a shard by name. The URL is resolved as reshard does
    /// (`env:NAME`, `RESHARD_SHARD_<NAME>_URL`) and never appears in an error.
    pub async fn pool(&self, shard: &str) -> Result<ShardPool> {
        let mut pools = self.pools.lock().await;
        if let Some(p) = pools.get(shard) {
            return Ok(p.clone());
        }
        let url = self
            .shard_url(shard)
            .ok_or_else(|| anyhow!("shard {shard} is not in the catalog's routing"))?;
        let pool = connect_shard(shard, &url, &self.opts).await?;
        pools.insert(shard.to_string(), pool.clone());
        Ok(pool)
    }

    /// Closes the shard pools and the catalog connection.
    pub async fn close(&self) {
        let pools: Vec<ShardPool> = self.pools.lock().await.drain().map(|(_, p)| p).collect();
        for p in pools {
            p.close().await;
        }
        self.catalog.close().await;
    }

    fn check_due(&self) -> bool {
        match self.last_check.lock() {
            Ok(t) => t.elapsed() >= self.opts.check_interval,
            Err(_) => true,
        }
    }

    fn install(&self, snap: RoutingSnapshot) {
        let snap = Arc::new(snap);
        match self.snapshot.write() {
            Ok(mut s) => *s = snap,
            Err(poisoned) => *poisoned.into_inner() = snap,
        }
        if let Ok(mut t) = self.last_check.lock() {
            *t = Instant::now();
        }
    }
}

/// Opens a pool to a shard with the options a writer needs.
pub async fn connect_shard(shard: &str, url: &ShardUrl, opts: &RouterOptions) -> Result<ShardPool> {
    let raw = url.resolve(shard).map_err(anyhow::Error::msg)?;
    let ctx = || format!("shard {shard}: connecting");
    Ok(match dialect_of(&raw) {
        Some(Dialect::Postgres) => ShardPool::Postgres(
            PgPoolOptions::new()
                .max_connections(opts.pool_size)
                .acquire_timeout(Duration::from_secs(30))
                .connect(&raw)
                .await
                .with_context(ctx)?,
        ),
        Some(Dialect::Mysql) => ShardPool::Mysql(
            MySqlPoolOptions::new()
                .max_connections(opts.pool_size)
                .acquire_timeout(Duration::from_secs(30))
                .connect(&raw)
                .await
                .with_context(ctx)?,
        ),
        Some(Dialect::Sqlite) => {
            let o = SqliteConnectOptions::from_str(&raw)
                .map_err(|_| anyhow!("shard {shard}: not a valid sqlite: URL"))?
                .busy_timeout(opts.sqlite_busy_timeout);
            // Guards on SQLite shards call reshard's SQL functions: without them every write
            // to a guarded table fails.
            ShardPool::Sqlite(
                crate::backend::sqlite_functions::pool_options()
                    .max_connections(opts.pool_size)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(o)
                    .await
                    .with_context(ctx)?,
            )
        }
        None => bail!("shard {shard}: unsupported URL scheme"),
    })
}

async fn read_version(catalog: &Catalog) -> Result<i64> {
    match catalog.routing().await? {
        Some(r) => Ok(r.version),
        None => bail!(
            "catalog {} has no routing yet: no job has been applied with it",
            catalog.label()
        ),
    }
}

/// Reads one consistent snapshot: the version is read before and after the jobs and moves, and
/// every routing change bumps it, so an unchanged version means nothing changed in between.
async fn load(catalog: &Catalog) -> Result<RoutingSnapshot> {
    for _ in 0..10 {
        let Some(routing) = catalog.routing().await? else {
            bail!(
                "catalog {} has no routing yet: no job has been applied with it",
                catalog.label()
            );
        };
        let mut jobs = Vec::new();
        for j in catalog.jobs().await? {
            if matches!(j.state.as_str(), "completed" | "cancelled") {
                continue;
            }
            let flipped: Vec<(String, String)> = catalog
                .moves(&j.id)
                .await?
                .into_iter()
                .filter(|m| m.flipped)
                .map(|m| (m.source, m.destination))
                .collect();
            jobs.push(JobRouting {
                id: j.id,
                state: j.state,
                plan_json: j.plan_json,
                flipped,
            });
        }
        if read_version(catalog).await? == routing.version {
            return RoutingSnapshot::build(routing.version, &routing.map_json, &jobs)
                .with_context(|| format!("catalog {}", catalog.label()));
        }
    }
    bail!(
        "catalog {}: the routing version kept changing while it was read",
        catalog.label()
    )
}

mod begin;
pub use begin::ShardTx;

#[cfg(test)]
mod tests;
