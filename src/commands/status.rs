//! `reshard status` and `reshard jobs`: read-only views of the catalog. For an unfinished job,
//! status also reads the change logs on its shards (src/backlog.rs): what waits to be applied,
//! and whether any process is applying it.

use anyhow::{Context as _, Result};
use serde_json::json;

use super::Format;
use crate::backlog::{self, LogBacklog, ShardLogs};
use crate::catalog::{JobRow, MoveRow};
use crate::job::JobState;

#[derive(Debug, Clone)]
pub struct StatusOptions {
    pub job: Option<String>,
    pub catalog: String,
    pub format: Format,
}

#[derive(Debug, Clone)]
pub struct JobsOptions {
    pub catalog: String,
    pub format: Format,
}

pub fn run(opts: StatusOptions) -> i32 {
    super::block_on(status(opts))
}

pub fn jobs(opts: JobsOptions) -> i32 {
    super::block_on(list(opts))
}

fn move_json(m: &MoveRow) -> serde_json::Value {
    json!({
        "id": m.id,
        "source": m.source,
        "destination": m.destination,
        "state": m.state,
        "rows_copied": m.rows_copied,
        "rows_total": m.rows_total,
        "bytes_copied": m.bytes_copied,
        "bytes_total": m.bytes_total,
        "rate": m.rate().map(|r| r.round()),
        "eta_seconds": m.eta_seconds(),
        "last_error": m.last_error,
        "flipped": m.flipped,
        "fence_ms": m.fence_ms,
        "started_at": m.started_at,
        "finished_at": m.finished_at,
    })
}

fn job_json(j: &JobRow, moves: &[MoveRow]) -> serde_json::Value {
    let copied: u64 = moves.iter().map(|m| m.rows_copied).sum();
    let total: u64 = moves.iter().map(|m| m.rows_total).sum();
    json!({
        "job": j.id,
        "state": j.state,
        "plan_fingerprint": j.plan_fingerprint,
        "started_from_version": j.routing_version,
        "created_at": j.created_at,
        "updated_at": j.updated_at,
        "finished_at": j.finished_at,
        "last_error": j.last_error,
        "rows_copied": copied,
        "rows_total": total,
        "moves": moves.iter().map(move_json).collect::<Vec<_>>(),
    })
}

async fn status(opts: StatusOptions) -> Result<()> {
    let cat = super::open_existing_ro(&opts.catalog).await?;
    let job = super::pick_job(&cat, opts.job.as_deref()).await?;
    let moves = cat.moves(&job.id).await?;
    let routing_version = cat.routing().await?.map(|r| r.version);
    // A catalog no worker has migrated yet has no task table: no tasks.
    let tasks = cat.tasks(&job.id).await.unwrap_or_default();
    let throttle = Throttle {
        set: crate::throttle::Settings::of_options(&job.options_json),
        // Recorded by the process running the job; stale once no process does.
        now: cat
            .job_throttled(&job.id)
            .await
            .ok()
            .flatten()
            .filter(|_| is_served(&job, &tasks, crate::catalog::now_ms())),
    };
    cat.close().await;
    let logs = Logs::read(&job).await;
    let now = crate::catalog::now_ms();
    match opts.format {
        Format::Json => {
            let mut v = job_json(&job, &moves);
            v["routing_version"] = json!(routing_version);
            v["elapsed_ms"] = json!(elapsed_ms(&job, now));
            v["lease"] = lease(&job, now).map_or(
                json!(null),
                |(owner, left)| json!({"owner": owner, "expires_in_ms": left}),
            );
            v["next"] = json!(next_step(&job, &moves));
            v["throttle"] = json!({
                "max_rows_per_sec": throttle.set.max_rows_per_sec,
                "max_load": throttle.set.max_load,
                "max_lag_ms": throttle.set.max_lag_ms,
                "throttled": throttle.now,
            });
            v["tasks"] = json!(tasks
                .iter()
                .map(|t| json!({
                    "id": t.id,
                    "move": t.move_id,
                    "state": t.state,
                    "owner": t.live_holder(now),
                    "expires_in_ms": t.live_holder(now).and(t.lease_expires_ms).map(|u| u - now),
                    "attempts": t.attempts,
                }))
                .collect::<Vec<_>>());
            v["change_logs"] = logs.json();
            v["warnings"] = json!(logs.warnings);
            for (m, mv) in moves
                .iter()
                .zip(v["moves"].as_array_mut().into_iter().flatten())
            {
                mv["waiting"] = logs.waiting(m).map_or(
                    json!(null),
                    |(shard, n, age)| json!({"shard": shard, "entries": n, "oldest_ms": age}),
                );
            }
            emit(&(serde_json::to_string_pretty(&v)? + "\n"))
        }
        Format::Text => emit(&text(
            &job,
            &moves,
            &tasks,
            &logs,
            &throttle,
            routing_version,
            now,
        )),
    }
}

/// Writes to stdout; a reader that went away (`status | head`) is not an error.
fn emit(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}

