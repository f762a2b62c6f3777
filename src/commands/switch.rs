//! `reshard switch JOB`: lets a job started with `apply --switch manual` flip its moves. The
//! request goes on the job's row (src/catalog/requests.rs); the process running the job, which
//! has been catching up without flipping, sees it within a second and cuts every move over.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::catalog::{Catalog, SWITCH};
use crate::error::{InputError, Stop};
use crate::execute::JobOptions;
use crate::job::JobState;

#[derive(Debug, Clone)]
pub struct SwitchOptions {
    pub job: String,
    pub catalog: String,
    pub wait: bool,
}

/// Cutovers take about a second per move; past this, switch stops waiting and says how to
/// check (the request stays recorded).
const WAIT: Duration = Duration::from_secs(600);

pub fn run(opts: SwitchOptions) -> i32 {
    super::block_on(switch(opts))
}

async fn switch(opts: SwitchOptions) -> Result<()> {
    let id = &opts.job;
    let cat = super::open_existing(&opts.catalog).await?;
    let result = async {
        let job = cat
            .job(id)
            .await?
            .ok_or_else(|| InputError::one(format!("job {id}: not in the catalog")))?;
        let options: JobOptions = serde_json::from_str(&job.options_json)
            .with_context(|| format!("job {id}: unreadable options in the catalog"))?;
        let state = JobState::parse(&job.state);
        if !options.switch_manual {
            return Err(Stop::Refused(format!(
                "job {id} was not started with `apply --switch manual`: it flips its moves \
                 by itself"
            ))
            .into());
        }
        if !state.is_some_and(|s| s.resumable()) {
            return Err(Stop::Refused(format!(
                "job {id} is {}: nothing left to switch",
                job.state
            ))
            .into());
        }
        let holder = cat.live_holder(id).await?;
        let detail = match &holder {
            Some(h) => format!("switch, asked of {h}"),
            None => "switch, for the next run of the job".to_string(),
        };
        cat.record_request(id, SWITCH, &detail).await?;
        match holder {
            None => {
                eprintln!(
                    "reshard: job {id}: switch recorded; no process is running the job: \
                     `reshard resume {id}` cuts it over now"
                );
                Ok(())
            }
            Some(h) if !opts.wait => {
                eprintln!("reshard: job {id}: switch requested of {h}; `reshard status {id}` shows the flips");
                Ok(())
            }
            Some(h) => wait_flipped(&cat, id, &h).await,
        }
    }
    .await;
    cat.close().await;
    result
}

async fn wait_flipped(cat: &Catalog, id: &str, holder: &str) -> Result<()> {
    eprintln!("reshard: job {id}: switch requested of {holder}; waiting for the flips");
    let started = Instant::now();
    while started.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(job) = cat.job(id).await? else { break };
        match JobState::parse(&job.state) {
            Some(JobState::DualWrite | JobState::Completed | JobState::Completing) => {
                eprintln!(
                    "reshard: job {id}: every move has flipped ({:.1}s); next: reshard \
                     complete {id} (or reshard rollback {id})",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            Some(JobState::Running) => {}
            Some(other) => {
                eprintln!("reshard: job {id} stopped as {other} before every move flipped");
                return Ok(());
            }
            None => {}
        }
    }
    eprintln!(
        "reshard: job {id}: not every move has flipped within {}s; `reshard status {id}`",
        WAIT.as_secs()
    );
    Ok(())
}
