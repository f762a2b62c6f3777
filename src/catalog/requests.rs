//! Operator requests recorded in the catalog (issue 14): `reshard pause` writes its intent on
//! the job row, and the process running the job reads it within a second and stops at its next
//! safe point, as after a first Ctrl-C. With no process running the job, the request takes
//! effect at once.

use anyhow::{Context as _, Result};

use super::{holder_is_dead, now_ms, now_text, Catalog, Pool};
use crate::job::JobState;

/// What `request_pause` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PauseOutcome {
    /// Recorded for the live process `holder`, which pauses the job at its next safe point.
    Requested { holder: String },
    /// No process was running the job: it is paused now.
    Paused,
    /// It was paused already.
    Already,
    /// Not in this state (the message says why and what to do).
    Refused(String),
}

/// The request that pauses a job.
pub const PAUSE: &str = "pause";
/// The request that lets a job started with `apply --switch manual` flip its moves: the word
/// alone for every move, or followed by the ids of the moves it lets flip (`switch m1 m3`).
pub const SWITCH: &str = "switch";

/// Which moves a switch request lets flip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Switch {
    All,
    Moves(std::collections::BTreeSet<String>),
}

impl Switch {
    /// The switch a recorded request asks for; None when the request is not a switch.
    pub fn parse(request: &str) -> Option<Switch> {
        let mut words = request.split_whitespace();
        if words.next() != Some(SWITCH) {
            return None;
        }
        let moves: std::collections::BTreeSet<String> = words.map(str::to_string).collect();
        Some(if moves.is_empty() {
            Switch::All
        } else {
            Switch::Moves(moves)
        })
    }

    /// The request text, in the catalog's `request` column.
    pub fn text(&self) -> String {
        match self {
            Switch::All => SWITCH.to_string(),
            Switch::Moves(m) => {
                let ids: Vec<&str> = m.iter().map(String::as_str).collect();
                format!("{SWITCH} {}", ids.join(" "))
            }
        }
    }

    /// This switch and `more` together: a second `switch --move` adds to the first, and a
    /// switch of every move covers any.
    pub fn union(self, more: Switch) -> Switch {
        match (self, more) {
            (Switch::Moves(mut a), Switch::Moves(b)) => {
                a.extend(b);
                Switch::Moves(a)
            }
            _ => Switch::All,
        }
    }

    pub fn allows(&self, move_id: &str) -> bool {
        match self {
            Switch::All => true,
            Switch::Moves(m) => m.contains(move_id),
        }
    }
}

impl Catalog {
    /// Asks that `job` pause, in one transaction with its events.
    pub async fn request_pause(&self, job: &str) -> Result<PauseOutcome> {
        let now = now_ms();
        let res: Result<PauseOutcome> = with_pool!(self, p => async {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let q = if matches!(self.pool, Pool::Postgres(_)) {
                "SELECT state, lease_owner, lease_expires_ms FROM jobs WHERE id = $1 FOR UPDATE"
            } else {
                "SELECT state, lease_owner, lease_expires_ms FROM jobs WHERE id = $1"
            };
            let row: Option<(String, Option<String>, Option<i64>)> =
                sqlx::query_as(q).bind(job).fetch_optional(&mut *tx).await?;
            let Some((state, holder, until)) = row else {
                return Ok(PauseOutcome::Refused(format!("job {job}: not in the catalog")));
            };
            let state = JobState::parse(&state)
                .with_context(|| format!("job {job}: unknown state {state:?}"))?;
            if state == JobState::Paused {
                return Ok(PauseOutcome::Already);
            }
            if !state.can_become(JobState::Paused) {
                return Ok(PauseOutcome::Refused(format!(
                    "job {job} is {state}: only a job that is copying or cutting over pauses \
                     (next: {})",
                    state.finish_hint(job, false, false)
                )));
            }
            let rows: Vec<(Option<String>, Option<i64>)> =
                sqlx::query_as(super::tasks::TASK_HOLDERS).bind(job).fetch_all(&mut *tx).await?;
            // The job's lease holder, or else a worker copying one of its moves.
            let live = match (&holder, until) {
                (Some(h), Some(u)) if u > now && !holder_is_dead(h) => Some(h.clone()),
                _ => super::tasks::live_task_holders(&rows, "", now).into_iter().next(),
            };
            let (outcome, request, detail) = match &live {
                Some(h) => (
                    PauseOutcome::Requested { holder: h.clone() },
                    Some(PAUSE),
                    format!("pause, asked of {h}"),
                ),
                None => (
                    PauseOutcome::Paused,
                    None,
                    "pause: no process was running the job; paused at once".to_string(),
                ),
            };
            let at = now_text();
            let new_state = if live.is_some() { state } else { JobState::Paused };
            sqlx::query("UPDATE jobs SET request = $1, state = $2, updated_at = $3 WHERE id = $4")
                .bind(request).bind(new_state.as_str()).bind(&at).bind(job)
                .execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO events (job_id, move_id, at, kind, detail) \
                 VALUES ($1, NULL, $2, 'request', $3)",
            )
            .bind(job).bind(&at).bind(detail).execute(&mut *tx).await?;
            if new_state != state {
                sqlx::query(
                    "INSERT INTO events (job_id, move_id, at, kind, detail) \
                     VALUES ($1, NULL, $2, 'job_state', $3)",
                )
                .bind(job).bind(&at).bind(format!("{state} -> {new_state}"))
                .execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(outcome)
        }.await);
        res.with_context(|| format!("catalog {}: pausing job {job}", self.label))
    }

