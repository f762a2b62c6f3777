//! `reshard worker`: a long-running process that carries out the unfinished job of a catalog,
//! together with any number of other workers on this machine or others (issue 14).
//!
//! Each round it reads the job from the catalog, decides what to do ([`next`], pure), and does
//! one piece of work:
//! - a copy task (one per move), claimed under its own lease, so that workers copy different
//!   moves at once and a dead worker's move is continued from its recorded cursors;
//! - under the job's lease, the work one process must do alone: setup, catch-up and cutovers,
//!   reverse sync in dual write, and the operator's complete, rollback or cancel.
//!
//! A worker that stops (Ctrl-C, SIGTERM) finishes its batch, gives its task back and leaves the
//! job running for the others. A worker killed outright stops renewing: its leases expire after
//! `--lease-ttl` (at once for a dead process on the same host), and another worker continues.
//! A SQLite catalog serves the workers of one machine; workers on several machines share a
//! PostgreSQL catalog.

pub mod metrics;
pub mod next;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::capture::Online;
use crate::catalog::{Catalog, COPY};
use crate::commands::ProgressMode;
use crate::copy::{CopyJob, Outcome};
use crate::decide::{decide, Decision, Flips, Request};
use crate::error::Stop;
use crate::execute::Run;
use crate::finish::{self, Action, Asked, Spec};
use crate::job::{JobState, MoveState};
use crate::lease::{Lease, TaskLease};
use crate::progress::{MoveInfo, Progress};
use crate::signals::StopFlag;
use next::{View, Work};

/// A copy task that failed this often fails the job (resumable), so that a persistent error
/// (a shard down, a schema change) is shown to the operator instead of retried forever.
pub const MAX_COPY_ATTEMPTS: i64 = 5;

pub struct Worker {
    pub catalog: Arc<Catalog>,
    pub catalog_url: String,
    /// This worker's identity in leases and events (`host:pid:nonce`).
    pub me: String,
    pub stop: StopFlag,
    /// Pause between rounds with nothing to do.
    pub idle: Duration,
    /// Copy tasks this worker runs at once.
    pub parallel: usize,
    /// The job being worked on, loaded once: its plan (as stored) and its shards connected.
    /// Connecting anew for every task would open pools faster than they close.
    pub loaded: tokio::sync::RwLock<Option<Cached>>,
    /// [`crate::backend::closing::mark`] once the catalog is open: the pools a job's shards
    /// open come after it.
    pub pools_mark: usize,
    /// What this worker counts for `--metrics`.
    pub local: Arc<metrics::Local>,
}

pub struct Cached {
    pub job: String,
    pub plan_json: String,
    pub loaded: finish::Loaded,
}

impl Worker {
    /// Rounds until stopped by a signal. Errors of one round are reported and retried at the
    /// next, after a pause: the catalog records where each piece of work stands. Up to
    /// `parallel` copy tasks run at once; the other work runs alone, once no copy is running.
    pub async fn run(self: Arc<Self>) -> Result<()> {
        let mut said = String::new();
        let mut copies: tokio::task::JoinSet<Result<()>> = tokio::task::JoinSet::new();
        while !self.stop.requested() {
            while let Some(done) = copies.try_join_next() {
                if let Err(e) = done.map_err(anyhow::Error::from).and_then(|r| r) {
                    self.local.error("copy");
                    eprintln!("reshard worker: {e:#}");
                }
            }
            let (what, pause) = match self.round(&mut copies).await {
                Ok(Some(why)) => (why, true),
                Ok(None) => (String::new(), false),
                Err(e) if matches!(e.downcast_ref::<Stop>(), Some(Stop::Refused(_))) => {
                    self.local.error("refused");
                    (format!("{e:#}"), true)
                }
                Err(e) => {
                    self.local.error("round");
                    (format!("error: {e:#}"), true)
                }
            };
            if !what.is_empty() && what != said {
                eprintln!("reshard worker: {what}");
                said = what;
            }
            if pause {
                tokio::time::sleep(self.idle).await;
            }
        }
        // Each copy stops after its batch in flight and gives its task back.
        while let Some(done) = copies.join_next().await {
            if let Err(e) = done.map_err(anyhow::Error::from).and_then(|r| r) {
                eprintln!("reshard worker: {e:#}");
            }
        }
        eprintln!("reshard worker {}: stopped", self.me);
        Ok(())
    }

