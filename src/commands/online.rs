//! `reshard complete`, `rollback`, `cancel` and `sync`: the commands that act on an online job
//! after (or instead of) its cutovers. Each takes the job's lease, reconciles fences with the
//! catalog, and is idempotent.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::capture::Online;
use crate::cutover::{Cutover, MAX_FENCE_ATTEMPTS};
use crate::decide::{decide, Decision, Flips, Request};
use crate::error::{InputError, Stop};
use crate::execute::JobOptions as RunOptions;
use crate::job::JobState;
use crate::lease::Lease;
use crate::plan::Plan;
use crate::preflight;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Complete,
    Rollback,
    Cancel,
    Sync,
}

#[derive(Debug, Clone)]
pub struct JobOptions {
    pub job: String,
    pub catalog: String,
    pub max_fence: String,
    pub move_id: Option<String>,
    /// `complete`: verify every move before deleting old copies (off only with
    /// `--skip-verify-risking-data-loss`).
    pub verify: bool,
    /// `--lock-timeout` when given; otherwise the one the job was started with.
    pub lock_timeout: Option<Duration>,
}

/// `2s`, `500ms`, `1.5s` or a bare number of milliseconds.
pub fn parse_duration(flag: &str, s: &str) -> Result<Duration, InputError> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v * scale <= 3_600_000.0 => {
            Ok(Duration::from_millis((v * scale).round().max(1.0) as u64))
        }
        _ => Err(InputError::one(format!(
            "{flag}: {s:?} is not a duration such as 2s or 500ms (at most 1 hour)"
        ))),
    }
}

pub fn run(action: Action, opts: JobOptions) -> i32 {
    let max_fence = match parse_duration("--max-fence", &opts.max_fence) {
        Ok(d) => d,
        Err(e) => return super::report(e.into()),
    };
    super::block_on(act(action, opts, max_fence))
}

async fn act(action: Action, opts: JobOptions, max_fence: Duration) -> Result<()> {
    let catalog = Arc::new(super::open_existing(&opts.catalog).await?);
    let job = catalog
        .job(&opts.job)
        .await?
        .ok_or_else(|| InputError::one(format!("job {}: not in the catalog", opts.job)))?;
    let state = JobState::parse(&job.state)
        .with_context(|| format!("job {}: unknown state {:?}", job.id, job.state))?;
    let moves = catalog.moves(&job.id).await?;
    let id = job.id.clone();
    if let Some(m) = &opts.move_id {
        if !moves.iter().any(|r| &r.id == m) {
            return Err(InputError::one(format!("--move: job {id} has no move {m}")).into());
        }
    }
    let request = match action {
        Action::Complete => Request::Complete,
        Action::Rollback => Request::Rollback,
        Action::Cancel => Request::Cancel,
        Action::Sync => Request::Sync,
    };
    match decide(
        request,
        &id,
        state,
        Flips::of(moves.iter().map(|m| m.flipped)),
    ) {
        Decision::Run => {}
        Decision::Done(msg) => {
            eprintln!("reshard: {msg}");
            return Ok(());
        }
        Decision::NothingFlipped { mark_rolled_back } => {
            // Routing already sends every key to its old owner; a second run (or one after a
            // crash that followed the last flip back) succeeds and says so.
            if mark_rolled_back {
                catalog
                    .set_job_state(&id, JobState::RolledBack, None)
                    .await?;
            }
            eprintln!(
                "reshard: job {id}: no move is flipped; routing is the old map already. \
                 Next: reshard cancel {id} (undo) or reshard resume {id} (cut over again)"
            );
            return Ok(());
        }
        Decision::Refused(msg) => return Err(Stop::Refused(msg).into()),
    }
    let plan = Plan::parse(&job.plan_json, &format!("job {id} plan"))?;
    // Moves changed in the catalog would delete, drop or flip the wrong keys' rows.
    crate::plan_check::check_stored(&plan, &id)?;
    let options: RunOptions = serde_json::from_str(&job.options_json)
        .with_context(|| format!("job {id}: unreadable options in the catalog"))?;
    options.use_lock_timeout(&id, opts.lock_timeout);
    let (mut ctx, mut problems) = preflight::connect(&plan).await;
    problems.extend(preflight::describe_all(&mut ctx).await);
    // A cancel after --create-tables may find some created tables gone already.
    if !problems.is_empty() && action != Action::Cancel {
        return Err(anyhow::anyhow!(
            "job {id} cannot continue yet:\n  - {}",
            problems.join("\n  - ")
        ));
    }
    let lease = Lease::acquire(&catalog, &id, None).await?;
    let result = async {
        let mut online = Online::new(&ctx, &catalog, &id).await?;
        online.load_logs().await?;
        online.reconcile().await?;
        match action {
            Action::Complete => {
                if !opts.verify {
                    eprintln!(
                        "reshard: job {id}: deleting old copies WITHOUT verifying them \
                         (--skip-verify-risking-data-loss)"
                    );
                }
                let v = online.complete(opts.verify).await?;
                eprintln!("reshard: job {id} completed; routing version {v} is the plan's new map");
            }
            Action::Cancel => {
                online.cancel(&options.create).await?;
                eprintln!("reshard: job {id} cancelled; the shards are as they were");
            }
            Action::Sync => {
                let stop = crate::signals::install().context("installing signal handlers")?;
                eprintln!("reshard: job {id}: reverse sync running; Ctrl-C stops it");
                online.sync_until(&stop).await?;
            }
            Action::Rollback => {
                for mi in 0..online.moves.len() {
                    if !online.flipped[mi]
                        || opts
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
                        match online.rollback(mi, max_fence).await? {
                            Cutover::Flipped { fence_ms } => {
                                eprintln!(
                                    "reshard: move {} flipped back, fence {fence_ms} ms",
                                    online.moves[mi].id
                                );
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
                eprintln!(
                    "reshard: job {id} rolled back{}; next: reshard cancel {id} (undo{}) or \
                     reshard resume {id} (cut over again)",
                    if left > 0 {
                        format!(" in part ({left} moves still flipped)")
                    } else {
                        String::new()
                    },
                    if left > 0 {
                        ", after rolling back the rest"
                    } else {
                        ""
                    }
                );
            }
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = &result {
        let msg = format!("{e:#}");
        if action != Action::Sync {
            catalog
                .set_job_state(&id, JobState::Failed, Some(&msg))
                .await
                .ok();
        }
    }
    lease.release().await;
    catalog.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("f", "2s").unwrap(),
            Duration::from_millis(2000)
        );
        assert_eq!(
            parse_duration("f", "150ms").unwrap(),
            Duration::from_millis(150)
        );
        assert_eq!(
            parse_duration("f", "80").unwrap(),
            Duration::from_millis(80)
        );
        assert_eq!(
            parse_duration("f", "1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert!(parse_duration("f", "0").is_err());
        assert!(parse_duration("f", "abc").is_err());
        assert!(parse_duration("f", "-1s").is_err());
    }
}
