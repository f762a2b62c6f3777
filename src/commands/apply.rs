//! `reshard apply` (with `--dry-run`) and `reshard resume`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use serde_json::json;

use super::{Format, ProgressMode};
use crate::catalog::{Access, Catalog, NewJob};
use crate::error::{InputError, Stop};
use crate::execute::{JobOptions, Run};
use crate::job::{new_job_id, JobState};
use crate::plan::Plan;
use crate::preflight::{self, Checks, Context, Report};

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub plan: PathBuf,
    pub catalog: String,
    pub dry_run: bool,
    pub format: Format,
    pub batch_size: usize,
    pub parallel: usize,
    pub progress: ProgressMode,
    pub yes: bool,
    pub create_tables: bool,
    pub allow_existing: bool,
    /// `--max-fence` as given (validated before any I/O).
    pub max_fence: String,
    pub complete: bool,
    /// `--lock-timeout` (already set process-wide), recorded with the job.
    pub lock_timeout: std::time::Duration,
    /// `--switch manual`: flip only after `reshard switch`.
    pub switch_manual: bool,
    /// `--no-wait`: create the job and leave it to `reshard worker`s.
    pub no_wait: bool,
    /// `--max-rows-per-sec` (0: none).
    pub max_rows_per_sec: Option<u64>,
    /// `--max-load` (0: none).
    pub max_load: Option<u64>,
    /// `--max-lag` as given (validated before any I/O; 0s: off).
    pub max_lag: String,
    /// `--batch-time` as given (validated before any I/O; 0s: fixed batches).
    pub batch_time: String,
    /// `--read-from replica`.
    pub read_from_replica: bool,
}

#[derive(Debug, Clone)]
pub struct ResumeOptions {
    pub job: Option<String>,
    pub catalog: String,
    pub progress: ProgressMode,
    pub parallel: Option<usize>,
    /// `--lock-timeout` when given; otherwise the job's own.
    pub lock_timeout: Option<std::time::Duration>,
    /// `--no-wait`: mark the job running and leave it to `reshard worker`s.
    pub no_wait: bool,
}

fn validate(batch_size: usize, parallel: Option<usize>) -> Result<(), InputError> {
    let mut p = Vec::new();
    if batch_size == 0 {
        p.push("--batch-size: must be at least 1".to_string());
    }
    if parallel == Some(0) {
        p.push("--parallel: must be at least 1".to_string());
    }
    if p.is_empty() {
        Ok(())
    } else {
        Err(InputError::many(p))
    }
}

pub fn run(opts: ApplyOptions) -> i32 {
    crate::progress::json_lines(opts.progress == ProgressMode::Json && !opts.dry_run);
    // All input is checked before any I/O.
    let plan = match Plan::load(&opts.plan) {
        Ok(p) => p,
        Err(e) => return super::report(e.into()),
    };
    // A hand-edited plan (moves, segments, fractions) still matches its fingerprint; refuse
    // anything that differs from what its maps give, before any I/O.
    if let Err(e) = crate::plan_check::check_matches_maps(&plan, &opts.plan.display().to_string()) {
        return super::report(e.into());
    }
    if let Err(e) = validate(opts.batch_size, Some(opts.parallel)) {
        return super::report(e.into());
    }
    if let Err(e) = super::online::parse_duration_or_off("--batch-time", &opts.batch_time) {
        return super::report(e.into());
    }
    if let Err(e) = super::online::parse_duration_or_off("--max-lag", &opts.max_lag) {
        return super::report(e.into());
    }
    if let Err(e) = super::online::parse_duration("--max-fence", &opts.max_fence) {
        return super::report(e.into());
    }
    if opts.read_from_replica {
        let p = crate::replica_read::check_plan(&plan, &opts.plan.display().to_string());
        if !p.is_empty() {
            return super::report(InputError::many(p).into());
        }
    }
    if !opts.dry_run && !opts.yes && !std::io::stdin().is_terminal() {
        return super::report(
            Stop::Refused(
                "apply writes to the shards and asks for confirmation, but standard input is \
                 not a terminal; pass --yes to proceed without asking"
                    .into(),
            )
            .into(),
        );
    }
    if opts.dry_run {
        match super::block_on_value(dry_run(&plan, &opts)) {
            Ok(true) => 0,
            // What `apply` itself exits on the same problems: refused, nothing written.
            Ok(false) => 2,
            Err(e) => super::report(e),
        }
    } else {
        super::block_on(async move { start_job(plan, &opts).await.map(|_| ()) })
    }
}

