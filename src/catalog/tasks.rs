//! Per-move tasks that `reshard worker` processes lease (issue 14). A job's copy is split into
//! one task per move; any worker claims a free one, renews its lease while it copies, and marks
//! it done. A worker that dies stops renewing; once the lease expires (at once, when the holder
//! was a process on the same host that no longer exists) another worker claims the task and
//! continues from the cursors the copy recorded.
//!
//! Claims and the job's own lease exclude each other: both lock the job's row first (PostgreSQL
//! `FOR SHARE` / `FOR UPDATE`, SQLite's `BEGIN IMMEDIATE`), a claim needs the job lease free,
//! and the job lease refuses while another process holds a live task. Claims among themselves
//! use `FOR UPDATE SKIP LOCKED`, so concurrent workers take different tasks without waiting.

use std::time::Duration;

use anyhow::{Context as _, Result};

use super::{holder_is_dead, now_ms, now_text, Catalog, Pool};
use crate::job::JobState;

/// The task kind that copies one move.
pub const COPY: &str = "copy";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    pub id: String,
    pub kind: String,
    pub move_id: Option<String>,
    /// `ready` or `done`.
    pub state: String,
    pub owner: Option<String>,
    pub lease_expires_ms: Option<i64>,
    pub attempts: i64,
}

impl TaskRow {
    pub fn done(&self) -> bool {
        self.state == "done"
    }

    /// The process holding this task now: a lease not expired whose holder is not known dead.
    pub fn live_holder(&self, now: i64) -> Option<&str> {
        live(self.owner.as_deref(), self.lease_expires_ms, now)
    }
}

/// `owner` when its lease runs past `now` and it is not a dead process on this host.
pub fn live(owner: Option<&str>, until: Option<i64>, now: i64) -> Option<&str> {
    match (owner, until) {
        (Some(h), Some(u)) if u > now && !holder_is_dead(h) => Some(h),
        _ => None,
    }
}

/// A task this worker now holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub id: String,
    pub move_id: Option<String>,
    /// The holder whose lease had lapsed, when this claim took the task over.
    pub taken_from: Option<String>,
}

type TaskTuple = (
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<i64>,
    i64,
);

/// (state or id, request or move, lease owner, lease expiry) as the claim reads them.
type FourCols = (String, Option<String>, Option<String>, Option<i64>);

impl Catalog {
    pub async fn tasks(&self, job: &str) -> Result<Vec<TaskRow>> {
        let res: Result<Vec<TaskTuple>> = with_pool!(self, p => async {
            Ok(sqlx::query_as(
                "SELECT id, kind, move_id, state, owner, lease_expires_ms, attempts \
                 FROM tasks WHERE job_id = $1 ORDER BY id",
            )
            .bind(job).fetch_all(p).await?)
        }.await);
        let rows =
            res.with_context(|| format!("catalog {}: reading job {job}'s tasks", self.label))?;
        Ok(rows
            .into_iter()
            .map(
                |(id, kind, move_id, state, owner, lease_expires_ms, attempts)| TaskRow {
                    id,
                    kind,
                    move_id,
                    state,
                    owner,
                    lease_expires_ms,
                    attempts,
                },
            )
            .collect())
    }

