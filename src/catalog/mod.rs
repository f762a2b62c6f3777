//! The catalog: routing state, jobs, moves, copy cursors and the event log, in SQLite (one
//! operator, the default) or PostgreSQL (several workers). Schema: `migrations/` and
//! docs/catalog.md. Every state change is one transaction together with its event row, so a
//! crash leaves either the old state or the new one, never half of each.
//!
//! The same SQL serves both databases: `$1` placeholders work in SQLite too, and every column
//! is TEXT or BIGINT. The `with_pool!` macro expands a body once per pool type.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha1::{Digest, Sha1};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Connection as _;

use crate::error::Stop;
use crate::job::{JobState, MoveState};
use crate::map::Map;
use crate::shard_url::redact;

mod rows;
pub use rows::{CursorRow, EventRow, JobRow, MoveRow, RoutingState};
pub use verify::{ChunkRow, VerifyProgress};

/// How long opening a PostgreSQL catalog, or taking a connection from its pool, may wait.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub const DEFAULT_CATALOG: &str = "sqlite://reshard.db";

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

pub struct Catalog {
    pool: Pool,
    /// The URL with any password redacted: the only form ever shown.
    label: String,
}

macro_rules! with_pool {
    ($self:expr, $p:ident => $body:expr) => {
        match &$self.pool {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
        }
    };
}

/// Whether the catalog may be created and migrated, or only read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    /// For `--dry-run`, `status` and `jobs`: nothing is created or changed. A catalog that does
    /// not exist opens as `None`.
    ReadOnly,
}

/// The first routing version, written once per catalog (by the first job or `init_routing`).
const INSERT_ROUTING_V1: &str = "INSERT INTO routing (id, version, fingerprint, map_json, \
     updated_at) VALUES (1, 1, $1, $2, $3)";
const INSERT_HISTORY_V1: &str = "INSERT INTO routing_history (version, fingerprint, map_json, \
     job_id, created_at) VALUES (1, $1, $2, $3, $4)";

pub fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// sha1 of a map's canonical (redacted) JSON: how the catalog names a routing version.
pub fn map_fingerprint(map: &Map) -> String {
    let mut h = Sha1::new();
    h.update(map.canonical_json().as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" {
        None
    } else {
        Some(PathBuf::from(path))
    }
}

/// A new job with its moves, as `apply` records it.
pub struct NewJob<'a> {
    pub id: &'a str,
    pub plan_fingerprint: &'a str,
    pub plan_json: &'a str,
    pub options_json: &'a str,
    pub from: &'a Map,
    pub tables: &'a [String],
    /// (move id, source, destination, rows_total, bytes_total)
    pub moves: Vec<(String, String, String, u64, u64)>,
    /// Rows per table across the `from` map's databases, for `verify --audit`: recorded in the
    /// transaction that creates the job, so no crash can leave a job without them.
    pub row_counts: &'a [(String, u64)],
}

const UNFINISHED_JOBS: &str = "SELECT id, state FROM jobs \
     WHERE state NOT IN ('completed', 'cancelled') ORDER BY created_at, id";
const MOVE_FLIPS: &str = "SELECT flipped FROM moves WHERE job_id = $1";

/// Why a new job is refused while `job` (in `state`, with these `moves.flipped` values) is
/// unfinished: one job at a time per catalog, because two jobs over the same shards share
/// capture, fences and guards, and routing cannot follow both.
fn one_job_at_a_time(job: &str, state: &str, flips: &[(i64,)]) -> String {
    let flipped = flips.iter().filter(|(f,)| *f != 0).count();
    let hint = match JobState::parse(state) {
        Some(s) => s.finish_hint(
            job,
            flipped > 0,
            !flips.is_empty() && flipped == flips.len(),
        ),
        None => format!("reshard status {job}"),
    };
    format!(
        "job {job} is unfinished ({state}, {flipped} of {} moves flipped); this catalog runs \
         one job at a time, since a second job over the same keys would take over its capture, \
         fences and routing. Finish it first: {hint}",
        flips.len()
    )
}