    /// One piece of work started or done; `Some(reason)` when there was none to do.
    async fn round(
        self: &Arc<Self>,
        copies: &mut tokio::task::JoinSet<Result<()>>,
    ) -> Result<Option<String>> {
        let Some(job) = self.catalog.unfinished_job_id().await? else {
            return Ok(Some("no unfinished job; waiting".into()));
        };
        let view = self.view(&job).await?;
        let work = next::next(&view);
        if !copies.is_empty() && !matches!(work, Work::Copy) {
            return Ok(Some(format!("job {job}: copying")));
        }
        match work {
            Work::Idle(why) => return Ok(Some(format!("job {job}: {why}"))),
            Work::Copy if copies.len() >= self.parallel => {
                return Ok(Some(format!("job {job}: copying {} moves", copies.len())));
            }
            Work::Copy => {
                let Some(claim) = self
                    .catalog
                    .claim_task(&job, COPY, &self.me, crate::lease::ttl())
                    .await?
                else {
                    return Ok(Some(format!("job {job}: no copy task free")));
                };
                copies.spawn(self.clone().copy(job, claim));
            }
            Work::Setup => {
                self.setup(&job).await?;
                crate::failpoint::hit("tasks_added");
            }
            Work::Forward => self.forward(&job).await?,
            Work::Serve => self.serve(&job).await?,
            Work::Carry(asked) => self.carry(&job, asked).await?,
            Work::Pause => {
                self.catalog.request_pause(&job).await?;
            }
        }
        Ok(None)
    }

    async fn view(&self, job: &str) -> Result<View> {
        let row = self
            .catalog
            .job(job)
            .await?
            .with_context(|| format!("job {job}: not in the catalog"))?;
        let now = crate::catalog::now_ms();
        let lease_held =
            crate::catalog::live_lease(row.lease_owner.as_deref(), row.lease_expires_ms, now)
                .is_some();
        let request = self.catalog.job_request(job).await?;
        let moves = self.catalog.moves(job).await?;
        let tasks: Vec<_> = self
            .catalog
            .tasks(job)
            .await?
            .into_iter()
            .filter(|t| t.kind == COPY)
            .collect();
        Ok(View {
            state: JobState::parse(&row.state),
            request,
            lease_held,
            moves_to_copy: moves
                .iter()
                .filter(|m| {
                    matches!(
                        MoveState::parse(&m.state),
                        Some(MoveState::Pending | MoveState::Copying)
                    )
                })
                .count(),
            copy_tasks: tasks.len(),
            copy_tasks_open: tasks.iter().filter(|t| !t.done()).count(),
            copy_tasks_held: tasks
                .iter()
                .filter(|t| !t.done() && t.live_holder(now).is_some())
                .count(),
        })
    }

    fn run_for<'a>(&'a self, job: &'a str, options: crate::execute::JobOptions) -> Run<'a> {
        Run {
            catalog: self.catalog.clone(),
            catalog_url: &self.catalog_url,
            job,
            options,
            progress: ProgressMode::Plain,
            stop: self.stop.clone(),
            switch: Arc::new(crate::switch_gate::SwitchGate::open()),
            handoff: true,
        }
    }

    /// Loads and connects the job unless the cache holds it with the same stored plan (when
    /// the job or its plan changed, the old connections are closed and the plan is checked
    /// again).
    async fn ensure_loaded(&self, job: &str) -> Result<()> {
        let row = self
            .catalog
            .job(job)
            .await?
            .with_context(|| format!("job {job}: not in the catalog"))?;
        let fresh = |c: &Option<Cached>| {
            c.as_ref()
                .is_some_and(|c| c.job == job && c.plan_json == row.plan_json)
        };
        if fresh(&*self.loaded.read().await) {
            return Ok(());
        }
        let mut cache = self.loaded.write().await;
        if fresh(&cache) {
            return Ok(());
        }
        *cache = None;
        crate::backend::closing::close_since(self.pools_mark).await;
        let loaded = finish::load(&self.catalog, job, None, false).await?;
        *cache = Some(Cached {
            job: job.to_string(),
            plan_json: row.plan_json,
            loaded,
        });
        Ok(())
    }

