//! Running a job: the lease and its heartbeat, tables to create, moves copied in parallel, and
//! the job's final state. Used by both `apply` (new job) and `resume`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::capture::Online;
use crate::catalog::{Catalog, DEFAULT_CATALOG};
use crate::commands::ProgressMode;
use crate::copy::{CopyJob, Outcome};
use crate::error::Stop;
use crate::ident::Dialect;
use crate::job::JobState;
use crate::lease::Lease;
use crate::preflight::{Context, Side};
use crate::progress::{MoveInfo, Progress};
use crate::retry::retry;
use crate::shard_url::redact;
use crate::signals::StopFlag;
use crate::switch_gate::SwitchGate;

/// What a job was started with; stored in the catalog so that `resume` continues the same way.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobOptions {
    pub batch_size: usize,
    pub parallel: usize,
    /// Destination tables that did not exist and are created by the job, as (shard, table).
    /// Their secondary indexes are built after the copy.
    #[serde(default)]
    pub create: Vec<(String, String)>,
    /// The longest a cutover may keep a move's keys fenced (`--max-fence`).
    #[serde(default = "default_max_fence_ms")]
    pub max_fence_ms: u64,
    /// Run `complete` once every move has flipped (`apply --complete`).
    #[serde(default)]
    pub complete: bool,
    /// `apply --lock-timeout`: what later commands on the job use unless given their own.
    /// Absent for jobs started before it was recorded.
    #[serde(default)]
    pub lock_timeout_ms: Option<u64>,
    /// `apply --switch manual`: copy and keep catching up, but flip only once `reshard switch`
    /// asks (the request on the job's row).
    #[serde(default)]
    pub switch_manual: bool,
    /// `--max-rows-per-sec`: the rate cap of the job's copy, catch-up and reverse sync
    /// (src/throttle.rs); `reshard throttle` changes it while the job runs.
    #[serde(default)]
    pub max_rows_per_sec: Option<u64>,
    /// `--max-load`: paced work waits while a shard has more active sessions than this.
    #[serde(default)]
    pub max_load: Option<u64>,
    /// `--max-lag` in milliseconds (0: off; absent: the default 5 s).
    #[serde(default)]
    pub max_lag_ms: Option<u64>,
    /// `--batch-time` in milliseconds: copy batches adapt toward it (0 or absent: fixed).
    #[serde(default)]
    pub batch_time_ms: Option<u64>,
    /// `--read-from replica`: the copy reads from replicas of the sources.
    #[serde(default)]
    pub read_from_replica: bool,
}

fn default_max_fence_ms() -> u64 {
    2000
}

impl JobOptions {
    pub fn max_fence(&self) -> Duration {
        Duration::from_millis(self.max_fence_ms.max(1))
    }

    /// Sets the process's lock timeout for a command acting on this job: `given` (its own
    /// `--lock-timeout`), else the one the job was started with, else the default.
    pub fn use_lock_timeout(&self, job: &str, given: Option<Duration>) -> Duration {
        let stored = self
            .lock_timeout_ms
            .map(|ms| Duration::from_millis(ms.max(1)));
        let d = given.or(stored).unwrap_or(crate::lockwait::DEFAULT_TIMEOUT);
        crate::lockwait::set_timeout(d);
        if given.is_none() && stored.is_some() {
            crate::progress::say(format!(
                "reshard: job {job}: lock timeout {} ms, as the job was started with",
                d.as_millis()
            ));
        }
        d
    }
}

pub struct Run<'a> {
    pub catalog: Arc<Catalog>,
    pub catalog_url: &'a str,
    pub job: &'a str,
    pub options: JobOptions,
    pub progress: ProgressMode,
    pub stop: StopFlag,
    /// Which moves may flip: all, unless the job switches manually; then those `reshard
    /// switch` has let flip (see [`Run::switch_gate`]).
    pub switch: Arc<SwitchGate>,
    /// A `reshard worker`'s run: stopped by a signal or a lost lease, it leaves the job
    /// running for another worker to continue, instead of interrupted.
    pub handoff: bool,
}

/// The command that resumes a job, with the catalog flag when it is not the default.
pub fn resume_command(job: &str, catalog_url: &str) -> String {
    if catalog_url == DEFAULT_CATALOG {
        format!("reshard resume {job}")
    } else {
        format!("reshard resume {job} --catalog '{}'", redact(catalog_url))
    }
}