/// From creation to the end (or now, while unfinished).
fn elapsed_ms(job: &JobRow, now: i64) -> Option<i64> {
    let t = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| d.timestamp_millis())
    };
    let start = t(&job.created_at)?;
    let end = job.finished_at.as_deref().and_then(t).unwrap_or(now);
    Some((end - start).max(0))
}

/// The job's rate cap and, while a process runs the job, why it is holding it back now.
struct Throttle {
    set: crate::throttle::Settings,
    now: Option<String>,
}

/// Whether a live process runs the job: its lease holder or a worker copying one of its moves.
fn is_served(job: &JobRow, tasks: &[crate::catalog::TaskRow], now: i64) -> bool {
    lease(job, now).is_some()
        || tasks
            .iter()
            .any(|t| !t.done() && t.live_holder(now).is_some())
}

/// The process holding the job's lease and how long it has left, when it is live.
fn lease(job: &JobRow, now: i64) -> Option<(String, i64)> {
    match (&job.lease_owner, job.lease_expires_ms) {
        (Some(owner), Some(t)) if t > now => Some((owner.clone(), t - now)),
        _ => None,
    }
}

/// The command that moves the job on, or None when it is over.
fn next_step(job: &JobRow, moves: &[MoveRow]) -> Option<String> {
    let state = JobState::parse(&job.state)?;
    if state.finished() {
        return None;
    }
    let f = crate::decide::Flips::of(moves.iter().map(|m| m.flipped));
    Some(state.finish_hint(&job.id, f.any, f.all))
}

/// The change logs of an unfinished job's shards, and the warnings they lead to.
struct Logs {
    read: Vec<LogBacklog>,
    warnings: Vec<String>,
}

impl Logs {
    async fn read(job: &JobRow) -> Logs {
        let mut logs = Logs {
            read: Vec::new(),
            warnings: Vec::new(),
        };
        let Some(state) = JobState::parse(&job.state) else {
            return logs;
        };
        if state.finished() {
            return logs;
        }
        let plan = match crate::plan::Plan::parse(&job.plan_json, "the job's plan") {
            Ok(p) => p,
            Err(e) => {
                logs.warnings.push(format!("change logs not read: {e}"));
                return logs;
            }
        };
        for s in backlog::read(&plan).await {
            match s {
                ShardLogs::Read(l) => logs.read.extend(l),
                ShardLogs::Unreachable { shard, why } => logs
                    .warnings
                    .push(format!("shard {shard}: change logs not read: {why}")),
            }
        }
        let now = crate::catalog::now_ms();
        logs.warnings.extend(backlog::unserved_warning(
            &job.id,
            state,
            job.lease_expires_ms,
            now,
        ));
        logs
    }

    /// What waits for `m` in the log it consumes: its destination's once flipped (reverse
    /// sync), its source's before (catch-up); summed over tables. The log is the shard's, so
    /// moves sharing that shard share the figure.
    fn waiting(&self, m: &MoveRow) -> Option<(String, u64, Option<i64>)> {
        let shard = if m.flipped { &m.destination } else { &m.source };
        let mine: Vec<&LogBacklog> = self.read.iter().filter(|l| &l.shard == shard).collect();
        if mine.is_empty() {
            return None;
        }
        let n = mine.iter().map(|l| l.entries).sum();
        let age = mine.iter().filter_map(|l| l.oldest_ms).max();
        Some((shard.clone(), n, age))
    }

    fn json(&self) -> serde_json::Value {
        json!(self
            .read
            .iter()
            .map(
                |l| json!({"shard": l.shard, "table": l.table, "entries": l.entries,
                            "oldest_ms": l.oldest_ms})
            )
            .collect::<Vec<_>>())
    }
}

