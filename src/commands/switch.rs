//! `reshard switch JOB [--move M]... [--dry-run]`: lets a job started with `apply --switch
//! manual` flip its moves, all of them or the ones named. The request goes on the job's row
//! (`jobs.switch_request`, src/catalog/requests.rs); the process running the job, which has been catching up without
//! flipping, sees it within a second and cuts those moves over. `--dry-run` changes nothing: it
//! says what each fence would do and predicts its drain from what waits and the measured rate.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::backlog::{self, LogBacklog, ShardLogs};
use crate::catalog::{Catalog, DrainRate, MoveRow, Switch};
use crate::error::{InputError, Stop};
use crate::execute::JobOptions;
use crate::job::JobState;

#[derive(Debug, Clone)]
pub struct SwitchOptions {
    /// None: the catalog's unfinished job.
    pub job: Option<String>,
    pub catalog: String,
    /// The moves to let flip; empty for every move.
    pub moves: Vec<String>,
    pub dry_run: bool,
    pub wait: bool,
}

/// Cutovers take about a second per move; past this, switch stops waiting and says how to
/// check (the request stays recorded).
const WAIT: Duration = Duration::from_secs(600);

pub fn run(opts: SwitchOptions) -> i32 {
    super::block_on(switch(opts))
}

async fn switch(opts: SwitchOptions) -> Result<()> {
    let cat = if opts.dry_run {
        super::open_existing_ro(&opts.catalog).await?
    } else {
        super::open_existing(&opts.catalog).await?
    };
    let result = switch_in(&cat, &opts).await;
    cat.close().await;
    result
}

async fn switch_in(cat: &Catalog, opts: &SwitchOptions) -> Result<()> {
    let id = &super::job_or_unfinished(cat, opts.job.as_deref(), "switch").await?;
    let job = cat
        .job(id)
        .await?
        .ok_or_else(|| InputError::one(format!("job {id}: not in the catalog")))?;
    let options: JobOptions = serde_json::from_str(&job.options_json)
        .with_context(|| format!("job {id}: unreadable options in the catalog"))?;
    let state = JobState::parse(&job.state);
    if !options.switch_manual {
        return Err(Stop::Refused(format!(
            "job {id} was not started with `apply --switch manual`: it flips its moves by itself"
        ))
        .into());
    }
    if !state.is_some_and(|s| s.resumable()) {
        return Err(
            Stop::Refused(format!("job {id} is {}: nothing left to switch", job.state)).into(),
        );
    }
    let moves = cat.moves(id).await?;
    let chosen = choose(id, &moves, &opts.moves)?;
    if opts.dry_run {
        let plan = crate::plan::Plan::parse(&job.plan_json, "the job's plan")?;
        let mut logs = Vec::new();
        for s in backlog::read(&plan).await {
            match s {
                ShardLogs::Read(l) => logs.extend(l),
                ShardLogs::Unreachable { shard, why } => {
                    eprintln!("reshard: warning: shard {shard}: change logs not read: {why}")
                }
            }
        }
        // A catalog from before drain rates were recorded has none to show.
        let rates = cat.drain_rates(id).await.unwrap_or_default();
        let now = crate::catalog::now_ms();
        print!(
            "{}",
            dry_run_report(
                id,
                &chosen,
                &logs,
                &rates,
                &opts.moves,
                now,
                options.max_fence()
            )
        );
        return Ok(());
    }
    let switch = if opts.moves.is_empty() {
        Switch::All
    } else {
        Switch::Moves(chosen.iter().map(|m| m.id.clone()).collect())
    };
    let holder = cat.live_holder(id).await?;
    let what = switch.text();
    let detail = match &holder {
        Some(h) => format!("{what}, asked of {h}"),
        None => format!("{what}, for the next run of the job"),
    };
    let recorded = cat.record_switch(id, switch, &detail).await?;
    match holder {
        None => {
            eprintln!(
                "reshard: job {id}: {} recorded; no process is running the job: `reshard \
                 resume {id}` cuts it over now",
                recorded.text()
            );
            Ok(())
        }
        Some(h) if !opts.wait => {
            eprintln!(
                "reshard: job {id}: {} requested of {h}; `reshard status {id}` shows the flips",
                recorded.text()
            );
            Ok(())
        }
        Some(h) => wait_flipped(cat, id, &h, &chosen).await,
    }
}