/// Connects, describes and checks; the report holds every problem found.
async fn preflight_all(plan: &Plan, checks: &Checks) -> (Context, Report) {
    let (mut ctx, mut problems) = preflight::connect(plan).await;
    problems.extend(preflight::describe_all(&mut ctx).await);
    let mut rep = if problems.is_empty() {
        preflight::check(&ctx, checks).await
    } else {
        Report::default()
    };
    problems.append(&mut rep.problems);
    rep.problems = problems;
    (ctx, rep)
}

async fn dry_run(plan: &Plan, opts: &ApplyOptions) -> Result<bool> {
    let mut problems = Vec::new();
    let mut unfinished = None;
    let mut stale = false;
    let catalog = Catalog::open(&opts.catalog, Access::ReadOnly).await?;
    if let Some(cat) = &catalog {
        if let Err(e) = Catalog::check_not_stale(cat.routing().await?.as_ref(), &plan.from) {
            problems.push(format!("{e:#}"));
            stale = true;
        }
        unfinished = cat.unfinished_job().await?;
        problems.extend(unfinished.clone());
        cat.close().await;
    }
    let checks = Checks {
        create_tables: opts.create_tables,
        // Rows at a destination while a job is unfinished are most likely that job's, and the
        // refusal above already names it: the existing-rows problem would say otherwise. So
        // are the rows of a stale plan's moves (an earlier job moved them), and its remedy is
        // a new plan, not --allow-existing.
        allow_existing: opts.allow_existing || unfinished.is_some() || stale,
    };
    let (ctx, rep) = preflight_all(plan, &checks).await;
    problems.extend(rep.problems.iter().cloned());
    let rate = if problems.is_empty() {
        preflight::measure_read(&ctx, opts.batch_size).await?
    } else {
        None
    };
    let rows: u64 = rep.counts.iter().map(|c| c.rows).sum();
    let bytes: u64 = rep.counts.iter().map(|c| c.bytes).sum();
    let scanned: u64 = rep.counts.iter().map(|c| c.rows_scanned).sum();
    // Reading is measured; writing is assumed to cost about as much again. A rough figure, for
    // planning a maintenance window, not a promise.
    let est = rate.map(|r| ((scanned + rows) as f64 / r).ceil() as u64);
    let ok = problems.is_empty();
    match opts.format {
        Format::Json => {
            let v = json!({
                "would_start": ok,
                "problems": problems,
                "moves": rep.counts,
                "rows": rows,
                "bytes": bytes,
                "create_tables": rep.missing.iter()
                    .map(|(s, t)| json!({"shard": s, "table": t})).collect::<Vec<_>>(),
                "estimated_seconds": est,
                "read_rows_per_second": rate.map(|r| r.round()),
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Text => {
            println!("dry run of plan {} (nothing was written)", plan.fingerprint);
            if !rep.counts.is_empty() {
                println!(
                    "{:<6} {:<16} {:<16} {:>12} {:>14}",
                    "MOVE", "SOURCE", "DESTINATION", "ROWS", "BYTES"
                );
                for c in &rep.counts {
                    println!(
                        "{:<6} {:<16} {:<16} {:>12} {:>14}",
                        c.id, c.source, c.destination, c.rows, c.bytes
                    );
                }
                println!("{:<40} {rows:>12} {bytes:>14}", "total");
            }
            for (s, t) in &rep.missing {
                println!("would create table {t} at {s}");
            }
            match est {
                Some(s) => println!(
                    "estimated duration: about {s} s (reads measured at {:.0} rows/s)",
                    rate.unwrap_or(0.0)
                ),
                None if ok => println!("estimated duration: nothing to read"),
                None => {}
            }
            if ok {
                println!("apply would start");
            } else {
                println!("apply would NOT start:");
                for p in &problems {
                    println!("  - {p}");
                }
            }
        }
    }
    Ok(ok)
}

fn confirm(plan: &Plan, rep: &Report) -> Result<bool> {
    let rows: u64 = rep.counts.iter().map(|c| c.rows).sum();
    eprint!(
        "Copy {rows} rows in {} moves ({})? [y/N] ",
        plan.moves.len(),
        plan.moves
            .iter()
            .map(|m| format!("{} {}->{}", m.id, m.source, m.destination))
            .collect::<Vec<_>>()
            .join(", ")
    );
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// Creates a job for `plan` and runs it (apply without `--dry-run`; options already validated);
/// returns the job's id. `reshard demo` runs its job through this too.
pub async fn start_job(plan: Plan, opts: &ApplyOptions) -> Result<String> {
    // Refuse a stale plan before touching anything: read-only first.
    if let Some(cat) = Catalog::open(&opts.catalog, Access::ReadOnly).await? {
        Catalog::check_not_stale(cat.routing().await?.as_ref(), &plan.from)?;
        if let Some(why) = cat.unfinished_job().await? {
            return Err(Stop::Refused(why).into());
        }
        cat.close().await;
    }
    let checks = Checks {
        create_tables: opts.create_tables,
        allow_existing: opts.allow_existing,
    };
    let (mut ctx, rep) = preflight_all(&plan, &checks).await;
    if !rep.problems.is_empty() {
        return Err(Stop::Refused(format!(
            "preflight found {} problem(s); nothing was written:\n  - {}",
            rep.problems.len(),
            rep.problems.join("\n  - ")
        ))
        .into());
    }
    if !opts.yes && !confirm(&plan, &rep)? {
        return Err(Stop::Refused("not confirmed; nothing was written".into()).into());
    }
    // What `verify --audit` expects after completion, counted before the job exists and
    // recorded with it: a job whose counts a crash lost let an audit pass a cluster that had
    // lost a row. Retried like every read.
    let row_counts = crate::retry::retry("counting rows for the audit", || {
        crate::verify::audit::count_rows(&plan, &rep.shard_rows)
    })
    .await?;
    let stop = crate::signals::install().context("installing signal handlers")?;
    let catalog = Arc::new(Catalog::open_rw(&opts.catalog).await?);
    let job = new_job_id();
    let options = JobOptions {
        batch_size: opts.batch_size,
        parallel: opts.parallel,
        create: rep.missing.clone(),
        max_fence_ms: super::online::parse_duration("--max-fence", &opts.max_fence)?.as_millis()
            as u64,
        complete: opts.complete,
        lock_timeout_ms: Some(opts.lock_timeout.as_millis() as u64),
        switch_manual: opts.switch_manual,
        max_rows_per_sec: opts.max_rows_per_sec.filter(|n| *n > 0),
        max_load: opts.max_load.filter(|n| *n > 0),
        max_lag_ms: Some(
            super::online::parse_duration_or_off("--max-lag", &opts.max_lag)?.as_millis() as u64,
        ),
        batch_time_ms: Some(
            super::online::parse_duration_or_off("--batch-time", &opts.batch_time)?.as_millis()
                as u64,
        )
        .filter(|ms| *ms > 0),
        read_from_replica: opts.read_from_replica,
    };
    let tables: Vec<String> = ctx.tables.iter().map(|t| t.name.clone()).collect();
    catalog
        .create_job(NewJob {
            id: &job,
            plan_fingerprint: &plan.fingerprint,
            plan_json: &plan.to_json(),
            options_json: &serde_json::to_string(&options)?,
            from: &plan.from,
            tables: &tables,
            moves: rep
                .counts
                .iter()
                .map(|c| {
                    (
                        c.id.clone(),
                        c.source.clone(),
                        c.destination.clone(),
                        c.rows,
                        c.bytes,
                    )
                })
                .collect(),
            row_counts: &row_counts,
        })
        .await?;
    println!("job {job}");
    if opts.no_wait {
        crate::progress::say(format!(
            "reshard: created job {job} ({} moves); `reshard worker --catalog ...` processes \
             carry it out, `reshard status {job}` follows them",
            plan.moves.len()
        ));
        catalog.close().await;
        return Ok(job);
    }
    crate::progress::say(format!(
        "reshard: started job {job} ({} moves)",
        plan.moves.len()
    ));
    let switch = Run::switch_gate(&catalog, &job, &options).await?;
    let run = Run {
        catalog: catalog.clone(),
        catalog_url: &opts.catalog,
        job: &job,
        options,
        progress: opts.progress,
        stop,
        switch,
        handoff: false,
    };
    let r = run.execute(&mut ctx).await;
    catalog.close().await;
    r.map(|()| job)
}

pub fn resume(opts: ResumeOptions) -> i32 {
    crate::progress::json_lines(opts.progress == ProgressMode::Json);
    if let Err(e) = validate(1, opts.parallel) {
        return super::report(e.into());
    }
    super::block_on(resume_job(opts))
}

async fn resume_job(opts: ResumeOptions) -> Result<()> {
    let Some(ro) = Catalog::open(&opts.catalog, Access::ReadOnly).await? else {
        return Err(InputError::one(format!(
            "--catalog: {} holds no jobs (it does not exist)",
            crate::shard_url::redact(&opts.catalog)
        ))
        .into());
    };
    ro.close().await;
    let catalog = Arc::new(Catalog::open_rw(&opts.catalog).await?);
    let mut unfinished = Vec::new();
    if opts.job.is_none() {
        for j in catalog.jobs().await? {
            let s = JobState::parse(&j.state);
            if s.is_some_and(|s| !s.finished() && !s.resumable()) {
                let f =
                    crate::decide::Flips::of(catalog.moves(&j.id).await?.iter().map(|m| m.flipped));
                unfinished.push((j.id.clone(), s, f.any, f.all));
            }
        }
    }
    let job = match &opts.job {
        Some(j) => catalog
            .job(j)
            .await?
            .ok_or_else(|| InputError::one(format!("job {j}: not in the catalog")))?,
        None => catalog
            .jobs()
            .await?
            .into_iter()
            .find(|j| JobState::parse(&j.state).is_some_and(|s| s.resumable()))
            .ok_or_else(|| {
                // Say what the unfinished job needs instead of claiming that all have finished.
                let waiting = unfinished.iter().find_map(|(id, state, any, all)| {
                    state.map(|s| {
                        format!("job {id} is {s}; next: {}", s.finish_hint(id, *any, *all))
                    })
                });
                InputError::one(
                    waiting
                        .unwrap_or_else(|| "no job to resume: every job has finished".to_string()),
                )
            })?,
    };
    let state = JobState::parse(&job.state);
    if state == Some(JobState::Copied) {
        crate::progress::say(format!(
            "reshard: job {} has already copied every move",
            job.id
        ));
        return Ok(());
    }
    if state == Some(JobState::DualWrite) {
        crate::progress::say(format!(
            "reshard: job {0} has flipped every move and is in dual write; next: \
             reshard complete {0}, reshard rollback {0}, or reshard sync {0}",
            job.id
        ));
        return Ok(());
    }
    if !state.is_some_and(|s| s.resumable()) {
        return Err(Stop::Refused(format!(
            "job {} is {} and cannot be resumed",
            job.id, job.state
        ))
        .into());
    }
    if opts.no_wait {
        // A worker re-checks the stored plan before it touches a shard.
        catalog
            .clear_request(&job.id, crate::catalog::PAUSE)
            .await?;
        catalog
            .set_job_state(&job.id, JobState::Running, None)
            .await?;
        crate::progress::say(format!(
            "reshard: job {} is running again; `reshard worker` processes carry it on",
            job.id
        ));
        catalog.close().await;
        return Ok(());
    }
    let plan = Plan::parse(&job.plan_json, &format!("job {} plan", job.id))?;
    // Authenticated as apply authenticated the file: a plan edited in the catalog is refused
    // before anything is written.
    crate::plan_check::check_stored(&plan, &job.id)?;
    let mut options: JobOptions = serde_json::from_str(&job.options_json)
        .with_context(|| format!("job {}: unreadable options in the catalog", job.id))?;
    if let Some(p) = opts.parallel {
        options.parallel = p;
    }
    options.use_lock_timeout(&job.id, opts.lock_timeout);
    let (mut ctx, mut problems) = preflight::connect(&plan).await;
    problems.extend(preflight::describe_all(&mut ctx).await);
    if !problems.is_empty() {
        return Err(anyhow::anyhow!(
            "job {} cannot continue yet:\n  - {}",
            job.id,
            problems.join("\n  - ")
        ));
    }
    let stop = crate::signals::install().context("installing signal handlers")?;
    crate::progress::say(format!("reshard: resuming job {}", job.id));
    let switch = Run::switch_gate(&catalog, &job.id, &options).await?;
    let run = Run {
        catalog: catalog.clone(),
        catalog_url: &opts.catalog,
        job: &job.id,
        options,
        progress: opts.progress,
        stop,
        switch,
        handoff: false,
    };
    let r = run.execute(&mut ctx).await;
    catalog.close().await;
    r
}