fn text(
    job: &JobRow,
    moves: &[MoveRow],
    tasks: &[crate::catalog::TaskRow],
    logs: &Logs,
    throttle: &Throttle,
    routing_version: Option<i64>,
    now: i64,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let version = match routing_version {
        Some(v) if v != job.routing_version => {
            format!(
                "routing version {v} (the job started from {})",
                job.routing_version
            )
        }
        Some(v) => format!("routing version {v}"),
        None => "no routing".to_string(),
    };
    let _ = writeln!(out, "job {}  {}  {version}", job.id, job.state);
    let elapsed = elapsed_ms(job, now).map_or("-".into(), backlog::age_text);
    let (took, served) = match lease(job, now) {
        _ if job.finished_at.is_some() => (format!("took {elapsed}"), None),
        Some((owner, left)) => (
            format!("{elapsed} so far"),
            Some(format!("served by {owner} (lease {}s left)", left / 1000)),
        ),
        None => (
            format!("{elapsed} so far"),
            Some("no process holds its lease".to_string()),
        ),
    };
    let copying: Vec<String> = tasks
        .iter()
        .filter(|t| !t.done())
        .filter_map(|t| {
            let owner = t.live_holder(now)?;
            let left = t.lease_expires_ms.map_or(0, |u| (u - now).max(0) / 1000);
            Some(format!(
                "{} by {owner} ({left}s left)",
                t.move_id.as_deref().unwrap_or(&t.id)
            ))
        })
        .collect();
    let served = match served {
        Some(_) if !copying.is_empty() => {
            format!("; {} move(s) being copied by workers", copying.len())
        }
        Some(s) => format!("; {s}"),
        None => String::new(),
    };
    let _ = writeln!(out, "created {}, {took}{served}", job.created_at);
    if !copying.is_empty() {
        let line = format!("copying: {}", copying.join(", "));
        let _ = writeln!(out, "{}", super::wrap(&line, 100, "  "));
    }
    let mut limits = Vec::new();
    if let Some(cap) = throttle.set.max_rows_per_sec {
        limits.push(format!("rate cap {cap} rows/s"));
    }
    if let Some(max) = throttle.set.max_load {
        limits.push(format!("load limit {max} active sessions"));
    }
    match &throttle.now {
        Some(why) => {
            let _ = writeln!(out, "throttled: {why}");
        }
        None if job.finished_at.is_none() && !limits.is_empty() => {
            let _ = writeln!(out, "{} (not holding the job back now)", limits.join(", "));
        }
        None => {}
    }
    if let Some(e) = &job.last_error {
        let _ = writeln!(
            out,
            "{}",
            super::wrap(&format!("last error: {e}"), 100, "  ")
        );
    }
    let cancelled = job.state == JobState::Cancelled.as_str();
    let rows: Vec<Vec<String>> = moves
        .iter()
        .map(|m| move_cells(m, logs, cancelled))
        .collect();
    out.push_str(&table(
        &[
            "MOVE",
            "SOURCE",
            "DESTINATION",
            "STATE",
            "ROWS",
            "ROWS/S",
            "ETA",
            "FENCE",
            "WAITING",
            "OLDEST",
        ],
        &[
            false, false, false, false, true, true, true, true, true, true,
        ],
        &rows,
    ));
    for m in moves {
        if let Some(e) = &m.last_error {
            let _ = writeln!(
                out,
                "{}",
                super::wrap(&format!("{}: last error: {e}", m.id), 100, "  ")
            );
        }
    }
    if !logs.read.is_empty() {
        let note = "WAITING: change-log entries not yet applied at the shard the move reads (its \
                    destination once flipped, its source before), shared by the moves of that shard";
        let _ = writeln!(out, "{}", super::wrap(note, 100, "  "));
    }
    for w in &logs.warnings {
        let _ = writeln!(out, "{}", super::wrap(&format!("warning: {w}"), 100, "  "));
    }
    if let Some(next) = next_step(job, moves) {
        let _ = writeln!(out, "{}", super::wrap(&format!("next: {next}"), 100, "  "));
    }
    out
}

fn move_cells(m: &MoveRow, logs: &Logs, cancelled: bool) -> Vec<String> {
    let (waiting, oldest) = match logs.waiting(m) {
        Some((_, n, age)) => (n.to_string(), age.map_or("-".into(), backlog::age_text)),
        None => ("-".to_string(), "-".to_string()),
    };
    // An ETA is a copy's; past the copy there is nothing left to estimate.
    let copying = matches!(m.state.as_str(), "pending" | "copying");
    vec![
        m.id.clone(),
        m.source.clone(),
        m.destination.clone(),
        // A cancelled job's moves keep the state they were in when it was undone.
        if cancelled {
            "cancelled".into()
        } else {
            m.state.clone()
        },
        format!("{}/{}", m.rows_copied, m.rows_total),
        m.rate().map_or("-".into(), |r| format!("{r:.0}")),
        if copying {
            m.eta_seconds().map_or("-".into(), |s| format!("{s}s"))
        } else {
            "-".into()
        },
        m.fence_ms.map_or("-".into(), |f| format!("{f}ms")),
        waiting,
        oldest,
    ]
}

/// Columns as wide as their widest cell, numbers right-aligned.
fn table(header: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .zip(right)
            .map(|((c, w), r)| {
                if *r {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        parts.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

async fn list(opts: JobsOptions) -> Result<()> {
    // The same refusal as `status`: a mistyped catalog URL must not look like an empty one.
    let cat = super::open_existing_ro(&opts.catalog).await?;
    let mut jobs = Vec::new();
    for j in cat.jobs().await? {
        let moves = cat.moves(&j.id).await?;
        jobs.push((j, moves));
    }
    cat.close().await;
    match opts.format {
        Format::Json => {
            let v: Vec<_> = jobs.iter().map(|(j, m)| job_json(j, m)).collect();
            emit(&(serde_json::to_string_pretty(&v)? + "\n"))
        }
        Format::Text if jobs.is_empty() => emit("no jobs\n"),
        Format::Text => {
            let rows: Vec<Vec<String>> = jobs
                .iter()
                .map(|(j, moves)| {
                    let copied: u64 = moves.iter().map(|m| m.rows_copied).sum();
                    let total: u64 = moves.iter().map(|m| m.rows_total).sum();
                    vec![
                        j.id.clone(),
                        j.state.clone(),
                        moves.len().to_string(),
                        format!("{copied}/{total}"),
                        j.created_at.clone(),
                    ]
                })
                .collect();
            emit(&table(
                &["JOB", "STATE", "MOVES", "ROWS", "CREATED"],
                &[false, false, true, true, false],
                &rows,
            ))
        }
    }
}
