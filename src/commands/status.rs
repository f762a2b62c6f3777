//! `reshard status` and `reshard jobs`: read-only views of the catalog. For an unfinished job,
//! status also reads the change logs on its shards (src/backlog.rs): what waits to be applied,
//! and whether any process is applying it.

use anyhow::Result;
use serde_json::json;

use super::Format;
use crate::backlog::{self, LogBacklog, ShardLogs};
use crate::catalog::{Access, Catalog, JobRow, MoveRow};
use crate::error::InputError;
use crate::job::JobState;
use crate::shard_url::redact;

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

async fn open(url: &str) -> Result<Option<Catalog>> {
    Catalog::open(url, Access::ReadOnly).await
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
        "routing_version": j.routing_version,
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
    let Some(cat) = open(&opts.catalog).await? else {
        return Err(InputError::one(format!(
            "--catalog: {} holds no jobs (it does not exist)",
            redact(&opts.catalog)
        ))
        .into());
    };
    let job = match &opts.job {
        Some(id) => cat.job(id).await?,
        None => cat.jobs().await?.into_iter().next(),
    };
    let Some(job) = job else {
        return Err(InputError::one(match &opts.job {
            Some(id) => format!("job {id}: not in the catalog"),
            None => "no jobs in the catalog".to_string(),
        })
        .into());
    };
    let moves = cat.moves(&job.id).await?;
    cat.close().await;
    let logs = Logs::read(&job).await;
    match opts.format {
        Format::Json => {
            let mut v = job_json(&job, &moves);
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
            println!("{}", serde_json::to_string_pretty(&v)?)
        }
        Format::Text => print_text(&job, &moves, &logs),
    }
    Ok(())
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

fn print_text(job: &JobRow, moves: &[MoveRow], logs: &Logs) {
    println!(
        "job {}  {}  (routing version {}, created {})",
        job.id, job.state, job.routing_version, job.created_at
    );
    if let Some(e) = &job.last_error {
        println!("last error: {e}");
    }
    println!(
        "{:<5} {:<12} {:<12} {:<11} {:>17} {:>9} {:>7} {:>8} {:>7}",
        "MOVE", "SOURCE", "DESTINATION", "STATE", "ROWS", "ROWS/S", "ETA", "WAITING", "OLDEST"
    );
    for m in moves {
        let (waiting, oldest) = match logs.waiting(m) {
            Some((_, n, age)) => (n.to_string(), age.map_or("-".into(), backlog::age_text)),
            None => ("-".to_string(), "-".to_string()),
        };
        println!(
            "{:<5} {:<12} {:<12} {:<11} {:>17} {:>9} {:>7} {:>8} {:>7}",
            m.id,
            m.source,
            m.destination,
            m.state,
            format!("{}/{}", m.rows_copied, m.rows_total),
            m.rate().map(|r| format!("{r:.0}")).unwrap_or("-".into()),
            m.eta_seconds()
                .map(|s| format!("{s}s"))
                .unwrap_or("-".into()),
            waiting,
            oldest,
        );
        if let Some(e) = &m.last_error {
            println!("      last error: {e}");
        }
    }
    if !logs.read.is_empty() {
        let note = "WAITING: change-log entries not yet applied at the shard the move reads (its \
                    destination once flipped, its source before), shared by the moves of that shard";
        println!("{}", wrap(note, 100, "  "));
    }
    for w in &logs.warnings {
        println!("{}", wrap(&format!("warning: {w}"), 100, "  "));
    }
}

/// Breaks `text` at spaces so that no line passes `width` columns (a word longer than that
/// keeps its own line); continuation lines start with `indent`.
fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut col = 0;
    for word in text.split(' ') {
        let n = word.chars().count();
        if col > 0 && col + 1 + n > width {
            out.push('\n');
            out.push_str(indent);
            col = indent.chars().count();
        } else if col > 0 {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += n;
    }
    out
}

async fn list(opts: JobsOptions) -> Result<()> {
    let jobs = match open(&opts.catalog).await? {
        Some(cat) => {
            let mut out = Vec::new();
            for j in cat.jobs().await? {
                let moves = cat.moves(&j.id).await?;
                out.push((j, moves));
            }
            cat.close().await;
            out
        }
        None => Vec::new(),
    };
    match opts.format {
        Format::Json => {
            let v: Vec<_> = jobs.iter().map(|(j, m)| job_json(j, m)).collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Text => {
            if jobs.is_empty() {
                println!("no jobs");
                return Ok(());
            }
            println!(
                "{:<20} {:<12} {:>6} {:>21}  {:<24}",
                "JOB", "STATE", "MOVES", "ROWS", "CREATED"
            );
            for (j, moves) in &jobs {
                let copied: u64 = moves.iter().map(|m| m.rows_copied).sum();
                let total: u64 = moves.iter().map(|m| m.rows_total).sum();
                println!(
                    "{:<20} {:<12} {:>6} {:>21}  {:<24}",
                    j.id,
                    j.state,
                    moves.len(),
                    format!("{copied}/{total}"),
                    j.created_at
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn warnings_wrap_within_the_width() {
        let text = "warning: ".to_string() + &"word ".repeat(60);
        let w = super::wrap(text.trim_end(), 40, "  ");
        assert!(w.lines().all(|l| l.chars().count() <= 40), "{w}");
        assert!(w.lines().skip(1).all(|l| l.starts_with("  ")), "{w}");
        assert_eq!(w.split_whitespace().count(), 61, "no word lost");
    }
}
