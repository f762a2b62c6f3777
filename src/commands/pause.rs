//! `reshard pause JOB`: records the request in the catalog (src/catalog/requests.rs) and, by
//! default, waits until the process running the job has stopped at a safe point.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::catalog::{Catalog, PauseOutcome};
use crate::error::Stop;
use crate::job::JobState;

#[derive(Debug, Clone)]
pub struct PauseOptions {
    /// None: the catalog's unfinished job.
    pub job: Option<String>,
    pub catalog: String,
    /// Wait until the job is paused (or has ended otherwise).
    pub wait: bool,
}

/// The running job sees the request within a second; its batch in flight then finishes. Past
/// this, pause stops waiting and says how to check (the request stays recorded).
const WAIT: Duration = Duration::from_secs(120);

pub fn run(opts: PauseOptions) -> i32 {
    super::block_on(pause(opts))
}

async fn pause(opts: PauseOptions) -> Result<()> {
    let cat = super::open_existing(&opts.catalog).await?;
    let result = async {
        let job = &super::job_or_unfinished(&cat, opts.job.as_deref(), "pause").await?;
        match cat.request_pause(job).await? {
            PauseOutcome::Refused(why) => Err(Stop::Refused(why).into()),
            PauseOutcome::Already => {
                eprintln!(
                    "reshard: job {job} is paused already; continue with: reshard resume {job}"
                );
                Ok(())
            }
            PauseOutcome::Paused => {
                eprintln!(
                    "reshard: job {job} paused (no process was running it); continue with: \
                     reshard resume {job}"
                );
                Ok(())
            }
            PauseOutcome::Requested { holder } if !opts.wait => {
                eprintln!(
                    "reshard: job {job}: pause requested of {holder}; `reshard status {job}` \
                     shows when it has stopped"
                );
                Ok(())
            }
            PauseOutcome::Requested { holder } => wait_paused(&cat, job, &holder).await,
        }
    }
    .await;
    cat.close().await;
    result
}

async fn wait_paused(cat: &Catalog, job: &str, holder: &str) -> Result<()> {
    eprintln!("reshard: job {job}: pause requested of {holder}; waiting for it to stop");
    let started = Instant::now();
    while started.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let row = cat.job(job).await?;
        let state = row.as_ref().and_then(|j| JobState::parse(&j.state));
        match state {
            Some(JobState::Paused) => {
                eprintln!(
                    "reshard: job {job} paused after {:.1}s; continue with: reshard resume {job}",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            Some(JobState::Running) | None => {}
            // It failed first: not paused, and the reason is the job's.
            Some(JobState::Failed) => {
                let why = row.and_then(|j| j.last_error);
                anyhow::bail!(
                    "job {job} failed before it could pause: {}; fix the cause, then: \
                     reshard resume {job}",
                    why.unwrap_or_default()
                );
            }
            // It ended another way first (finished its cutovers, was interrupted).
            Some(other) => {
                eprintln!("reshard: job {job} stopped as {other} before it could pause");
                return Ok(());
            }
        }
    }
    eprintln!(
        "reshard: job {job} has not paused within {}s; the request stays recorded \
         (`reshard status {job}`)",
        WAIT.as_secs()
    );
    Ok(())
}