/// The moves a switch names, checked against the job's: every unflipped one when none is
/// named. Refused when a named move is not the job's (bad input) or nothing is left to flip.
fn choose(job: &str, moves: &[MoveRow], named: &[String]) -> Result<Vec<MoveRow>> {
    let unknown: Vec<String> = named
        .iter()
        .filter(|n| !moves.iter().any(|m| &m.id == *n))
        .map(|n| {
            let ids: Vec<&str> = moves.iter().map(|m| m.id.as_str()).collect();
            format!(
                "--move {n}: job {job} has no such move (its moves: {})",
                ids.join(", ")
            )
        })
        .collect();
    if !unknown.is_empty() {
        return Err(InputError::many(unknown).into());
    }
    let chosen: Vec<MoveRow> = moves
        .iter()
        .filter(|m| !m.flipped && (named.is_empty() || named.contains(&m.id)))
        .cloned()
        .collect();
    if chosen.is_empty() {
        return Err(Stop::Refused(format!(
            "job {job}: {} flipped already: nothing left to switch",
            if named.is_empty() {
                "every move has".to_string()
            } else {
                format!(
                    "{} {}",
                    named.join(", "),
                    if named.len() == 1 { "has" } else { "have" }
                )
            }
        ))
        .into());
    }
    Ok(chosen)
}

/// What `switch --dry-run` prints: per move, its fence and the drain predicted from what waits
/// in the source's change logs now and the rate the running job last measured there. Pure.
pub fn dry_run_report(
    job: &str,
    moves: &[MoveRow],
    logs: &[LogBacklog],
    rates: &[DrainRate],
    named: &[String],
    now_ms: i64,
    max_fence: Duration,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "switch {job} (dry run: nothing is changed)");
    let _ = writeln!(
        out,
        "Each move below, in turn: its source refuses writes to the move's keys (the\n\
         Router retries them), the source's change logs drain to the destination, the\n\
         chunks touched since the last checksum pass are verified, the routing flips,\n\
         and the fence is lowered. A drain predicted over half of --max-fence ({:.1}s)\n\
         waits for catch-up to shrink the backlog first.",
        max_fence.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "{:<8} {:<18} {:>10} {:>8} {:>16} {:>14}",
        "move", "source -> dest", "waiting", "oldest", "drain rate", "drain"
    );
    for m in moves {
        let mine: Vec<&LogBacklog> = logs.iter().filter(|l| l.shard == m.source).collect();
        let waiting: Option<u64> = (!mine.is_empty()).then(|| mine.iter().map(|l| l.entries).sum());
        let oldest = mine.iter().filter_map(|l| l.oldest_ms).max();
        let rate = rates
            .iter()
            .find(|r| r.shard == m.source && r.entries_per_sec > 0);
        let predicted = match (waiting, rate) {
            (Some(w), Some(r)) => {
                let secs = w as f64 / r.entries_per_sec as f64;
                let verdict = if secs < max_fence.as_secs_f64() / 2.0 {
                    ""
                } else {
                    " (waits)"
                };
                format!("~{secs:.2}s{verdict}")
            }
            _ => "unknown".to_string(),
        };
        let rate_text = rate.map_or("not measured".to_string(), |r| {
            format!(
                "{}/s {} ago",
                r.entries_per_sec,
                backlog::age_text(now_ms - r.measured_at_ms)
            )
        });
        let _ = writeln!(
            out,
            "{:<8} {:<18} {:>10} {:>8} {:>16} {:>14}",
            m.id,
            format!("{} -> {}", m.source, m.destination),
            waiting.map_or("?".to_string(), |w| w.to_string()),
            oldest.map_or("-".to_string(), backlog::age_text),
            rate_text,
            predicted
        );
    }
    let _ = writeln!(
        out,
        "The drain is what waits divided by the last measured catch-up rate;\n\
         verification adds to it. Switch with: reshard switch {job}{}",
        named
            .iter()
            .map(|n| format!(" --move {n}"))
            .collect::<String>()
    );
    out
}