/// How far a run takes the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Tables created, capture installed and one copy task per unfinished move added, for
    /// `reshard worker`s to copy in parallel (src/worker).
    Setup,
    /// The job's target: dual write, or completed with `--complete`.
    Target,
}

impl Run<'_> {
    /// Runs the job to its target, or stops it as `interrupted` (Stop::Interrupted, exit 130)
    /// or `failed` (an error, exit 1). Takes the job's lease and renews it.
    pub async fn execute(self, ctx: &mut Context) -> Result<()> {
        self.execute_until(ctx, Until::Target).await
    }

    pub async fn execute_until(self, ctx: &mut Context, until: Until) -> Result<()> {
        // Before the lease: a pause asked from here on is one this run obeys. A switch request
        // stays: it was asked of whichever run carries the job to its flips.
        self.catalog
            .clear_request(self.job, crate::catalog::PAUSE)
            .await?;
        let lease = Lease::acquire(&self.catalog, self.job, Some(self.stop.clone())).await?;
        let paused = Arc::new(AtomicBool::new(false));
        let watch = tokio::spawn(watch_requests(
            self.catalog.clone(),
            self.job.to_string(),
            self.stop.clone(),
            paused.clone(),
            self.switch.clone(),
        ));
        let throttle = crate::throttle::Watching::start(
            &self.catalog,
            self.job,
            crate::throttle::Probe::of(ctx),
        )
        .await;
        let result = self.execute_leased(ctx, until).await;
        watch.abort();
        throttle.end().await;
        let ended = match result {
            Ok(Some(JobState::Running)) if until == Until::Setup => Ok(()),
            result => self.finish(result, paused.load(Ordering::Acquire)).await,
        };
        lease.release().await;
        ended
    }

    async fn execute_leased(&self, ctx: &mut Context, until: Until) -> Result<Option<JobState>> {
        let job = self.job;
        let cat = &self.catalog;
        let current = cat
            .job(job)
            .await?
            .with_context(|| format!("job {job} not found"))?;
        if JobState::parse(&current.state) != Some(JobState::Running) {
            cat.set_job_state(job, JobState::Running, None).await?;
        }
        // Tables to create: idempotent (re-described first), so a resume after a crash here
        // simply continues.
        for (shard, table) in &self.options.create {
            let dst = ctx
                .shard(Side::To, shard)
                .with_context(|| format!("shard {shard} is not connected"))?
                .clone();
            let existing = crate::retry::describe(dst.as_ref(), table).await?;
            if existing.is_none() {
                let src_schema = ctx
                    .plan
                    .moves
                    .iter()
                    .filter(|m| &m.destination == shard)
                    .find_map(|m| ctx.schema(Side::From, &m.source, table))
                    .cloned()
                    .with_context(|| format!("no source definition for table {table}"))?;
                dst.create_table(&src_schema)
                    .await
                    .with_context(|| format!("shard {shard}: creating table {table}"))?;
                crate::progress::say(format!("reshard: created table {table} at {shard}"));
            }
            if let Some(s) = crate::retry::describe(dst.as_ref(), table).await? {
                ctx.set_schema(Side::To, shard, table, s);
            }
        }
        let ctx: &Context = ctx;
        // Capture before the copy: every write from here on is either seen by the copy or
        // logged (or both), and replaying it converges.
        let mut online = Online::new(ctx, cat, job).await?;
        online.install().await?;
        online.reconcile().await?;
        let rows = cat.moves(job).await?;
        if until == Until::Setup {
            let left: Vec<String> = rows
                .iter()
                .filter(|r| {
                    matches!(
                        crate::job::MoveState::parse(&r.state),
                        Some(crate::job::MoveState::Pending | crate::job::MoveState::Copying)
                    )
                })
                .map(|r| r.id.clone())
                .collect();
            cat.add_copy_tasks(job, &left).await?;
            return Ok(Some(JobState::Running));
        }
        let progress = Progress::new(
            self.progress,
            job,
            rows.iter()
                .map(|r| MoveInfo {
                    id: r.id.clone(),
                    source: r.source.clone(),
                    destination: r.destination.clone(),
                    state: r.state.clone(),
                    rows_total: r.rows_total,
                    rows_copied: r.rows_copied,
                })
                .collect(),
        );
        let sem = tokio::sync::Semaphore::new(self.options.parallel.max(1));
        // One failed move stops the others after their in-flight batch: the job is then failed
        // and resumable as a whole, which is simpler to reason about than a half-running job.
        let abort = StopFlag::default();
        let either = StopFlag::default();
        let copier = CopyJob {
            ctx,
            catalog: cat,
            job,
            batch_size: self.options.batch_size,
            progress: &progress,
            stop: &either,
            read_from_replica: self.options.read_from_replica,
        };
        let watcher = {
            let (stop, abort, either) = (self.stop.clone(), abort.clone(), either.clone());
            tokio::spawn(async move {
                while !stop.requested() && !abort.requested() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                either.request();
            })
        };
        let tasks = ctx.plan.moves.iter().map(|m| {
            let (sem, copier, abort) = (&sem, &copier, &abort);
            async move {
                let _permit = sem.acquire().await;
                if copier.stop.requested() {
                    return Ok(Outcome::Stopped);
                }
                let r = copier.run_move(m).await;
                if let Err(e) = &r {
                    abort.request();
                    let msg = format!("{e:#}");
                    if let Err(e2) = retry("catalog: recording an error", || {
                        cat.record_move_error(job, &m.id, &msg)
                    })
                    .await
                    {
                        crate::progress::say(format!("reshard: {e2:#}"));
                    }
                }
                r.with_context(|| format!("move {} ({} -> {})", m.id, m.source, m.destination))
            }
        });
        // A second signal abandons the batches in flight, however long their statements wait:
        // each batch writes in one transaction and records its cursor after it, so an abandoned
        // one is simply copied again.
        let results =
            crate::signals::or_hard_stop(async { Ok(futures_join_all(tasks).await) }).await;
        watcher.abort();
        progress.finish();
        let results = results?;
        let mut stopped = false;
        for r in results {
            match r {
                Ok(Outcome::Copied) => {}
                Ok(Outcome::Stopped) => stopped = true,
                Err(e) => return Err(e),
            }
        }
        if stopped {
            return Ok(None);
        }
        for (shard, table) in &self.options.create {
            if let (Some(dst), Some(schema)) = (
                ctx.shard(Side::To, shard),
                ctx.schema(Side::To, shard, table),
            ) {
                // The destination's own definition has no indexes yet; build the source's.
                let want = ctx
                    .plan
                    .moves
                    .iter()
                    .filter(|m| &m.destination == shard)
                    .find_map(|m| ctx.schema(Side::From, &m.source, table))
                    .cloned()
                    .unwrap_or_else(|| schema.clone());
                dst.create_indexes(&want)
                    .await
                    .with_context(|| format!("shard {shard}: creating indexes of {table}"))?;
            }
        }
        // A freshly filled destination has no statistics until autovacuum gets to it, and
        // PostgreSQL then plans the verification's key-range reads as a bitmap scan plus a sort
        // (4x slower). SQLite is left alone: ANALYZE there creates sqlite_stat1, and cancel
        // must leave a shard as it was.
        let mut analyzed = std::collections::BTreeSet::new();
        for m in &ctx.plan.moves {
            let Some(dst) = ctx.shard(Side::To, &m.destination) else {
                continue;
            };
            let verb = match dst.dialect() {
                Dialect::Postgres => "ANALYZE",
                Dialect::Mysql => "ANALYZE TABLE",
                Dialect::Sqlite => continue,
            };
            for t in &ctx.tables {
                if analyzed.insert((m.destination.clone(), t.name.clone())) {
                    let sql = format!("{verb} {}", dst.dialect().quote(&t.name));
                    // Bounded like the other DDL (a lock held at the destination).
                    let what = format!("shard {}: analyzing {}", m.destination, t.name);
                    let ddl = std::slice::from_ref(&sql);
                    crate::lockwait::bounded(&what, || dst.run_ddl(ddl))
                        .await
                        .context(what.clone())?;
                }
            }
        }
        // Catch-up only now: no copy batch still in flight can overwrite a caught-up row.
        if !online
            .run_forward(
                self.options.max_fence(),
                self.options.parallel,
                &self.stop,
                &self.switch,
            )
            .await?
        {
            return Ok(None);
        }
        if self.options.complete {
            // Dual write is a real state even for a moment: a crash inside complete must find
            // the job completable, not running.
            retry("catalog: recording dual write", || {
                self.catalog.set_job_state(job, JobState::DualWrite, None)
            })
            .await?;
            let v = online.complete(true).await?;
            crate::progress::say(format!(
                "reshard: job {job} completed; routing version {v} is the new map"
            ));
            return Ok(Some(JobState::Completed));
        }
        Ok(Some(JobState::DualWrite))
    }

    async fn finish(&self, result: Result<Option<JobState>>, paused: bool) -> Result<()> {
        let (job, cat) = (self.job, &self.catalog);
        let result = match result {
            Ok(None) if paused && crate::failpoint::triggered("pause_fails") => Err(
                anyhow::anyhow!("failpoint pause_fails: the run failed where it would pause"),
            ),
            r => r,
        };
        // A second signal abandoned a wait: interrupted, as after the first.
        let result = result.or_else(|e| {
            if crate::lockwait::is_aborted(&e) {
                Ok(None)
            } else {
                Err(e)
            }
        });
        match result {
            Ok(Some(JobState::Completed)) => Ok(()),
            Ok(Some(state)) => {
                retry("catalog: finishing the job", || {
                    cat.set_job_state(job, state, None)
                })
                .await?;
                // Carried out: a later re-cutover (after a rollback) waits for its own switch.
                cat.clear_switch(job).await?;
                // Broken by hand so that it fits a 100-column terminal.
                crate::progress::say(format!(
                    "reshard: job {job}: every move has flipped; the new owners are \
                     authoritative (dual write).\n  Their writes flow back to the old owners \
                     while a `reshard worker` (or `reshard sync {job}`) runs;\n  until then they \
                     wait in change logs (`reshard status` shows them, and a rollback applies\n  \
                     them first). Next: reshard complete {job} (or reshard rollback {job})"
                ));
                Ok(())
            }
            Ok(None) if paused => {
                retry("catalog: recording the pause", || {
                    cat.set_job_state(job, JobState::Paused, None)
                })
                .await?;
                crate::progress::say(format!(
                    "reshard: job {job} paused; continue with: {}",
                    resume_command(job, self.catalog_url)
                ));
                Ok(())
            }
            Ok(None) if self.handoff => {
                crate::progress::say(format!(
                    "reshard: job {job}: stopped here; another worker continues it"
                ));
                Ok(())
            }
            Ok(None) => {
                retry("catalog: recording the interruption", || {
                    cat.set_job_state(job, JobState::Interrupted, None)
                })
                .await?;
                Err(Stop::Interrupted {
                    resume: resume_command(job, self.catalog_url),
                }
                .into())
            }
            Err(e) => {
                let msg = format!("{e:#}");
                if let Err(e2) = retry("catalog: recording the failure", || {
                    cat.set_job_state(job, JobState::Failed, Some(&msg))
                })
                .await
                {
                    crate::progress::say(format!("reshard: {e2:#}"));
                }
                Err(e.context(format!(
                    "job {job} failed; fix the cause, then: {}",
                    resume_command(job, self.catalog_url)
                )))
            }
        }
    }
}

