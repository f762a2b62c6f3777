//! What happens to an online job after its cutovers, by whichever process holds its lease: the
//! `complete`, `rollback` and `cancel` commands themselves, or a `reshard worker` (or `reshard
//! sync`) that serves the job in dual write and carries out the request an operator recorded.
//!
//! Serving a job in dual write is reverse sync: the new owners' change logs are drained back to
//! the old owners continuously, so that a rollback loses nothing and has little to apply. The
//! requests are polled about twice a second between drains.

use crate::error::Stop;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::capture::Online;
use crate::catalog::Catalog;
use crate::cutover::{Cutover, MAX_FENCE_ATTEMPTS};
use crate::execute::JobOptions;
use crate::plan::Plan;
use crate::preflight::{self, Context};
use crate::signals::StopFlag;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Complete,
    Rollback,
    Cancel,
    Sync,
}

impl Action {
    /// The word an operator's request is recorded as (`jobs.request`).
    pub fn request_word(self) -> &'static str {
        match self {
            Action::Complete => "complete",
            Action::Rollback => "rollback",
            Action::Cancel => "cancel",
            Action::Sync => "sync",
        }
    }
}

/// A request for `complete`, `rollback` (of every move, or of one: `rollback MOVE`) or `cancel`,
/// as recorded on the job's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    pub action: Action,
    pub move_id: Option<String>,
}

impl Asked {
    pub fn to_request(&self) -> String {
        match &self.move_id {
            Some(m) => format!("{} {m}", self.action.request_word()),
            None => self.action.request_word().to_string(),
        }
    }

    /// None for requests that are not complete, rollback or cancel (pause, switch).
    pub fn parse(request: &str) -> Option<Asked> {
        let mut words = request.split(' ');
        let action = match words.next()? {
            "complete" => Action::Complete,
            "rollback" => Action::Rollback,
            "cancel" => Action::Cancel,
            _ => return None,
        };
        let move_id = words.next().map(str::to_string);
        Some(Asked { action, move_id })
    }
}

/// How an action is carried out.
#[derive(Debug, Clone)]
pub struct Spec {
    pub move_id: Option<String>,
    /// `complete`: verify every move before deleting old copies.
    pub verify: bool,
    pub max_fence: Duration,
    /// Tables the job created (cancel drops them).
    pub created: Vec<(String, String)>,
}

/// A job's stored plan and options, re-checked, with its shards connected and described.
pub struct Loaded {
    pub plan: Plan,
    pub options: JobOptions,
    pub ctx: Context,
}

/// Loads `job` from the catalog for acting on it. `tolerate_missing`: a cancel after
/// `--create-tables` may find some created tables gone already.
pub async fn load(
    catalog: &Catalog,
    job: &str,
    lock_timeout: Option<Duration>,
    tolerate_missing: bool,
) -> Result<Loaded> {
    let row = catalog
        .job(job)
        .await?
        .with_context(|| format!("job {job}: not in the catalog"))?;
    let plan = Plan::parse(&row.plan_json, &format!("job {job} plan"))?;
    // Moves changed in the catalog would delete, drop or flip the wrong keys' rows.
    crate::plan_check::check_stored(&plan, job)?;
    let options: JobOptions = serde_json::from_str(&row.options_json)
        .with_context(|| format!("job {job}: unreadable options in the catalog"))?;
    options.use_lock_timeout(job, lock_timeout);
    let (mut ctx, mut problems) = preflight::connect(&plan).await;
    problems.extend(preflight::describe_all(&mut ctx).await);
    if !problems.is_empty() && !tolerate_missing {
        anyhow::bail!(
            "job {job} cannot continue yet:\n  - {}",
            problems.join("\n  - ")
        );
    }
    Ok(Loaded { plan, options, ctx })
}

/// Carries out `action` on a job whose lease the caller holds, fences reconciled.
pub async fn carry_out(online: &mut Online<'_>, action: Action, spec: &Spec) -> Result<()> {
    let id = online.job.to_string();
    match action {
        Action::Complete => {
            if !spec.verify {
                crate::progress::say(format!(
                    "reshard: job {id}: deleting old copies WITHOUT verifying them \
                     (--skip-verify-risking-data-loss)"
                ));
            }
            let v = online.complete(spec.verify).await?;
            crate::progress::say(format!(
                "reshard: job {id} completed; routing version {v} is the plan's new map"
            ));
        }
        Action::Cancel => {
            online.cancel(&spec.created).await?;
            crate::progress::say(format!(
                "reshard: job {id} cancelled; the shards are as they were"
            ));
        }
        Action::Sync => {
            let stop = crate::signals::install().context("installing signal handlers")?;
            crate::progress::say(format!(
                "reshard: job {id}: reverse sync running; Ctrl-C stops it. A complete, rollback \
                 or cancel asked meanwhile is carried out here"
            ));
            let me = crate::catalog::worker_id();
            if Box::pin(serve_and_carry_out(online, &stop, &me, spec))
                .await?
                .is_none()
            {
                // Stopped by a signal: exit 130 like every interrupted command, since reverse
                // sync no longer runs (the job stays in dual write; nothing is lost meanwhile).
                return Err(Stop::Interrupted {
                    resume: format!(
                        "reshard sync {id} or a reshard worker (until then the new owners' \
                         changes wait in their change logs)"
                    ),
                }
                .into());
            }
        }
        Action::Rollback => rollback(online, spec).await?,
    }
    Ok(())
}