async fn wait_flipped(cat: &Catalog, id: &str, holder: &str, chosen: &[MoveRow]) -> Result<()> {
    let ids: Vec<&str> = chosen.iter().map(|m| m.id.as_str()).collect();
    eprintln!(
        "reshard: job {id}: switch of {} requested of {holder}; waiting for the flips",
        ids.join(", ")
    );
    let started = Instant::now();
    while started.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(job) = cat.job(id).await? else { break };
        let moves = cat.moves(id).await?;
        let flipped = |m: &str| moves.iter().any(|r| r.id == m && r.flipped);
        let state = JobState::parse(&job.state);
        if ids.iter().all(|m| flipped(m)) {
            let next = if state == Some(JobState::Running) {
                format!("the others wait for their switch (reshard switch {id})")
            } else {
                format!("next: reshard complete {id} (or reshard rollback {id})")
            };
            let what = if moves.iter().all(|m| m.flipped) {
                "every move has flipped".to_string()
            } else {
                format!("{} flipped", ids.join(", "))
            };
            eprintln!(
                "reshard: job {id}: {what} ({:.1}s); {next}",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        match state {
            Some(JobState::Running) | None => {}
            // The switch was not carried out (a failed cutover, an interrupted run): a
            // failure, not done. The request stays recorded for the next run.
            Some(other) => {
                let why = job
                    .last_error
                    .filter(|_| other == JobState::Failed)
                    .map_or(String::new(), |e| format!(": {e}"));
                anyhow::bail!(
                    "job {id} stopped as {other} before the moves flipped{why}; the switch \
                     stays recorded: reshard resume {id} cuts them over"
                );
            }
        }
    }
    eprintln!(
        "reshard: job {id}: not every move switched has flipped within {}s; `reshard status \
         {id}`",
        WAIT.as_secs()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mv(id: &str, source: &str, flipped: bool) -> MoveRow {
        MoveRow {
            id: id.into(),
            source: source.into(),
            destination: "s9".into(),
            state: "catching_up".into(),
            rows_total: 0,
            bytes_total: 0,
            rows_copied: 0,
            bytes_copied: 0,
            copy_ms: 0,
            flipped,
            fence_ms: None,
            last_error: None,
            started_at: None,
            updated_at: String::new(),
            finished_at: None,
        }
    }

    fn log(shard: &str, entries: u64, oldest_ms: Option<i64>) -> LogBacklog {
        LogBacklog {
            shard: shard.into(),
            table: "users".into(),
            entries,
            oldest_ms,
        }
    }

    fn exit_code(e: &anyhow::Error) -> i32 {
        crate::error::exit_code(e)
    }

    #[test]
    fn a_switch_names_only_the_jobs_unflipped_moves() {
        let moves = [
            mv("m1", "s0", true),
            mv("m2", "s0", false),
            mv("m3", "s1", false),
        ];
        let ids = |v: Vec<MoveRow>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(ids(choose("j", &moves, &[]).unwrap()), ["m2", "m3"]);
        assert_eq!(ids(choose("j", &moves, &["m3".into()]).unwrap()), ["m3"]);
        let e = choose("j", &moves, &["m7".into()]).unwrap_err();
        assert!(
            format!("{e:#}").contains("--move m7: job j has no such move"),
            "{e:#}"
        );
        assert_eq!(exit_code(&e), 2);
        let e = choose("j", &moves, &["m1".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("m1 has flipped already"), "{e:#}");
        assert_eq!(exit_code(&e), 2);
    }

    #[test]
    fn the_dry_run_predicts_the_drain_from_what_waits_and_the_measured_rate() {
        let moves = [
            mv("m2", "s0", false),
            mv("m3", "s1", false),
            mv("m4", "s2", false),
        ];
        let logs = [
            log("s0", 600, Some(400)),
            log("s0", 400, Some(900)),
            log("s1", 50_000, Some(20_000)),
        ];
        let rates = [
            DrainRate {
                shard: "s0".into(),
                entries_per_sec: 4000,
                measured_at_ms: 7_000,
            },
            DrainRate {
                shard: "s1".into(),
                entries_per_sec: 10_000,
                measured_at_ms: 9_000,
            },
        ];
        let out = dry_run_report(
            "j",
            &moves,
            &logs,
            &rates,
            &[],
            10_000,
            Duration::from_secs(2),
        );
        let line = |id: &str| out.lines().find(|l| l.starts_with(id)).unwrap().to_string();
        // s0: 1000 entries at 4000/s; s1: 50000 at 10000/s is over half of --max-fence.
        assert!(
            line("m2").contains("1000") && line("m2").ends_with("~0.25s"),
            "{out}"
        );
        assert!(
            line("m2").contains("0.9s") && line("m2").contains("4000/s 3.0s ago"),
            "{out}"
        );
        assert!(line("m3").ends_with("~5.00s (waits)"), "{out}");
        // s2: logs not read, no rate: nothing is made up.
        assert!(
            line("m4").contains("not measured") && line("m4").ends_with("unknown"),
            "{out}"
        );
        assert!(
            out.contains("nothing is changed") && out.ends_with("reshard switch j\n"),
            "{out}"
        );
        assert!(out.lines().all(|l| l.len() <= 80), "{out}");
        let out = dry_run_report(
            "j",
            &moves[..1],
            &logs,
            &rates,
            &["m2".into()],
            10_000,
            Duration::from_secs(2),
        );
        assert!(out.ends_with("reshard switch j --move m2\n"), "{out}");
    }
}