/// How often the running job looks for an operator's request: the pause is obeyed within
/// about this, plus the batch in flight.
const REQUEST_POLL: Duration = Duration::from_millis(500);

/// Watches the job's row for requests: on a pause, stops the run at its next safe point (the
/// same stop as a first Ctrl-C) and notes that it was a pause; on a switch, lets moves flip.
async fn watch_requests(
    catalog: Arc<Catalog>,
    job: String,
    stop: StopFlag,
    paused: Arc<AtomicBool>,
    switch: Arc<SwitchGate>,
) {
    loop {
        tokio::time::sleep(REQUEST_POLL).await;
        // A catalog hiccup is retried at the next poll; the run itself does not depend on it.
        if let Ok(Some(asked)) = catalog.job_switch(&job).await {
            let text = asked.text();
            if switch.widen(asked) {
                crate::progress::say(format!(
                    "reshard: job {job}: {text} requested; cutting over"
                ));
            }
        }
        if let Ok(Some(r)) = catalog.job_request(&job).await {
            if r == crate::catalog::PAUSE {
                crate::progress::say(format!(
                    "reshard: job {job}: pause requested; stopping at the next safe point"
                ));
                paused.store(true, Ordering::Release);
                stop.request();
                return;
            }
        }
    }
}

impl Run<'_> {
    /// The gate for a run of a job with `options`: open unless it switches manually and has no
    /// switch request yet.
    pub async fn switch_gate(
        catalog: &Catalog,
        job: &str,
        options: &JobOptions,
    ) -> Result<Arc<SwitchGate>> {
        let switch = catalog.job_switch(job).await?;
        Ok(Arc::new(SwitchGate::new(options.switch_manual, switch)))
    }
}

/// Polls all futures concurrently on this task (they borrow locals, so they are not spawned).
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..futs.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}
