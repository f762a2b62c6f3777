//! `reshard throttle [JOB] [--max-rows-per-sec N]`: changes the rate cap of a job while it runs
//! (src/throttle.rs; stored in the job's options, read by the running process within a second),
//! or, with no option, shows the cap and whether the job is being held back now.

use anyhow::{Context as _, Result};

use crate::error::Stop;
use crate::job::JobState;

#[derive(Debug, Clone)]
pub struct ThrottleOptions {
    /// None: the catalog's unfinished job.
    pub job: Option<String>,
    pub catalog: String,
    /// The new cap; Some(0) lifts it; None only shows.
    pub max_rows_per_sec: Option<u64>,
}

pub fn run(opts: ThrottleOptions) -> i32 {
    super::block_on(throttle(opts))
}

fn cap_text(cap: Option<u64>) -> String {
    match cap {
        Some(n) => format!("at most {n} rows/s"),
        None => "no rate cap".to_string(),
    }
}

async fn throttle(opts: ThrottleOptions) -> Result<()> {
    let cat = super::open_existing(&opts.catalog).await?;
    let result = async {
        let job = &super::job_or_unfinished(&cat, opts.job.as_deref(), "throttle").await?;
        let row = cat
            .job(job)
            .await?
            .with_context(|| format!("job {job} is not in the catalog"))?;
        let state = JobState::parse(&row.state);
        let stored: Option<u64> = serde_json::from_str::<serde_json::Value>(&row.options_json)
            .ok()
            .and_then(|o| o.get("max_rows_per_sec").and_then(|v| v.as_u64()));
        let Some(asked) = opts.max_rows_per_sec else {
            let now = cat.job_throttled(job).await?;
            println!("job {job} ({}): {}", row.state, cap_text(stored));
            match now {
                Some(why) => println!("throttled now: {why}"),
                None => println!("not throttled now"),
            }
            return Ok(());
        };
        if state.is_some_and(JobState::finished) {
            return Err(Stop::Refused(format!(
                "job {job} is {}: there is nothing left to throttle",
                row.state
            ))
            .into());
        }
        let cap = (asked > 0).then_some(asked);
        let before = cat.set_rate_cap(job, cap).await?;
        let holder = cat.live_holder(job).await?;
        let applies = match holder {
            Some(h) => format!("{h} applies it within a second"),
            None => "no process is running the job; its next run applies it".to_string(),
        };
        eprintln!(
            "reshard: job {job}: {} (was {}); {applies}",
            cap_text(cap),
            cap_text(before)
        );
        Ok(())
    }
    .await;
    cat.close().await;
    result
}
