//! `reshard complete`, `rollback`, `cancel` and `sync`: the commands that act on an online job
//! after (or instead of) its cutovers. Each takes the job's lease, reconciles fences with the
//! catalog, and is idempotent.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::capture::Online;
use crate::catalog::Catalog;
use crate::decide::{decide, Decision, Flips, Request};
use crate::error::{InputError, Stop};
use crate::finish::{self, Spec};
use crate::job::JobState;
use crate::lease::Lease;

pub use crate::finish::Action;

#[derive(Debug, Clone)]
pub struct JobOptions {
    /// None: the catalog's unfinished job.
    pub job: Option<String>,
    pub catalog: String,
    pub max_fence: String,
    pub move_id: Option<String>,
    /// `complete`: verify every move before deleting old copies (off only with
    /// `--skip-verify-risking-data-loss`).
    pub verify: bool,
    /// `--lock-timeout` when given; otherwise the one the job was started with.
    pub lock_timeout: Option<Duration>,
    /// When a live process serves the job: record the request and return at once.
    pub no_wait: bool,
    /// `--progress json`: every line on stderr is a JSON object (docs/progress.md).
    pub json: bool,
}

/// The longest duration any flag takes.
const MAX_DURATION: Duration = Duration::from_secs(3600);

/// A duration in humantime's syntax (`2s`, `500ms`, `1.5s`, `1m30s`, `1h`), above zero and at
/// most 1 hour, to the millisecond (a nonzero value under 1 ms is 1 ms). A unit is required.
pub fn parse_duration(flag: &str, s: &str) -> Result<Duration, InputError> {
    let d = parse_any(flag, s)?;
    if d.is_zero() || d > MAX_DURATION {
        return Err(not_a_duration(flag, s, None));
    }
    // Whole milliseconds, as every limit is stored and compared in them: a lock timeout of
    // 0.2ms must not become 0 ms, which PostgreSQL reads as no timeout at all.
    let ms = (d.as_nanos() + 500_000) / 1_000_000;
    Ok(Duration::from_millis(
        u64::try_from(ms.max(1)).unwrap_or(u64::MAX),
    ))
}

/// As [`parse_duration`], for a limit that zero turns off (`--max-lag 0s`, `--batch-time
/// 0s`): Duration::ZERO for it. Zero too needs its unit.
pub fn parse_duration_or_off(flag: &str, s: &str) -> Result<Duration, InputError> {
    if parse_any(flag, s)?.is_zero() {
        return Ok(Duration::ZERO);
    }
    parse_duration(flag, s)
}

/// humantime's reading of `s`, any length; a bare number is refused with the units to write.
fn parse_any(flag: &str, s: &str) -> Result<Duration, InputError> {
    let t = s.trim();
    // A unit is required: a bare `2` read as milliseconds turned `--max-fence 2` (meant as
    // seconds) into a fence no cutover could meet.
    if t.parse::<f64>().is_ok() {
        return Err(InputError::one(format!(
            "{flag}: {s:?} has no unit: write {t}s or {t}ms (units: ms, s, m, h; combined as \
             in 1m30s)"
        )));
    }
    humantime::parse_duration(t).map_err(|e| not_a_duration(flag, s, Some(e)))
}

fn not_a_duration(flag: &str, s: &str, why: Option<humantime::DurationError>) -> InputError {
    let why = why.map_or(String::new(), |e| format!(" ({e})"));
    InputError::one(format!(
        "{flag}: {s:?} is not a duration such as 2s, 500ms or 1m30s, above zero and at most 1 \
         hour{why}"
    ))
}

pub fn run(action: Action, opts: JobOptions) -> i32 {
    crate::progress::json_lines(opts.json);
    let max_fence = match parse_duration("--max-fence", &opts.max_fence) {
        Ok(d) => d,
        Err(e) => return super::report(e.into()),
    };
    super::block_on(act(action, opts, max_fence))
}

