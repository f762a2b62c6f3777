//! Catalog records of online migration (issue 4): installs, catch-up progress, the flip, the
//! completion, cleanup cursors. Each is one transaction with its event row.

use anyhow::{bail, Context, Result};

use super::{now_text, Catalog, Pool};
use crate::job::{JobState, MoveState};
use crate::map::Map;

/// Entries consumed from one change log in one round.
#[derive(Debug, Clone, Copy, Default)]
pub struct CaptureCounts {
    pub max_seq: i64,
    pub entries: u64,
    pub forward: u64,
    pub reverse: u64,
}

impl Catalog {
    fn is_pg(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    pub async fn event(&self, job: &str, mv: Option<&str>, kind: &str, detail: &str) -> Result<()> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO events (job_id, move_id, at, kind, detail) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(job).bind(mv).bind(now_text()).bind(kind).bind(detail)
            .execute(p).await.map(|_| ())
        })
        .with_context(|| format!("catalog {}: recording event {kind}", self.label))
    }

    /// Records what is installed on a shard (`installing`, `installed`, `removed`).
    pub async fn set_install(&self, job: &str, shard: &str, state: &str) -> Result<()> {
        let now = now_text();
        let res: Result<()> = with_pool!(self, p => async {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            sqlx::query(
                "INSERT INTO installs (job_id, shard, state, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (job_id, shard) DO UPDATE SET state = $3, updated_at = $4",
            )
            .bind(job).bind(shard).bind(state).bind(&now).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO events (job_id, move_id, at, kind, detail) \
                 VALUES ($1, NULL, $2, 'install', $3)",
            )
            .bind(job).bind(&now).bind(format!("{shard}: {state}"))
            .execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(())
        }.await);
        res.with_context(|| format!("catalog {}: recording install on {shard}", self.label))
    }

    /// (shard, state) of every shard the job installed on.
    pub async fn installs(&self, job: &str) -> Result<Vec<(String, String)>> {
        with_pool!(self, p => {
            sqlx::query_as("SELECT shard, state FROM installs WHERE job_id = $1 ORDER BY shard")
                .bind(job).fetch_all(p).await
        })
        .with_context(|| format!("catalog {}: reading installs of job {job}", self.label))
    }

    pub async fn record_capture(
        &self,
        job: &str,
        shard: &str,
        table: &str,
        c: CaptureCounts,
    ) -> Result<()> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO capture_progress (job_id, shard, table_name, applied_seq, entries, \
                 forward, reverse, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (job_id, shard, table_name) DO UPDATE SET \
                 applied_seq = CASE WHEN capture_progress.applied_seq > $4 \
                     THEN capture_progress.applied_seq ELSE $4 END, \
                 entries = capture_progress.entries + $5, forward = capture_progress.forward + $6, \
                 reverse = capture_progress.reverse + $7, updated_at = $8",
            )
            .bind(job).bind(shard).bind(table).bind(c.max_seq).bind(c.entries as i64)
            .bind(c.forward as i64).bind(c.reverse as i64).bind(now_text())
            .execute(p).await.map(|_| ())
        })
        .with_context(|| {
            format!(
                "catalog {}: recording catch-up of {shard}.{table}",
                self.label
            )
        })
    }

    pub async fn count_fence_attempt(&self, job: &str, mv: &str) -> Result<()> {
        with_pool!(self, p => {
            sqlx::query(
                "UPDATE moves SET fence_attempts = fence_attempts + 1 WHERE job_id = $1 AND move_id = $2",
            )
            .bind(job).bind(mv).execute(p).await.map(|_| ())
        })
        .with_context(|| format!("catalog {}: counting a fence of move {mv}", self.label))
    }

    /// The commit point of a cutover (or of a rollback): in ONE transaction the move's
    /// `flipped` flag and state, its fence duration, the routing version + 1 (with its history
    /// row) and the event. Returns the new routing version.
    pub async fn flip(&self, job: &str, mv: &str, flipped: bool, fence_ms: u64) -> Result<i64> {
        let now = now_text();
        let (from_state, to_state) = if flipped {
            (MoveState::Fencing, MoveState::Flipped)
        } else {
            (MoveState::RollingBack, MoveState::CatchingUp)
        };
        let lock = if self.is_pg() { " FOR UPDATE" } else { "" };
        let res: Result<i64> = with_pool!(self, p => async {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let cur: Option<(String, i64)> = sqlx::query_as(&format!(
                "SELECT state, flipped FROM moves WHERE job_id = $1 AND move_id = $2{lock}"
            ))
            .bind(job).bind(mv).fetch_optional(&mut *tx).await?;
            let Some((state, was)) = cur else { bail!("move {mv} of job {job} does not exist") };
            if state != from_state.as_str() || (was != 0) == flipped {
                bail!("move {mv} is {state} (flipped={was}), not {from_state}: refusing to flip");
            }
            sqlx::query(
                "UPDATE moves SET flipped = $1, state = $2, fence_ms = $3, last_error = NULL, \
                 updated_at = $4 WHERE job_id = $5 AND move_id = $6",
            )
            .bind(flipped as i64).bind(to_state.as_str()).bind(fence_ms as i64).bind(&now)
            .bind(job).bind(mv).execute(&mut *tx).await?;
            sqlx::query("UPDATE routing SET version = version + 1, updated_at = $1 WHERE id = 1")
                .bind(&now).execute(&mut *tx).await?;
            let version: i64 = sqlx::query_scalar("SELECT version FROM routing WHERE id = 1")
                .fetch_one(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO routing_history (version, fingerprint, map_json, job_id, created_at) \
                 SELECT version, fingerprint, map_json, $1, $2 FROM routing WHERE id = 1",
            )
            .bind(job).bind(&now).execute(&mut *tx).await?;
            let detail = format!(
                "{} -> {}; routing version {version}; fence {fence_ms} ms",
                from_state, to_state
            );
            sqlx::query(
                "INSERT INTO events (job_id, move_id, at, kind, detail) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(job).bind(mv).bind(&now)
            .bind(if flipped { "flip" } else { "flip_back" }).bind(detail)
            .execute(&mut *tx).await?;
            if !flipped {
                // The job stops being fully cut over in the same transaction that flips a move
                // back: a crash between two transactions would leave a job that claims
                // dual_write with a move no longer flipped, which neither complete (needs every
                // move flipped) nor rollback (nothing flipped) could act on.
                let cur: String = sqlx::query_scalar(&format!(
                    "SELECT state FROM jobs WHERE id = $1{lock}"
                ))
                .bind(job).fetch_one(&mut *tx).await?;
                let from = JobState::parse(&cur)
                    .with_context(|| format!("job {job}: unknown state {cur:?} in the catalog"))?;
                if from != JobState::RolledBack {
                    if !from.can_become(JobState::RolledBack) {
                        bail!("job {job} is {from}: refusing to flip move {mv} back");
                    }
                    sqlx::query(
                        "UPDATE jobs SET state = $1, last_error = NULL, updated_at = $2 \
                         WHERE id = $3",
                    )
                    .bind(JobState::RolledBack.as_str()).bind(&now).bind(job)
                    .execute(&mut *tx).await?;
                    sqlx::query(
                        "INSERT INTO events (job_id, move_id, at, kind, detail) \
                         VALUES ($1, NULL, $2, 'job_state', $3)",
                    )
                    .bind(job).bind(&now).bind(format!("{from} -> {}", JobState::RolledBack))
                    .execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            Ok(version)
        }.await);
        res.with_context(|| format!("catalog {}: flipping move {mv}", self.label))
    }

    /// The end of `complete`: routing becomes the plan's `to` map (version + 1), every move
    /// `completed`, the job `completed`, in one transaction.
    pub async fn complete(&self, job: &str, to: &Map) -> Result<i64> {
        let now = now_text();
        let fp = super::map_fingerprint(to);
        let map_json = to.canonical_json();
        let res: Result<i64> = with_pool!(self, p => async {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let state: Option<String> = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
                .bind(job).fetch_optional(&mut *tx).await?;
            if state.as_deref() != Some(JobState::Completing.as_str()) {
                bail!("job {job} is {state:?}, not completing");
            }
            sqlx::query(
                "UPDATE routing SET version = version + 1, fingerprint = $1, map_json = $2, \
                 updated_at = $3 WHERE id = 1",
            )
            .bind(&fp).bind(&map_json).bind(&now).execute(&mut *tx).await?;
            let version: i64 = sqlx::query_scalar("SELECT version FROM routing WHERE id = 1")
                .fetch_one(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO routing_history (version, fingerprint, map_json, job_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(version).bind(&fp).bind(&map_json).bind(job).bind(&now)
            .execute(&mut *tx).await?;
            sqlx::query(
                "UPDATE moves SET state = 'completed', updated_at = $1, finished_at = $1 WHERE job_id = $2",
            )
            .bind(&now).bind(job).execute(&mut *tx).await?;
            sqlx::query(
                "UPDATE jobs SET state = 'completed', last_error = NULL, updated_at = $1, \
                 finished_at = $1 WHERE id = $2",
            )
            .bind(&now).bind(job).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO events (job_id, move_id, at, kind, detail) \
                 VALUES ($1, NULL, $2, 'completed', $3)",
            )
            .bind(job).bind(&now).bind(format!("routing version {version} is the plan's `to` map"))
            .execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(version)
        }.await);
        res.with_context(|| format!("catalog {}: completing job {job}", self.label))
    }

    /// (cursor JSON, done) of the cleanup of one move's table, when started.
    pub async fn cleanup_cursor(
        &self,
        job: &str,
        mv: &str,
        table: &str,
    ) -> Result<Option<(Option<String>, bool)>> {
        let row: Option<(Option<String>, i64)> = with_pool!(self, p => {
            sqlx::query_as(
                "SELECT cursor_json, done FROM cleanup_cursors \
                 WHERE job_id = $1 AND move_id = $2 AND table_name = $3",
            )
            .bind(job).bind(mv).bind(table).fetch_optional(p).await
        })
        .with_context(|| format!("catalog {}: reading a cleanup cursor", self.label))?;
        Ok(row.map(|(c, d)| (c, d != 0)))
    }

    pub async fn record_cleanup(
        &self,
        job: &str,
        mv: &str,
        table: &str,
        cursor: Option<&str>,
        done: bool,
        deleted: u64,
    ) -> Result<()> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO cleanup_cursors (job_id, move_id, table_name, cursor_json, done, \
                 rows_deleted, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (job_id, move_id, table_name) DO UPDATE SET \
                 cursor_json = COALESCE($4, cleanup_cursors.cursor_json), done = $5, \
                 rows_deleted = cleanup_cursors.rows_deleted + $6, updated_at = $7",
            )
            .bind(job).bind(mv).bind(table).bind(cursor).bind(done as i64)
            .bind(deleted as i64).bind(now_text())
            .execute(p).await.map(|_| ())
        })
        .with_context(|| format!("catalog {}: recording cleanup of move {mv}", self.label))
    }
}