impl Catalog {
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Opens the catalog. `ReadWrite` creates it and applies migrations; `ReadOnly` returns
    /// None when it does not exist yet and never writes.
    pub async fn open(url: &str, access: Access) -> Result<Option<Catalog>> {
        let label = redact(url);
        let ctx = || format!("catalog {label}");
        if url.starts_with("sqlite:") {
            let read_only = access == Access::ReadOnly;
            if read_only {
                match sqlite_path(url) {
                    Some(p) if p.exists() => {}
                    _ => return Ok(None),
                }
            }
            let opts = SqliteConnectOptions::from_str(url)
                .with_context(ctx)?
                .create_if_missing(!read_only)
                .read_only(read_only)
                .busy_timeout(Duration::from_secs(10));
            // WAL and synchronous=FULL: our own file, so we choose durability over speed; WAL
            // lets `status` read while `apply` writes. A read-only connection cannot switch the
            // journal mode, so it leaves it as the writer set it.
            let opts = if read_only {
                opts
            } else {
                opts.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
            };
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .after_release(|c, _| {
                    Box::pin(async move {
                        crate::backend::sqlite_functions::outside_transaction(c).await
                    })
                })
                .connect_with(opts)
                .await
                .with_context(ctx)?;
            let cat = Catalog {
                pool: Pool::Sqlite(pool),
                label,
            };
            if read_only {
                if !cat.has_schema().await? {
                    return Ok(None);
                }
            } else if let Pool::Sqlite(p) = &cat.pool {
                sqlx::migrate!("migrations/sqlite")
                    .run(p)
                    .await
                    .with_context(|| format!("catalog {}: migrating", cat.label))?;
            }
            Ok(Some(cat))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // Named, so that an operator (or a test) tells the catalog's sessions from the
            // shards' ("reshard") in pg_stat_activity.
            let opts = PgConnectOptions::from_str(url)
                .with_context(ctx)?
                .application_name("reshard-catalog");
            // sqlx's pool retries a refused connection until its acquire timeout and then says
            // only "pool timed out": one direct attempt first names the cause at once.
            match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&opts)).await {
                Ok(Ok(c)) => c.close().await.with_context(ctx)?,
                Ok(Err(e)) => return Err(anyhow::Error::new(e).context(ctx())),
                Err(_) => {
                    anyhow::bail!("{}: no answer within {}s", ctx(), CONNECT_TIMEOUT.as_secs())
                }
            }
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(CONNECT_TIMEOUT)
                .connect_with(opts)
                .await
                .with_context(ctx)?;
            crate::backend::closing::register_pg(&pool);
            let cat = Catalog {
                pool: Pool::Postgres(pool),
                label,
            };
            if access == Access::ReadOnly {
                if !cat.has_schema().await? {
                    return Ok(None);
                }
            } else if let Pool::Postgres(p) = &cat.pool {
                sqlx::migrate!("migrations/postgres")
                    .run(p)
                    .await
                    .with_context(|| format!("catalog {}: migrating", cat.label))?;
            }
            Ok(Some(cat))
        } else {
            Err(crate::error::InputError::one(format!(
                "--catalog: {label:?} is not a sqlite: or postgres:// URL"
            ))
            .into())
        }
    }

    /// Opens for writing (creating it if needed).
    pub async fn open_rw(url: &str) -> Result<Catalog> {
        match Catalog::open(url, Access::ReadWrite).await? {
            Some(c) => Ok(c),
            None => bail!("catalog {}: could not be opened", redact(url)),
        }
    }

    /// SQLite transactions that write must start as writers (BEGIN IMMEDIATE): a deferred one
    /// that reads first fails with SQLITE_BUSY at its first write instead of waiting.
    fn begin_sql(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "BEGIN IMMEDIATE",
            Pool::Postgres(_) => "BEGIN",
        }
    }

    async fn has_schema(&self) -> Result<bool> {
        let n: i64 = match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'jobs'",
                )
                .fetch_one(p)
                .await?
            }
            Pool::Postgres(p) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM information_schema.tables \
                     WHERE table_schema = current_schema() AND table_name = 'jobs'",
                )
                .fetch_one(p)
                .await?
            }
        };
        Ok(n > 0)
    }

    pub async fn close(&self) {
        with_pool!(self, p => p.close().await)
    }

    pub async fn routing(&self) -> Result<Option<RoutingState>> {
        let row: Option<(i64, String, String)> = with_pool!(self, p => {
            sqlx::query_as("SELECT version, fingerprint, map_json FROM routing WHERE id = 1")
                .fetch_optional(p)
                .await
        })
        .with_context(|| format!("catalog {}: reading routing", self.label))?;
        Ok(row.map(|(version, fingerprint, map_json)| RoutingState {
            version,
            fingerprint,
            map_json,
        }))
    }

    /// Refuses a plan whose `from` map is not the catalog's current routing.
    pub fn check_not_stale(routing: Option<&RoutingState>, from: &Map) -> Result<()> {
        if let Some(r) = routing {
            let fp = map_fingerprint(from);
            if r.fingerprint != fp {
                return Err(Stop::Refused(format!(
                    "stale plan: its `from` map (fingerprint {fp}) is not the catalog's current \
                     routing (version {}, fingerprint {}); regenerate the plan from the current map",
                    r.version, r.fingerprint
                ))
                .into());
            }
        }
        Ok(())
    }

    /// The refusal a new job meets while another is unfinished (None: a job may start).
    pub async fn unfinished_job(&self) -> Result<Option<String>> {
        let res: Result<Option<String>> = with_pool!(self, p => async {
            let jobs: Vec<(String, String)> = sqlx::query_as(UNFINISHED_JOBS).fetch_all(p).await?;
            let Some((id, state)) = jobs.into_iter().next() else { return Ok(None) };
            let flips: Vec<(i64,)> = sqlx::query_as(MOVE_FLIPS).bind(&id).fetch_all(p).await?;
            Ok(Some(one_job_at_a_time(&id, &state, &flips)))
        }.await);
        res.with_context(|| format!("catalog {}: looking for unfinished jobs", self.label))
    }

    /// The unfinished job, if any (there is at most one).
    pub async fn unfinished_job_id(&self) -> Result<Option<String>> {
        let res: Result<Option<String>> = with_pool!(self, p => async {
            let jobs: Vec<(String, String)> = sqlx::query_as(UNFINISHED_JOBS).fetch_all(p).await?;
            Ok(jobs.into_iter().next().map(|(id, _)| id))
        }.await);
        res.with_context(|| format!("catalog {}: looking for unfinished jobs", self.label))
    }

    /// Records `map` as routing version 1 when the catalog routes nothing yet, so that a
    /// [`crate::Router`] can run before the first `apply` (tests, the demo); `apply` then finds
    /// the same map and keeps the version. An existing routing must be the same map.
    pub async fn init_routing(&self, map: &Map) -> Result<()> {
        let now = now_text();
        let fp = map_fingerprint(map);
        let map_json = map.canonical_json();
        let res: Result<()> = with_pool!(self, p => async {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let current: Option<(i64, String, String)> =
                sqlx::query_as("SELECT version, fingerprint, map_json FROM routing WHERE id = 1")
                    .fetch_optional(&mut *tx)
                    .await?;
            match current {
                Some((version, fingerprint, map_json)) => Catalog::check_not_stale(
                    Some(&RoutingState { version, fingerprint, map_json }),
                    map,
                )?,
                None => {
                    sqlx::query(INSERT_ROUTING_V1)
                        .bind(&fp).bind(&map_json).bind(&now)
                        .execute(&mut *tx).await?;
                    sqlx::query(INSERT_HISTORY_V1)
                        .bind(&fp).bind(&map_json).bind(None::<String>).bind(&now)
                        .execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            Ok(())
        }.await);
        res.with_context(|| format!("catalog {}: initializing routing", self.label))
    }

    /// Records a new job, its moves and their cursors; on a fresh catalog also the plan's
    /// `from` map as routing version 1. One transaction, re-checking staleness inside it so
    /// that two `apply`s racing on one catalog cannot both pass.
    pub async fn create_job(&self, job: NewJob<'_>) -> Result<()> {
        let now = now_text();
        let fp = map_fingerprint(job.from);
        let map_json = job.from.canonical_json();
        let res: Result<()> = with_pool!(self, p => async {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let current: Option<(i64, String, String)> =
                sqlx::query_as("SELECT version, fingerprint, map_json FROM routing WHERE id = 1")
                    .fetch_optional(&mut *tx)
                    .await?;
            let version = match current {
                Some((version, fingerprint, map_json)) => {
                    Catalog::check_not_stale(
                        Some(&RoutingState { version, fingerprint, map_json }),
                        job.from,
                    )?;
                    version
                }
                None => {
                    sqlx::query(INSERT_ROUTING_V1)
                        .bind(&fp).bind(&map_json).bind(&now)
                        .execute(&mut *tx).await?;
                    sqlx::query(INSERT_HISTORY_V1)
                        .bind(&fp).bind(&map_json).bind(job.id).bind(&now)
                        .execute(&mut *tx).await?;
                    sqlx::query(
                        "INSERT INTO events (job_id, move_id, at, kind, detail) \
                         VALUES ($1, NULL, $2, 'routing_initialized', $3)",
                    )
                    .bind(job.id).bind(&now).bind(format!("version 1, fingerprint {fp}"))
                    .execute(&mut *tx).await?;
                    1
                }
            };
            let jobs: Vec<(String, String)> = sqlx::query_as(UNFINISHED_JOBS)
                .fetch_all(&mut *tx).await?;
            if let Some((id, state)) = jobs.into_iter().next() {
                let flips: Vec<(i64,)> = sqlx::query_as(MOVE_FLIPS)
                    .bind(&id).fetch_all(&mut *tx).await?;
                return Err(Stop::Refused(one_job_at_a_time(&id, &state, &flips)).into());
            }
            for (table, n) in job.row_counts {
                sqlx::query(
                    "INSERT INTO job_row_counts (job_id, table_name, row_count) VALUES ($1, $2, $3)",
                )
                .bind(job.id).bind(table).bind(*n as i64).execute(&mut *tx).await?;
            }
            sqlx::query(
                "INSERT INTO jobs (id, state, plan_fingerprint, plan_json, options_json, \
                 routing_version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            )
            .bind(job.id).bind(JobState::Running.as_str()).bind(job.plan_fingerprint)
            .bind(job.plan_json).bind(job.options_json).bind(version).bind(&now)
            .execute(&mut *tx).await?;
            for (id, source, dest, rows, bytes) in &job.moves {
                sqlx::query(
                    "INSERT INTO moves (job_id, move_id, source, destination, state, rows_total, \
                     bytes_total, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(job.id).bind(id).bind(source).bind(dest)
                .bind(MoveState::Pending.as_str()).bind(*rows as i64).bind(*bytes as i64).bind(&now)
                .execute(&mut *tx).await?;
                for table in job.tables {
                    sqlx::query(
                        "INSERT INTO cursors (job_id, move_id, table_name, updated_at) \
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(job.id).bind(id).bind(table).bind(&now)
                    .execute(&mut *tx).await?;
                }
            }
            sqlx::query(
                "INSERT INTO events (job_id, move_id, at, kind, detail) \
                 VALUES ($1, NULL, $2, 'job_created', $3)",
            )
            .bind(job.id).bind(&now)
            .bind(format!("plan {} with {} moves", job.plan_fingerprint, job.moves.len()))
            .execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(())
        }.await);
        res.with_context(|| format!("catalog {}: creating job {}", self.label, job.id))
    }

    /// Takes the job's lease for `owner` when it is free, expired, already ours, or held by a
    /// process on this host that no longer exists (a kill -9 on the same machine need not wait
    /// for expiry). Returns the current holder when it is taken.
    pub async fn acquire_lease(
        &self,
        job: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<std::result::Result<(), String>> {
        let now = now_ms();
        let expires = now + ttl.as_millis() as i64;
        let res: Result<std::result::Result<(), String>> = with_pool!(self, p => async {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            // Serialize lease takers: on SQLite BEGIN IMMEDIATE's write lock; on PostgreSQL a row lock.
            let q = if matches!(self.pool, Pool::Postgres(_)) {
                "SELECT lease_owner, lease_expires_ms FROM jobs WHERE id = $1 FOR UPDATE"
            } else {
                "SELECT lease_owner, lease_expires_ms FROM jobs WHERE id = $1"
            };
            let row: Option<(Option<String>, Option<i64>)> =
                sqlx::query_as(q).bind(job).fetch_optional(&mut *tx).await?;
            let Some((holder, until)) = row else {
                return Ok(Err(format!("job {job} does not exist")));
            };
            if let (Some(h), Some(u)) = (&holder, until) {
                if h != owner && u > now && !holder_is_dead(h) {
                    return Ok(Err(format!(
                        "job {job} is being run by {h} (lease valid for {} s more)",
                        (u - now + 999) / 1000
                    )));
                }
            }
            // Workers copying the job's moves hold its tasks, not its lease; one process may
            // not run the job beside them.
            let rows: Vec<(Option<String>, Option<i64>)> = sqlx::query_as(tasks::TASK_HOLDERS)
                .bind(job).fetch_all(&mut *tx).await?;
            let busy = tasks::live_task_holders(&rows, owner, now);
            if !busy.is_empty() {
                return Ok(Err(format!(
                    "job {job} is being copied by {} worker(s) ({}); `reshard pause {job}` \
                     stops them",
                    busy.len(),
                    busy.join(", ")
                )));
            }
            sqlx::query("UPDATE jobs SET lease_owner = $1, lease_expires_ms = $2 WHERE id = $3")
                .bind(owner).bind(expires).bind(job).execute(&mut *tx).await?;
            let detail = match holder {
                Some(h) if h != owner => format!("{owner} (taken over from {h})"),
                _ => owner.to_string(),
            };
            sqlx::query(
                "INSERT INTO events (job_id, move_id, at, kind, detail) \
                 VALUES ($1, NULL, $2, 'lease_acquired', $3)",
            )
            .bind(job).bind(now_text()).bind(detail)
            .execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(Ok(()))
        }.await);
        res.with_context(|| format!("catalog {}: taking the lease on job {job}", self.label))
    }

    /// Extends our lease; false when it is no longer ours (taken over after expiry).
    pub async fn renew_lease(&self, job: &str, owner: &str, ttl: Duration) -> Result<bool> {
        let expires = now_ms() + ttl.as_millis() as i64;
        let n = with_pool!(self, p => {
            sqlx::query("UPDATE jobs SET lease_expires_ms = $1 WHERE id = $2 AND lease_owner = $3")
                .bind(expires).bind(job).bind(owner).execute(p).await.map(|r| r.rows_affected())
        })
        .with_context(|| format!("catalog {}: renewing the lease on job {job}", self.label))?;
        Ok(n == 1)
    }

    pub async fn release_lease(&self, job: &str, owner: &str) -> Result<()> {
        with_pool!(self, p => {
            sqlx::query(
                "UPDATE jobs SET lease_owner = NULL, lease_expires_ms = NULL \
                 WHERE id = $1 AND lease_owner = $2",
            )
            .bind(job).bind(owner).execute(p).await.map(|_| ())
        })
        .with_context(|| format!("catalog {}: releasing the lease on job {job}", self.label))?;
        Ok(())
    }

    /// Moves the job to `to`, checking the transition, with an event. `error` is recorded as
    /// `last_error` (cleared when None and the job runs again).
    pub async fn set_job_state(&self, job: &str, to: JobState, error: Option<&str>) -> Result<()> {
        let now = now_text();
        let finished = matches!(
            to,
            JobState::Copied | JobState::Completed | JobState::Cancelled
        );
        let res: Result<()> = with_pool!(self, p => async {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let cur: Option<String> = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
                .bind(job).fetch_optional(&mut *tx).await?;
            let Some(cur) = cur else { bail!("job {job} does not exist") };
            let from = JobState::parse(&cur)
                .with_context(|| format!("job {job}: unknown state {cur:?} in the catalog"))?;
            let to = to.or_kept_from(from);
            if from != to && !from.can_become(to) {
                bail!("job {job}: cannot go from {from} to {to}");
            }
            sqlx::query(
                "UPDATE jobs SET state = $1, last_error = $2, updated_at = $3, \
                 finished_at = CASE WHEN $4 = 1 THEN $3 ELSE finished_at END WHERE id = $5",
            )
            .bind(to.as_str()).bind(error).bind(&now).bind(finished as i64).bind(job)
            .execute(&mut *tx).await?;
            let detail = match error {
                Some(e) => format!("{from} -> {to}: {e}"),
                None => format!("{from} -> {to}"),
            };
            sqlx::query(
                "INSERT INTO events (job_id, move_id, at, kind, detail) \
                 VALUES ($1, NULL, $2, 'job_state', $3)",
            )
            .bind(job).bind(&now).bind(detail).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(())
        }.await);
        res.with_context(|| format!("catalog {}: job {job} -> {to}", self.label))
    }

    pub async fn set_move_state(
        &self,
        job: &str,
        mv: &str,
        to: MoveState,
        error: Option<&str>,
    ) -> Result<()> {
        let now = now_text();
        let res: Result<()> = with_pool!(self, p => async {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let cur: Option<String> =
                sqlx::query_scalar("SELECT state FROM moves WHERE job_id = $1 AND move_id = $2")
                    .bind(job).bind(mv).fetch_optional(&mut *tx).await?;
            let Some(cur) = cur else { bail!("move {mv} of job {job} does not exist") };
            let from = MoveState::parse(&cur)
                .with_context(|| format!("move {mv}: unknown state {cur:?} in the catalog"))?;
            if from != to && !from.can_become(to) {
                bail!("move {mv}: cannot go from {from} to {to}");
            }
            sqlx::query(
                "UPDATE moves SET state = $1, last_error = $2, updated_at = $3, \
                 started_at = COALESCE(started_at, $3), \
                 finished_at = CASE WHEN $4 = 1 THEN $3 ELSE finished_at END \
                 WHERE job_id = $5 AND move_id = $6",
            )
            .bind(to.as_str()).bind(error).bind(&now)
            .bind((to == MoveState::Copied) as i64).bind(job).bind(mv)
            .execute(&mut *tx).await?;
            if from != to {
                sqlx::query(
                    "INSERT INTO events (job_id, move_id, at, kind, detail) \
                     VALUES ($1, $2, $3, 'move_state', $4)",
                )
                .bind(job).bind(mv).bind(&now).bind(format!("{from} -> {to}"))
                .execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        }.await);
        res.with_context(|| format!("catalog {}: move {mv} -> {to}", self.label))
    }

    /// Records a failure on a move without changing its state (it stays resumable).
    pub async fn record_move_error(&self, job: &str, mv: &str, error: &str) -> Result<()> {
        let now = now_text();
        let res: Result<()> = with_pool!(self, p => async {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            sqlx::query(
                "UPDATE moves SET last_error = $1, updated_at = $2 WHERE job_id = $3 AND move_id = $4",
            )
            .bind(error).bind(&now).bind(job).bind(mv).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO events (job_id, move_id, at, kind, detail) \
                 VALUES ($1, $2, $3, 'move_error', $4)",
            )
            .bind(job).bind(mv).bind(&now).bind(error).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(())
        }.await);
        res.with_context(|| format!("catalog {}: recording an error on move {mv}", self.label))
    }

    /// One batch's progress: the table's cursor, and the move's counters, in one transaction.
    /// `cursor_json` is the batch's last primary key even when no row of it moved.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_batch(
        &self,
        job: &str,
        mv: &str,
        table: &str,
        cursor_json: Option<&str>,
        done: bool,
        rows_read: u64,
        rows_copied: u64,
        bytes: u64,
        elapsed_ms: u64,
    ) -> Result<()> {
        let now = now_text();
        let res: Result<()> = with_pool!(self, p => async {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            sqlx::query(
                "UPDATE cursors SET cursor_json = COALESCE($1, cursor_json), done = $2, \
                 rows_read = rows_read + $3, rows_copied = rows_copied + $4, \
                 batches = batches + 1, updated_at = $5 \
                 WHERE job_id = $6 AND move_id = $7 AND table_name = $8",
            )
            .bind(cursor_json).bind(done as i64).bind(rows_read as i64).bind(rows_copied as i64)
            .bind(&now).bind(job).bind(mv).bind(table)
            .execute(&mut *tx).await?;
            sqlx::query(
                "UPDATE moves SET rows_copied = rows_copied + $1, bytes_copied = bytes_copied + $2, \
                 copy_ms = copy_ms + $3, updated_at = $4 WHERE job_id = $5 AND move_id = $6",
            )
            .bind(rows_copied as i64).bind(bytes as i64).bind(elapsed_ms as i64)
            .bind(&now).bind(job).bind(mv)
            .execute(&mut *tx).await?;
            if done {
                sqlx::query(
                    "INSERT INTO events (job_id, move_id, at, kind, detail) \
                     VALUES ($1, $2, $3, 'table_copied', $4)",
                )
                .bind(job).bind(mv).bind(&now).bind(table).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        }.await);
        res.with_context(|| format!("catalog {}: recording a batch of move {mv}", self.label))
    }

    pub async fn job(&self, id: &str) -> Result<Option<JobRow>> {
        let q = format!("SELECT {} FROM jobs WHERE id = $1", JobRow::COLUMNS);
        let row = with_pool!(self, p => {
            sqlx::query_as::<_, rows::JobTuple>(&q).bind(id).fetch_optional(p).await
        })
        .with_context(|| format!("catalog {}: reading job {id}", self.label))?;
        Ok(row.map(JobRow::from))
    }

    /// All jobs, newest first.
    pub async fn jobs(&self) -> Result<Vec<JobRow>> {
        let q = format!(
            "SELECT {} FROM jobs ORDER BY created_at DESC, id DESC",
            JobRow::COLUMNS
        );
        let rows = with_pool!(self, p => {
            sqlx::query_as::<_, rows::JobTuple>(&q).fetch_all(p).await
        })
        .with_context(|| format!("catalog {}: listing jobs", self.label))?;
        Ok(rows.into_iter().map(JobRow::from).collect())
    }

    pub async fn moves(&self, job: &str) -> Result<Vec<MoveRow>> {
        let q = format!(
            "SELECT {} FROM moves WHERE job_id = $1 ORDER BY move_id",
            MoveRow::COLUMNS
        );
        let rows = with_pool!(self, p => {
            sqlx::query_as::<_, rows::MoveTuple>(&q).bind(job).fetch_all(p).await
        })
        .with_context(|| format!("catalog {}: reading the moves of job {job}", self.label))?;
        let mut out: Vec<MoveRow> = rows.into_iter().map(MoveRow::from).collect();
        // m2 before m10.
        out.sort_by_key(|m| {
            (
                m.id.trim_start_matches('m')
                    .parse::<u64>()
                    .unwrap_or(u64::MAX),
                m.id.clone(),
            )
        });
        Ok(out)
    }

    pub async fn cursors(&self, job: &str, mv: &str) -> Result<Vec<CursorRow>> {
        let rows: Vec<(String, Option<String>, i64, i64, i64)> = with_pool!(self, p => {
            sqlx::query_as(
                "SELECT table_name, cursor_json, done, rows_read, rows_copied FROM cursors \
                 WHERE job_id = $1 AND move_id = $2",
            )
            .bind(job).bind(mv).fetch_all(p).await
        })
        .with_context(|| format!("catalog {}: reading cursors of move {mv}", self.label))?;
        Ok(rows
            .into_iter()
            .map(
                |(table, cursor_json, done, rows_read, rows_copied)| CursorRow {
                    table,
                    cursor_json,
                    done: done != 0,
                    rows_read: rows_read as u64,
                    rows_copied: rows_copied as u64,
                },
            )
            .collect())
    }

    pub async fn events(&self, job: &str) -> Result<Vec<EventRow>> {
        let rows: Vec<(i64, Option<String>, String, String, String)> = with_pool!(self, p => {
            sqlx::query_as(
                "SELECT id, move_id, at, kind, detail FROM events WHERE job_id = $1 ORDER BY id",
            )
            .bind(job).fetch_all(p).await
        })
        .with_context(|| format!("catalog {}: reading events of job {job}", self.label))?;
        Ok(rows
            .into_iter()
            .map(|(id, move_id, at, kind, detail)| EventRow {
                id,
                move_id,
                at,
                kind,
                detail,
            })
            .collect())
    }
}

/// A lease holder id is `host:pid:nonce`. On this host, a pid that no longer exists cannot be
/// running the job. Elsewhere (or without /proc) only expiry frees the lease.
fn holder_is_dead(holder: &str) -> bool {
    let mut parts = holder.split(':');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    if host != this_host() || !std::path::Path::new("/proc/self").exists() {
        return false;
    }
    match pid.parse::<u32>() {
        Ok(pid) => !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        Err(_) => false,
    }
}

pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().replace(':', "_"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// This process's lease owner id.
pub fn worker_id() -> String {
    let nonce = crate::job::random_u64() as u32;
    format!("{}:{}:{nonce:08x}", this_host(), std::process::id())
}

// After `with_pool!`, which it uses.
mod verify;

#[cfg(test)]
mod tests;

mod online;
pub use online::CaptureCounts;
mod drain;
mod requests;
pub use drain::DrainRate;
pub use requests::{PauseOutcome, Switch, PAUSE, SWITCH};
mod tasks;
mod throttle;
pub use tasks::{live as live_lease, Claim, TaskRow, COPY};