async fn act(action: Action, opts: JobOptions, max_fence: Duration) -> Result<()> {
    let catalog = Arc::new(super::open_existing(&opts.catalog).await?);
    let id = super::job_or_unfinished(&catalog, opts.job.as_deref(), action.request_word()).await?;
    let job = catalog
        .job(&id)
        .await?
        .ok_or_else(|| InputError::one(format!("job {id}: not in the catalog")))?;
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
            crate::progress::say(format!("reshard: {msg}"));
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
            crate::progress::say(format!(
                "reshard: job {id}: no move is flipped; routing is the old map already. \
                 Next: reshard cancel {id} (undo) or reshard resume {id} (cut over again)"
            ));
            return Ok(());
        }
        Decision::Refused(msg) => return Err(Stop::Refused(msg).into()),
    }
    let spec = Spec {
        move_id: opts.move_id.clone(),
        verify: opts.verify,
        max_fence,
        created: Vec::new(),
    };
    if action != Action::Sync {
        if let Some(holder) = catalog.live_holder(&id).await? {
            return ask(&catalog, &id, action, &opts, &holder).await;
        }
    }
    let loaded = finish::load(&catalog, &id, opts.lock_timeout, action == Action::Cancel).await?;
    let spec = Spec {
        created: loaded.options.create.clone(),
        ..spec
    };
    let lease = match Lease::acquire(&catalog, &id, None).await {
        Ok(l) => l,
        Err(e) if action != Action::Sync && matches!(e.downcast_ref(), Some(Stop::Refused(_))) => {
            // A worker took the job's lease since it was looked at: ask it instead.
            match catalog.live_holder(&id).await? {
                Some(holder) => return Box::pin(ask(&catalog, &id, action, &opts, &holder)).await,
                None => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    // Its catch-up and reverse sync run under the job's rate cap, like a worker's.
    let throttle =
        crate::throttle::Watching::start(&catalog, &id, crate::throttle::Probe::of(&loaded.ctx))
            .await;
    let result = async {
        let mut online = Online::new(&loaded.ctx, &catalog, &id).await?;
        online.load_logs().await?;
        online.reconcile().await?;
        finish::carry_out(&mut online, action, &spec).await
    }
    .await;
    throttle.end().await;
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

/// Whether the job's state (and its moves' flips) show `action` carried out.
fn carried_out(
    action: Action,
    state: JobState,
    flipped: &[(String, bool)],
    mv: Option<&str>,
) -> bool {
    match action {
        Action::Complete => state == JobState::Completed,
        Action::Cancel => state == JobState::Cancelled,
        // The job is rolled back at the first flip back; the request is done once every move
        // asked for is back.
        Action::Rollback => {
            state == JobState::RolledBack
                && flipped
                    .iter()
                    .all(|(id, f)| !f || mv.is_some_and(|m| m != id))
        }
        Action::Sync => false,
    }
}

/// A live process (`reshard worker` or `reshard sync`) serves the job: the action is recorded
/// as a request for it to carry out, and by default this waits until it has.
async fn ask(
    catalog: &Catalog,
    id: &str,
    action: Action,
    opts: &JobOptions,
    holder: &str,
) -> Result<()> {
    if !opts.verify {
        return Err(Stop::Refused(format!(
            "job {id} is served by {holder}; a complete without verification is not asked of \
             it. Stop that process first, then run this again"
        ))
        .into());
    }
    let asked = finish::Asked {
        action,
        move_id: opts.move_id.clone(),
    };
    let word = asked.to_request();
    catalog
        .record_request(id, &word, &format!("{word}, asked of {holder}"))
        .await?;
    if opts.no_wait {
        crate::progress::say(format!(
            "reshard: job {id}: {word} requested of {holder}; `reshard status {id}` shows when \
             it is done"
        ));
        return Ok(());
    }
    crate::progress::say(format!(
        "reshard: job {id}: {word} requested of {holder}; waiting for it"
    ));
    let started = std::time::Instant::now();
    let mut last_event = String::new();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        // Read before the state: a request is settled only after its outcome is recorded, so a
        // request gone with the state short of the goal was refused, not carried out since.
        let pending = catalog.job_request(id).await?.as_deref() == Some(word.as_str());
        let row = catalog
            .job(id)
            .await?
            .with_context(|| format!("job {id} is gone from the catalog"))?;
        let state = JobState::parse(&row.state);
        let flipped: Vec<(String, bool)> = catalog
            .moves(id)
            .await?
            .into_iter()
            .map(|m| (m.id, m.flipped))
            .collect();
        let mv = opts.move_id.as_deref();
        if state.is_some_and(|s| carried_out(action, s, &flipped, mv)) {
            crate::progress::say(format!(
                "reshard: job {id} is {} ({:.1}s)",
                row.state,
                started.elapsed().as_secs_f64()
            ));
            return Ok(());
        }
        if state == Some(JobState::Failed) {
            return Err(anyhow::anyhow!(
                "job {id}: {word} failed: {}",
                row.last_error.unwrap_or_default()
            ));
        }
        // What the serving process reports, as it happens.
        if let Some(e) = catalog.events(id).await?.last() {
            let line = format!("{} {}", e.kind, e.detail);
            if line != last_event {
                crate::progress::say(format!("reshard: job {id}: {line}"));
                last_event = line;
            }
        }
        if !pending {
            // Settled without reaching the state asked for: refused (the event says why).
            return Err(Stop::Refused(format!(
                "job {id}: {word} was not carried out: {last_event}"
            ))
            .into());
        }
        if catalog.live_holder(id).await?.is_none() {
            // No process serves the job now (the one asked went away, perhaps midway; every
            // action continues where it stopped): this command carries it out itself.
            crate::progress::say(format!(
                "reshard: job {id}: no process serves the job now; carrying out {word} here"
            ));
            catalog.clear_request(id, &word).await?;
            return Box::pin(act(action, opts.clone(), opts_fence(opts)?)).await;
        }
    }
}

fn opts_fence(opts: &JobOptions) -> Result<Duration> {
    Ok(parse_duration("--max-fence", &opts.max_fence)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_turns_a_limit_off_and_still_needs_a_unit() {
        for off in ["0s", "0ms", "0m", " 0.0s "] {
            assert_eq!(
                parse_duration_or_off("--max-lag", off).unwrap(),
                Duration::ZERO
            );
        }
        assert_eq!(
            parse_duration_or_off("--max-lag", "800ms").unwrap(),
            Duration::from_millis(800)
        );
        assert!(parse_duration_or_off("--max-lag", "0").is_err());
        assert!(
            parse_duration("--max-fence", "0s").is_err(),
            "a fence of zero is not off"
        );
    }

    #[test]
    fn a_rollback_is_carried_out_once_every_move_asked_for_is_back() {
        let moves = |f: [bool; 2]| vec![("m1".to_string(), f[0]), ("m2".to_string(), f[1])];
        let rb = JobState::RolledBack;
        // Rolled back at the first flip back, with m2 still flipped: not yet.
        assert!(!carried_out(
            Action::Rollback,
            rb,
            &moves([false, true]),
            None
        ));
        assert!(carried_out(
            Action::Rollback,
            rb,
            &moves([false, false]),
            None
        ));
        assert!(carried_out(
            Action::Rollback,
            rb,
            &moves([false, true]),
            Some("m1")
        ));
        assert!(!carried_out(
            Action::Rollback,
            rb,
            &moves([true, false]),
            Some("m1")
        ));
        assert!(!carried_out(
            Action::Rollback,
            JobState::DualWrite,
            &moves([false, false]),
            None
        ));
        assert!(carried_out(
            Action::Complete,
            JobState::Completed,
            &[],
            None
        ));
        assert!(!carried_out(
            Action::Complete,
            JobState::Completing,
            &[],
            None
        ));
        assert!(carried_out(Action::Cancel, JobState::Cancelled, &[], None));
    }

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
            parse_duration("f", "2m").unwrap(),
            Duration::from_millis(120_000)
        );
        // regression: a bare number meant milliseconds.
        let e = parse_duration("--max-fence", "2").unwrap_err().to_string();
        assert!(e.contains("no unit") && e.contains("2s or 2ms"), "{e}");
        assert_eq!(
            parse_duration("f", "1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert!(parse_duration("f", "0s").is_err());
        assert!(parse_duration("f", "61m").is_err());
        assert!(
            parse_duration("f", "1h1s").is_err(),
            "past the 1-hour maximum"
        );
        assert!(parse_duration("f", "abc").is_err());
        assert!(parse_duration("f", "-1s").is_err());
        assert!(parse_duration("f", "2x").is_err());
    }

    #[test]
    fn durations_combine_units_as_humantime_does() {
        let ms = |s: &str| parse_duration("f", s).map(|d| d.as_millis());
        assert_eq!(ms("1m30s"), Ok(90_000));
        assert_eq!(ms("1h"), Ok(3_600_000));
        assert_eq!(ms("1s 500ms"), Ok(1_500));
        // To the millisecond, never down to zero.
        assert_eq!(ms("0.2ms"), Ok(1));
        assert_eq!(ms("1.0004s"), Ok(1_000));
        let e = parse_duration("--max-fence", "2x").unwrap_err().to_string();
        assert!(e.starts_with("--max-fence: \"2x\""), "{e}");
        assert!(
            parse_duration_or_off("--max-lag", "0m0s")
                .unwrap()
                .is_zero(),
            "zero in any units turns the limit off"
        );
        assert!(parse_duration_or_off("--max-lag", "61m").is_err());
    }
}
