//! `reshard status` and `reshard jobs`: read-only views of the catalog.

use anyhow::Result;
use serde_json::json;

use super::Format;
use crate::catalog::{Access, Catalog, JobRow, MoveRow};
use crate::error::InputError;
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
    match opts.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&job_json(&job, &moves))?),
        Format::Text => {
            println!(
                "job {}  {}  (routing version {}, created {})",
                job.id, job.state, job.routing_version, job.created_at
            );
            if let Some(e) = &job.last_error {
                println!("last error: {e}");
            }
            println!(
                "{:<5} {:<12} {:<12} {:<9} {:>21} {:>9} {:>7}",
                "MOVE", "SOURCE", "DESTINATION", "STATE", "ROWS", "ROWS/S", "ETA"
            );
            for m in &moves {
                println!(
                    "{:<5} {:<12} {:<12} {:<9} {:>21} {:>9} {:>7}",
                    m.id,
                    m.source,
                    m.destination,
                    m.state,
                    format!("{}/{}", m.rows_copied, m.rows_total),
                    m.rate().map(|r| format!("{r:.0}")).unwrap_or("-".into()),
                    m.eta_seconds()
                        .map(|s| format!("{s}s"))
                        .unwrap_or("-".into()),
                );
                if let Some(e) = &m.last_error {
                    println!("      last error: {e}");
                }
            }
        }
    }
    Ok(())
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
