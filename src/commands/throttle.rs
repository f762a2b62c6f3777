//! `reshard throttle [JOB] [--max-rows-per-sec N] [--max-load N]`: changes the throttles of a
//! job while it runs
//! (src/throttle.rs; stored in the job's options, read by the running process within a
//! second), or, with no option, shows them and whether the job is being held back now.

use anyhow::Result;

use crate::error::{InputError, Stop};
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
    /// The new lag limit as given (`0s` turns it off); None leaves it.
    pub max_lag: Option<String>,
    /// The new batch time as given (`0s`: fixed batches); None leaves it.
    pub batch_time: Option<String>,
}

pub fn run(opts: ThrottleOptions) -> i32 {
    // Input first, before any I/O.
    let ms = |flag: &str, v: Option<&str>| -> Result<Option<u64>, crate::error::InputError> {
        v.map(|s| super::online::parse_duration_or_off(flag, s).map(|d| d.as_millis() as u64))
            .transpose()
    };
    let lag = match ms("--max-lag", opts.max_lag.as_deref()) {
        Ok(v) => v,
        Err(e) => return super::report(e.into()),
    };
    let batch = match ms("--batch-time", opts.batch_time.as_deref()) {
        Ok(v) => v,
        Err(e) => return super::report(e.into()),
    };
    super::block_on(throttle(opts, lag, batch))
}

type Text = fn(Option<u64>) -> String;

fn cap_text(cap: Option<u64>) -> String {
    match cap {
        Some(n) => format!("at most {n} rows/s"),
        None => "no rate cap".to_string(),
    }
}

fn lag_text(max_ms: Option<u64>) -> String {
    match max_ms {
        Some(ms) => format!(
            "waits while a replica lags over {:.1} s",
            ms as f64 / 1000.0
        ),
        None => "no lag limit".to_string(),
    }
}

fn batch_text(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => format!("copy batches sized toward {ms} ms each"),
        None => "fixed copy batches".to_string(),
    }
}

fn load_text(max: Option<u64>) -> String {
    match max {
        Some(n) => format!("waits while a shard has over {n} active sessions"),
        None => "no load limit".to_string(),
    }
}

async fn throttle(opts: ThrottleOptions, lag_ms: Option<u64>, batch_ms: Option<u64>) -> Result<()> {
    let cat = super::open_existing(&opts.catalog).await?;
    let result = async {
        let job = &super::job_or_unfinished(&cat, opts.job.as_deref(), "throttle").await?;
        let row = cat
            .job(job)
            .await?
            .ok_or_else(|| InputError::one(format!("job {job}: not in the catalog")))?;
        let state = JobState::parse(&row.state);
        let stored = crate::throttle::Settings::of_options(&row.options_json);
        let given = [
            opts.max_rows_per_sec.is_some(),
            opts.max_load.is_some(),
            lag_ms.is_some(),
            batch_ms.is_some(),
        ];
        if !given.contains(&true) {
            let now = cat.job_throttled(job).await?;
            println!(
                "job {job} ({}): {}; {}; {} (of the replicas its map lists); {}",
                row.state,
                cap_text(stored.max_rows_per_sec),
                load_text(stored.max_load),
                lag_text(stored.max_lag_ms),
                batch_text(stored.batch_time_ms)
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
        type Change = (&'static str, Option<u64>, Option<u64>, Option<u64>, Text);
        // (option key, value to store, what it means, what it replaces, how to say it); the
        // lag limit stores 0 for off, since absent means its default.
        let asked: [Change; 4] = [
            (
                "max_rows_per_sec",
                opts.max_rows_per_sec.filter(|v| *v > 0),
                opts.max_rows_per_sec.filter(|v| *v > 0),
                stored.max_rows_per_sec,
                cap_text,
            ),
            (
                "max_load",
                opts.max_load.filter(|v| *v > 0),
                opts.max_load.filter(|v| *v > 0),
                stored.max_load,
                load_text,
            ),
            (
                "max_lag_ms",
                lag_ms,
                lag_ms.filter(|v| *v > 0),
                stored.max_lag_ms,
                lag_text,
            ),
            (
                "batch_time_ms",
                batch_ms.filter(|v| *v > 0),
                batch_ms.filter(|v| *v > 0),
                stored.batch_time_ms,
                batch_text,
            ),
        ];
        for ((key, store, means, before, text), given) in asked.into_iter().zip(given) {
            if !given {
                continue;
            }
            cat.set_throttle(job, key, store, &text(means)).await?;
            eprintln!(
                "reshard: job {job}: {} (was {}); {applies}",
                text(means),
                text(before)
            );
        }
        Ok(())
    }
    .await;
    cat.close().await;
    result
}