    /// The operator's pending request on `job`, if any.
    pub async fn job_request(&self, job: &str) -> Result<Option<String>> {
        let res: Result<Option<Option<String>>> = with_pool!(self, p => async {
            Ok(sqlx::query_scalar("SELECT request FROM jobs WHERE id = $1")
                .bind(job).fetch_optional(p).await?)
        }.await);
        Ok(res
            .with_context(|| format!("catalog {}: reading job {job}'s request", self.label))?
            .flatten())
    }

    /// Forgets the pending request when it is `kind`: the run that honoured it (or a resume)
    /// has begun.
    pub async fn clear_request(&self, job: &str, kind: &str) -> Result<()> {
        let res: Result<()> = with_pool!(self, p => async {
            sqlx::query("UPDATE jobs SET request = NULL WHERE id = $1 AND request = $2")
                .bind(job).bind(kind).execute(p).await?;
            Ok(())
        }.await);
        res.with_context(|| format!("catalog {}: clearing job {job}'s request", self.label))
    }

    /// The job's pending switch (`reshard switch`), if any: kept apart from the other
    /// requests, which neither carry it out nor overwrite it.
    pub async fn job_switch(&self, job: &str) -> Result<Option<Switch>> {
        let res: Result<Option<Option<String>>> = with_pool!(self, p => async {
            Ok(sqlx::query_scalar("SELECT switch_request FROM jobs WHERE id = $1")
                .bind(job).fetch_optional(p).await?)
        }.await);
        Ok(res
            .with_context(|| format!("catalog {}: reading job {job}'s switch", self.label))?
            .flatten()
            .as_deref()
            .and_then(Switch::parse))
    }

    /// Adds `switch` to the job's pending switch (or records it), with its event, in one
    /// transaction. A pending pause stays and the switch waits for the resume; refused while
    /// a complete, rollback or cancel is pending. Returns the switch now recorded.
    pub async fn record_switch(&self, job: &str, switch: Switch, detail: &str) -> Result<Switch> {
        let at = now_text();
        let pg = matches!(self.pool, Pool::Postgres(_));
        let res: Result<Switch> = with_pool!(self, p => async {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let q = if pg {
                "SELECT request, switch_request FROM jobs WHERE id = $1 FOR UPDATE"
            } else {
                "SELECT request, switch_request FROM jobs WHERE id = $1"
            };
            let row: Option<(Option<String>, Option<String>)> =
                sqlx::query_as(q).bind(job).fetch_optional(&mut *tx).await?;
            let (request, pending) = row.unwrap_or_default();
            if let Some(r) = request.filter(|r| r != PAUSE) {
                return Err(crate::error::Stop::Refused(format!(
                    "job {job} has a pending {r:?} request; switch once it is carried out"
                ))
                .into());
            }
            let merged = match pending.as_deref().and_then(Switch::parse) {
                Some(before) => before.union(switch),
                None => switch,
            };
            sqlx::query("UPDATE jobs SET switch_request = $1, updated_at = $2 WHERE id = $3")
                .bind(merged.text()).bind(&at).bind(job).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO events (job_id, move_id, at, kind, detail) \
                 VALUES ($1, NULL, $2, 'request', $3)",
            )
            .bind(job).bind(&at).bind(detail).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(merged)
        }.await);
        res.with_context(|| format!("catalog {}: recording a switch on job {job}", self.label))
    }

    /// Forgets a pending switch, of every move or of some.
    pub async fn clear_switch(&self, job: &str) -> Result<()> {
        let res: Result<()> = with_pool!(self, p => async {
            sqlx::query("UPDATE jobs SET switch_request = NULL WHERE id = $1")
                .bind(job).execute(p).await?;
            Ok(())
        }.await);
        res.with_context(|| format!("catalog {}: clearing job {job}'s switch", self.label))
    }

    /// Records `kind` as the job's pending request, with its event, in one transaction.
    pub async fn record_request(&self, job: &str, kind: &str, detail: &str) -> Result<()> {
        let at = now_text();
        let res: Result<()> = with_pool!(self, p => async {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            sqlx::query("UPDATE jobs SET request = $1, updated_at = $2 WHERE id = $3")
                .bind(kind).bind(&at).bind(job).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO events (job_id, move_id, at, kind, detail) \
                 VALUES ($1, NULL, $2, 'request', $3)",
            )
            .bind(job).bind(&at).bind(detail).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(())
        }.await);
        res.with_context(|| format!("catalog {}: recording {kind} on job {job}", self.label))
    }

    /// The process holding the job's lease, when it is live.
    pub async fn live_holder(&self, job: &str) -> Result<Option<String>> {
        let now = now_ms();
        Ok(self
            .job(job)
            .await?
            .and_then(|j| match (j.lease_owner, j.lease_expires_ms) {
                (Some(h), Some(u)) if u > now && !holder_is_dead(&h) => Some(h),
                _ => None,
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moves(ids: &[&str]) -> Switch {
        Switch::Moves(ids.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn a_switch_request_reads_back_as_written() {
        for s in [Switch::All, moves(&["m1"]), moves(&["m3", "m1"])] {
            assert_eq!(Switch::parse(&s.text()), Some(s.clone()));
        }
        assert_eq!(moves(&["m3", "m1"]).text(), "switch m1 m3");
        assert_eq!(Switch::parse("switch"), Some(Switch::All));
        for other in ["pause", "complete", "rollback m1", "switched", ""] {
            assert_eq!(Switch::parse(other), None, "{other}");
        }
    }

    #[test]
    fn switches_add_up_and_all_covers_any() {
        assert_eq!(moves(&["m1"]).union(moves(&["m2"])), moves(&["m1", "m2"]));
        assert_eq!(moves(&["m1"]).union(Switch::All), Switch::All);
        assert_eq!(Switch::All.union(moves(&["m1"])), Switch::All);
        let s = moves(&["m2"]);
        assert!(s.allows("m2") && !s.allows("m1") && Switch::All.allows("m1"));
    }
}
