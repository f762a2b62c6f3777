//! `reshard throttle [JOB] [--max-rows-per-sec N] [--max-load N]`: changes the throttles of a
//! job while it runs
//! (src/throttle.rs; stored in the job's options, read by the running process within a
//! second), or, with no option, shows them and whether the job is being held back now.

use anyhow::{Context as _, Result};

use crate::error::Stop;
use crate::job::JobState;

#[derive(Debug, Clone)]
pub struct ThrottleOptions {
    /// None: the catalog's unfinished job.
    pub job: Option<String>,
    pub catalog: String,
    /// The new cap; Some(0) lifts it; None leaves it.
    pub max_rows_per_sec: Option<u64>,
    /// The new load limit; Some(0) lifts it; None leaves it.
    pub max_load: Option<u64>,
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

fn load_text(max: Option<u64>) -> String {
    match max {
        Some(n) => format!("waits while a shard has over {n} active sessions"),
        None => "no load limit".to_string(),
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
        let stored = crate::throttle::Settings::of_options(&row.options_json);
        if opts.max_rows_per_sec.is_none() && opts.max_load.is_none() {
            let now = cat.job_throttled(job).await?;
            println!(
                "job {job} ({}): {}; {}",
                row.state,
                cap_text(stored.max_rows_per_sec),
                load_text(stored.max_load)
            );
            match now {
                Some(why) => println!("throttled now: {why}"),
                None => println!("not throttled now"),
            }
            return Ok(());
        }
        if state.is_some_and(JobState::finished) {
            return Err(Stop::Refused(format!(
                "job {job} is {}: there is nothing left to throttle",
                row.state
            ))
            .into());
        }
        let holder = cat.live_holder(job).await?;
        let applies = match holder {
            Some(h) => format!("{h} applies it within a second"),
            None => "no process is running the job; its next run applies it".to_string(),
        };
        type Text = fn(Option<u64>) -> String;
        let asked: [(&str, Option<u64>, Text); 2] = [
            ("max_rows_per_sec", opts.max_rows_per_sec, cap_text),
            ("max_load", opts.max_load, load_text),
        ];
        for (key, value, text) in asked {
            let Some(v) = value else { continue };
            let v = (v > 0).then_some(v);
            let before = cat.set_throttle(job, key, v, &text(v)).await?;
            eprintln!(
                "reshard: job {job}: {} (was {}); {applies}",
                text(v),
                text(before)
            );
        }
        Ok(())
    }
    .await;
    cat.close().await;
    result
}