async fn rollback(online: &mut Online<'_>, spec: &Spec) -> Result<()> {
    let id = online.job.to_string();
    for mi in 0..online.moves.len() {
        if !online.flipped[mi]
            || spec
                .move_id
                .as_ref()
                .is_some_and(|m| *m != online.moves[mi].id)
        {
            continue;
        }
        let mut tries = 0;
        loop {
            // Catch up first so that the fenced drain is short.
            online
                .drain(&online.moves[mi].destination.clone(), false)
                .await?;
            match online.rollback(mi, spec.max_fence).await? {
                Cutover::Flipped { fence_ms } => {
                    crate::progress::say(format!(
                        "reshard: move {} flipped back, fence {fence_ms} ms",
                        online.moves[mi].id
                    ));
                    break;
                }
                Cutover::Aborted(why) => {
                    tries += 1;
                    if tries >= MAX_FENCE_ATTEMPTS {
                        anyhow::bail!(
                            "move {}: {tries} rollback fences failed (last: {why})",
                            online.moves[mi].id
                        );
                    }
                }
            }
        }
    }
    // Each flip back recorded rolled_back with it (Catalog::flip).
    let left = online.flipped.iter().filter(|f| **f).count();
    let (part, rest) = if left > 0 {
        (
            format!(" in part ({left} moves still flipped)"),
            ", after rolling back the rest",
        )
    } else {
        (String::new(), "")
    };
    crate::progress::say(format!(
        "reshard: job {id} rolled back{part}; next: reshard cancel {id} (undo{rest}) or \
         reshard resume {id} (cut over again)"
    ));
    Ok(())
}

/// How often a serving process looks for a request between drains.
const REQUEST_POLL: Duration = Duration::from_millis(500);

/// Reverse sync of a job in dual write until `stop`, or until an operator's request to
/// complete, roll back or cancel is recorded: that request is returned for the caller to carry
/// out. It stays recorded until [`settle`]: a process that dies carrying it out leaves it for
/// the next (each action is idempotent).
pub async fn serve(online: &Online<'_>, stop: &StopFlag) -> Result<Option<Asked>> {
    let shards: Vec<String> = online.shards().into_iter().map(|(s, _)| s).collect();
    let cat = online.catalog;
    let job = online.job;
    let mut polled = Instant::now() - REQUEST_POLL;
    while !stop.requested() {
        if polled.elapsed() >= REQUEST_POLL {
            polled = Instant::now();
            let request =
                crate::retry::retry("catalog: reading requests", || cat.job_request(job)).await?;
            let asked = request.as_deref().and_then(Asked::parse);
            if asked.is_some() {
                return Ok(asked);
            }
        }
        let mut n = 0;
        for s in &shards {
            n += online.drain(s, false).await?.entries;
        }
        crate::failpoint::hit("reverse_synced");
        if n == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(None)
}

/// Serves the job in dual write until `stop`, and carries out the first request recorded;
/// returns it, or None when stopped first.
pub async fn serve_and_carry_out(
    online: &mut Online<'_>,
    stop: &StopFlag,
    me: &str,
    spec: &Spec,
) -> Result<Option<Asked>> {
    let Some(asked) = serve(online, stop).await? else {
        return Ok(None);
    };
    let word = asked.to_request();
    online
        .catalog
        .event(
            online.job,
            None,
            "request_taken",
            &format!("{word}, by {me}"),
        )
        .await?;
    crate::progress::say(format!(
        "reshard: job {}: {word} requested; carrying it out",
        online.job
    ));
    let spec = Spec {
        move_id: asked.move_id.clone(),
        ..spec.clone()
    };
    let r = carry_out(online, asked.action, &spec).await;
    if let Err(e) = &r {
        let msg = format!("{e:#}");
        let failed =
            online
                .catalog
                .set_job_state(online.job, crate::job::JobState::Failed, Some(&msg));
        failed.await.ok();
    }
    settle(online.catalog, online.job, &asked, &r).await?;
    r.map(|()| Some(asked))
}

/// Forgets a request once carried out, or once it failed (the failure is the job's state and
/// error), with an event saying which.
pub async fn settle(cat: &Catalog, job: &str, asked: &Asked, outcome: &Result<()>) -> Result<()> {
    let word = asked.to_request();
    cat.clear_request(job, &word).await?;
    let detail = match outcome {
        Ok(()) => format!("{word}: done"),
        Err(e) => format!("{word}: failed: {e:#}"),
    };
    cat.event(job, None, "request_done", &detail).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for a in [
            Asked {
                action: Action::Complete,
                move_id: None,
            },
            Asked {
                action: Action::Rollback,
                move_id: Some("m3".into()),
            },
            Asked {
                action: Action::Cancel,
                move_id: None,
            },
        ] {
            assert_eq!(Asked::parse(&a.to_request()), Some(a));
        }
        assert_eq!(Asked::parse("pause"), None);
        assert_eq!(Asked::parse("switch"), None);
        assert_eq!(Asked::parse(""), None);
    }
}