    /// Creates a copy task for each of `moves` that has none, in one transaction with an
    /// event; a task exists from then on, so a second call adds nothing.
    pub async fn add_copy_tasks(&self, job: &str, moves: &[String]) -> Result<()> {
        let at = now_text();
        let res: Result<()> = with_pool!(self, p => async {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let mut added = 0;
            for m in moves {
                let n = sqlx::query(
                    "INSERT INTO tasks (job_id, id, kind, move_id, state, updated_at) \
                     SELECT $1, $2, $3, $4, 'ready', $5 WHERE NOT EXISTS \
                     (SELECT 1 FROM tasks WHERE job_id = $1 AND id = $2)",
                )
                .bind(job).bind(format!("{COPY}:{m}")).bind(COPY).bind(m).bind(&at)
                .execute(&mut *tx).await?.rows_affected();
                added += n;
            }
            if added > 0 {
                sqlx::query(
                    "INSERT INTO events (job_id, move_id, at, kind, detail) \
                     VALUES ($1, NULL, $2, 'tasks_added', $3)",
                )
                .bind(job).bind(&at).bind(format!("{added} copy task(s), one per move"))
                .execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        }.await);
        res.with_context(|| format!("catalog {}: adding job {job}'s tasks", self.label))
    }

    /// Claims a free task of `kind` for `owner`, when the job is running, no pause is asked
    /// and no process holds the job's lease. None when there is nothing to claim.
    pub async fn claim_task(
        &self,
        job: &str,
        kind: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Claim>> {
        let now = now_ms();
        let pg = matches!(self.pool, Pool::Postgres(_));
        let res: Result<Option<Claim>> = with_pool!(self, p => async {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let q = if pg {
                "SELECT state, request, lease_owner, lease_expires_ms FROM jobs WHERE id = $1 \
                 FOR SHARE"
            } else {
                "SELECT state, request, lease_owner, lease_expires_ms FROM jobs WHERE id = $1"
            };
            let row: Option<FourCols> =
                sqlx::query_as(q).bind(job).fetch_optional(&mut *tx).await?;
            let Some((state, request, holder, until)) = row else {
                return Ok(None);
            };
            let stopping = request.is_some();
            if JobState::parse(&state) != Some(JobState::Running)
                || stopping
                || live(holder.as_deref(), until, now).is_some()
            {
                return Ok(None);
            }
            let q = if pg {
                "SELECT id, move_id, owner, lease_expires_ms FROM tasks \
                 WHERE job_id = $1 AND kind = $2 AND state = 'ready' ORDER BY id \
                 FOR UPDATE SKIP LOCKED"
            } else {
                "SELECT id, move_id, owner, lease_expires_ms FROM tasks \
                 WHERE job_id = $1 AND kind = $2 AND state = 'ready' ORDER BY id"
            };
            let free: Vec<FourCols> =
                sqlx::query_as(q).bind(job).bind(kind).fetch_all(&mut *tx).await?;
            let Some((id, move_id, was, _)) = free
                .into_iter()
                .find(|(_, _, o, u)| o.as_deref() == Some(owner) || live(o.as_deref(), *u, now).is_none())
            else {
                return Ok(None);
            };
            let at = now_text();
            sqlx::query(
                "UPDATE tasks SET owner = $1, lease_expires_ms = $2, attempts = attempts + 1, \
                 updated_at = $3 WHERE job_id = $4 AND id = $5",
            )
            .bind(owner).bind(now + ttl.as_millis() as i64).bind(&at).bind(job).bind(&id)
            .execute(&mut *tx).await?;
            let taken_from = was.filter(|w| w != owner);
            let detail = match &taken_from {
                Some(w) => format!("{id} by {owner} (taken over from {w})"),
                None => format!("{id} by {owner}"),
            };
            sqlx::query(
                "INSERT INTO events (job_id, move_id, at, kind, detail) \
                 VALUES ($1, $2, $3, 'task_leased', $4)",
            )
            .bind(job).bind(&move_id).bind(&at).bind(detail)
            .execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(Some(Claim { id, move_id, taken_from }))
        }.await);
        res.with_context(|| format!("catalog {}: claiming a task of job {job}", self.label))
    }

    /// Extends our lease on a task; false when it is no longer ours.
    pub async fn renew_task(
        &self,
        job: &str,
        id: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let until = now_ms() + ttl.as_millis() as i64;
        let n = with_pool!(self, p => {
            sqlx::query(
                "UPDATE tasks SET lease_expires_ms = $1 WHERE job_id = $2 AND id = $3 \
                 AND owner = $4 AND state = 'ready'",
            )
            .bind(until).bind(job).bind(id).bind(owner).execute(p).await.map(|r| r.rows_affected())
        })
        .with_context(|| format!("catalog {}: renewing task {id} of job {job}", self.label))?;
        Ok(n == 1)
    }

    /// Marks our task done (`done`) or gives it back unfinished, with its event.
    pub async fn end_task(&self, job: &str, id: &str, owner: &str, done: bool) -> Result<()> {
        let at = now_text();
        let (state, kind) = if done {
            ("done", "task_done")
        } else {
            ("ready", "task_released")
        };
        let res: Result<()> = with_pool!(self, p => async {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let n = sqlx::query(
                "UPDATE tasks SET state = $1, owner = NULL, lease_expires_ms = NULL, \
                 updated_at = $2 WHERE job_id = $3 AND id = $4 AND owner = $5",
            )
            .bind(state).bind(&at).bind(job).bind(id).bind(owner)
            .execute(&mut *tx).await?.rows_affected();
            if n == 1 {
                sqlx::query(
                    "INSERT INTO events (job_id, move_id, at, kind, detail) \
                     SELECT $1, move_id, $2, $3, $4 FROM tasks WHERE job_id = $1 AND id = $5",
                )
                .bind(job).bind(&at).bind(kind).bind(format!("{id} by {owner}")).bind(id)
                .execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        }.await);
        res.with_context(|| format!("catalog {}: ending task {id} of job {job}", self.label))
    }
}

/// The holders of a job's unfinished tasks, for [`live_task_holders`]; bind the job's id.
pub(crate) const TASK_HOLDERS: &str = "SELECT owner, lease_expires_ms FROM tasks \
     WHERE job_id = $1 AND state = 'ready' AND owner IS NOT NULL";

/// The live processes among [`TASK_HOLDERS`]' rows, other than `me`, once each.
pub(crate) fn live_task_holders(
    rows: &[(Option<String>, Option<i64>)],
    me: &str,
    now: i64,
) -> Vec<String> {
    let mut out: Vec<String> = rows
        .iter()
        .filter_map(|(o, u)| live(o.as_deref(), *u, now))
        .filter(|h| *h != me)
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_is_live_until_its_lease_expires() {
        let me = crate::catalog::worker_id();
        assert_eq!(live(Some(&me), Some(2000), 1000), Some(me.as_str()));
        assert_eq!(
            live(Some(&me), Some(1000), 1000),
            None,
            "expired at the instant"
        );
        assert_eq!(live(None, Some(2000), 1000), None);
        assert_eq!(live(Some(&me), None, 1000), None);
    }

    #[test]
    fn a_dead_process_on_this_host_holds_nothing() {
        // pid 0 is never a process one can be; its /proc entry does not exist.
        let dead = format!("{}:0:00000000", crate::catalog::this_host());
        assert_eq!(live(Some(&dead), Some(i64::MAX), 0), None);
        // A holder on another host is trusted until its lease expires.
        let remote = "elsewhere-host:1:00000000".to_string();
        assert_eq!(live(Some(&remote), Some(10), 0), Some(remote.as_str()));
    }

    #[test]
    fn holders_other_than_me_once_each() {
        let me = crate::catalog::worker_id();
        let other = "elsewhere-host:7:0000abcd".to_string();
        let rows = vec![
            (Some(me.clone()), Some(100)),
            (Some(other.clone()), Some(100)),
            (Some(other.clone()), Some(100)),
            (Some("elsewhere-host:8:0".to_string()), Some(5)),
            (None, None),
        ];
        assert_eq!(live_task_holders(&rows, &me, 10), vec![other]);
    }
}