    /// The loaded job, for work that runs alone (no copy holds the cache meanwhile).
    async fn load(&self, job: &str) -> Result<tokio::sync::RwLockWriteGuard<'_, Option<Cached>>> {
        self.ensure_loaded(job).await?;
        Ok(self.loaded.write().await)
    }

    async fn setup(&self, job: &str) -> Result<()> {
        let mut cache = self.load(job).await?;
        let Some(c) = cache.as_mut() else {
            return Ok(());
        };
        eprintln!("reshard worker: job {job}: setting up (capture, guards, copy tasks)");
        self.run_for(job, c.loaded.options.clone())
            .execute_until(&mut c.loaded.ctx, crate::execute::Until::Setup)
            .await
    }

    async fn forward(&self, job: &str) -> Result<()> {
        let mut cache = self.load(job).await?;
        let Some(c) = cache.as_mut() else {
            return Ok(());
        };
        eprintln!("reshard worker: job {job}: every move is copied; catching up and cutting over");
        let mut run = self.run_for(job, c.loaded.options.clone());
        run.switch = Run::switch_gate(&self.catalog, job, &c.loaded.options).await?;
        run.execute(&mut c.loaded.ctx).await
    }

    /// Copies the move of a claimed task, renewing its lease, and ends the task.
    async fn copy(self: Arc<Self>, job: String, claim: crate::catalog::Claim) -> Result<()> {
        let (cat, job) = (&self.catalog, job.as_str());
        let mv = claim.move_id.clone().unwrap_or_default();
        match &claim.taken_from {
            Some(w) => eprintln!("reshard worker: job {job}: copying {mv} (taken over from {w})"),
            None => eprintln!("reshard worker: job {job}: copying {mv}"),
        }
        crate::failpoint::hit("task_claimed");
        let stop = StopFlag::default();
        let lease = TaskLease::hold(cat, job, &claim.id, &self.me, stop.clone());
        let watch = tokio::spawn(watch_copy(
            cat.clone(),
            job.to_string(),
            self.stop.clone(),
            stop.clone(),
        ));
        let result = self.copy_move(job, &mv, &stop).await;
        watch.abort();
        if matches!(result, Ok(Outcome::Copied)) {
            crate::failpoint::hit("task_copied");
        }
        match result {
            Ok(Outcome::Copied) => lease.end(true).await,
            Ok(Outcome::Stopped) => lease.end(false).await,
            Err(e) => {
                let msg = format!("{e:#}");
                lease.end(false).await?;
                cat.record_move_error(job, &mv, &msg).await?;
                let attempts = cat
                    .tasks(job)
                    .await?
                    .iter()
                    .find(|t| t.id == claim.id)
                    .map_or(0, |t| t.attempts);
                if attempts >= MAX_COPY_ATTEMPTS {
                    let why = format!("copy of {mv} failed {attempts} times (last: {msg})");
                    cat.set_job_state(job, JobState::Failed, Some(&why)).await?;
                    return Err(e.context(format!(
                        "job {job} failed; fix the cause, then: reshard resume {job}"
                    )));
                }
                Err(e.context(format!("copying {mv}; the task is free for a retry")))
            }
        }
    }

    async fn copy_move(&self, job: &str, mv: &str, stop: &StopFlag) -> Result<Outcome> {
        self.ensure_loaded(job).await?;
        let cache = self.loaded.read().await;
        let loaded = match cache.as_ref() {
            Some(c) if c.job == job => &c.loaded,
            _ => return Ok(Outcome::Stopped),
        };
        let m = loaded
            .plan
            .moves
            .iter()
            .find(|m| m.id == mv)
            .with_context(|| format!("job {job}'s plan has no move {mv}"))?;
        let row = self
            .catalog
            .moves(job)
            .await?
            .into_iter()
            .find(|r| r.id == mv)
            .with_context(|| format!("move {mv} is not in the catalog"))?;
        let progress = Progress::new(
            ProgressMode::Plain,
            job,
            vec![MoveInfo {
                id: row.id.clone(),
                source: row.source.clone(),
                destination: row.destination.clone(),
                state: row.state.clone(),
                rows_total: row.rows_total,
                rows_copied: row.rows_copied,
            }],
        );
        let copier = CopyJob {
            ctx: &loaded.ctx,
            catalog: &self.catalog,
            job,
            batch_size: loaded.options.batch_size,
            progress: &progress,
            stop,
            read_from_replica: loaded.options.read_from_replica,
        };
        let throttle = crate::throttle::Watching::start(
            &self.catalog,
            job,
            crate::throttle::Probe::of(&loaded.ctx),
        )
        .await;
        let r = copier.run_move(m).await;
        throttle.end().await;
        progress.finish();
        r
    }

    /// Reverse sync in dual write under the job's lease, then the request that ends it.
    async fn serve(&self, job: &str) -> Result<()> {
        let cache = self.load(job).await?;
        let Some(c) = cache.as_ref() else {
            return Ok(());
        };
        let loaded = &c.loaded;
        let stop = self.or_stop();
        let lease = Lease::acquire(&self.catalog, job, Some(stop.clone())).await?;
        eprintln!("reshard worker: job {job}: in dual write; reverse sync running");
        let throttle = crate::throttle::Watching::start(
            &self.catalog,
            job,
            crate::throttle::Probe::of(&loaded.ctx),
        )
        .await;
        let result = async {
            let mut online = Online::new(&loaded.ctx, &self.catalog, job).await?;
            online.load_logs().await?;
            online.reconcile().await?;
            let asked = finish::serve(&online, &stop).await?;
            if let Some(asked) = asked {
                // The spec names the request's move: `rollback MOVE` rolls back that one only.
                let spec = spec_of(loaded, asked.move_id.clone());
                self.carry_leased(&mut online, &asked, &spec).await?;
            }
            anyhow::Ok(())
        }
        .await;
        throttle.end().await;
        lease.release().await;
        result
    }

    /// Carries out `asked` (a request, or a complete/cancel cut short) under the job's lease.
    async fn carry(&self, job: &str, asked: Asked) -> Result<()> {
        let cat = &self.catalog;
        // A cancel after --create-tables may find some created tables gone already.
        let own;
        let cache;
        let loaded = if asked.action == Action::Cancel {
            own = finish::load(cat, job, None, true).await?;
            &own
        } else {
            cache = self.load(job).await?;
            match cache.as_ref() {
                Some(c) => &c.loaded,
                None => return Ok(()),
            }
        };
        let stop = self.or_stop();
        let lease = Lease::acquire(cat, job, Some(stop)).await?;
        let spec = spec_of(loaded, asked.move_id.clone());
        let result = async {
            let mut online = Online::new(&loaded.ctx, cat, job).await?;
            online.load_logs().await?;
            online.reconcile().await?;
            self.carry_leased(&mut online, &asked, &spec).await
        }
        .await;
        lease.release().await;
        result
    }

    async fn carry_leased(
        &self,
        online: &mut Online<'_>,
        asked: &Asked,
        spec: &Spec,
    ) -> Result<()> {
        let (cat, job) = (&self.catalog, online.job.to_string());
        let word = asked.to_request();
        let row = cat
            .job(&job)
            .await?
            .with_context(|| format!("job {job}: not in the catalog"))?;
        let state = JobState::parse(&row.state)
            .with_context(|| format!("job {job}: unknown state {:?}", row.state))?;
        let request = match asked.action {
            Action::Complete => Request::Complete,
            Action::Rollback => Request::Rollback,
            Action::Cancel => Request::Cancel,
            Action::Sync => return Ok(()),
        };
        let flips = Flips::of(cat.moves(&job).await?.iter().map(|m| m.flipped));
        match decide(request, &job, state, flips) {
            Decision::Run => {}
            Decision::Done(msg) | Decision::Refused(msg) => {
                cat.clear_request(&job, &word).await?;
                cat.event(&job, None, "request_refused", &format!("{word}: {msg}"))
                    .await?;
                return Ok(());
            }
            Decision::NothingFlipped { mark_rolled_back } => {
                if mark_rolled_back {
                    cat.set_job_state(&job, JobState::RolledBack, None).await?;
                }
                return finish::settle(cat, &job, asked, &Ok(())).await;
            }
        }
        cat.event(
            &job,
            None,
            "request_taken",
            &format!("{word}, by {}", self.me),
        )
        .await?;
        crate::failpoint::hit("request_taken");
        let r = finish::carry_out(online, asked.action, spec).await;
        if let Err(e) = &r {
            let msg = format!("{e:#}");
            cat.set_job_state(&job, JobState::Failed, Some(&msg))
                .await
                .ok();
        }
        finish::settle(cat, &job, asked, &r).await?;
        r
    }

    /// A flag for one piece of work: set by the worker's stop, or by the work's own lease loss.
    fn or_stop(&self) -> StopFlag {
        let flag = StopFlag::default();
        let (outer, inner) = (self.stop.clone(), flag.clone());
        tokio::spawn(async move {
            while !outer.requested() && !inner.requested() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            inner.request();
        });
        flag
    }
}

fn spec_of(loaded: &finish::Loaded, move_id: Option<String>) -> Spec {
    Spec {
        move_id,
        verify: true,
        max_fence: loaded.options.max_fence(),
        created: loaded.options.create.clone(),
    }
}

/// Stops a copy task at its next batch when the worker stops, or the job is no longer running
/// or is asked to stop (pause, cancel, rollback).
async fn watch_copy(cat: Arc<Catalog>, job: String, worker: StopFlag, task: StopFlag) {
    loop {
        if worker.requested() || task.requested() {
            task.request();
            return;
        }
        // A catalog hiccup is looked at again at the next poll.
        if let (Ok(Some(row)), Ok(request)) = (cat.job(&job).await, cat.job_request(&job).await) {
            let stopping = request.is_some();
            if stopping || JobState::parse(&row.state) != Some(JobState::Running) {
                task.request();
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
