//! `reshard log [JOB]`: the job's history from the catalog's `events` table, every state
//! change, request, flip and fence with its time; `--follow` keeps printing new events until
//! the job is completed or cancelled.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::json;

use super::Format;
use crate::catalog::EventRow;
use crate::job::JobState;

#[derive(Debug, Clone)]
pub struct LogOptions {
    pub job: Option<String>,
    pub catalog: String,
    pub format: Format,
    pub follow: bool,
}

/// How often `--follow` reads new events.
const POLL: Duration = Duration::from_millis(500);

pub fn run(opts: LogOptions) -> i32 {
    super::block_on(log(opts))
}

async fn log(opts: LogOptions) -> Result<()> {
    if opts.follow {
        crate::signals::exit_on_signal().context("installing signal handlers")?;
    }
    let cat = super::open_existing_ro(&opts.catalog).await?;
    let result = async {
        let job = super::pick_job(&cat, opts.job.as_deref()).await?;
        let mut last = i64::MIN;
        loop {
            let fresh: Vec<EventRow> = cat
                .events(&job.id)
                .await?
                .into_iter()
                .filter(|e| e.id > last)
                .collect();
            if let Some(e) = fresh.last() {
                last = e.id;
            }
            if !emit(&render(&fresh, opts.format))? {
                return Ok(());
            }
            let state = cat
                .job(&job.id)
                .await?
                .and_then(|j| JobState::parse(&j.state));
            if !opts.follow || state.is_some_and(|s| s.finished()) {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }
    .await;
    cat.close().await;
    result
}

fn render(events: &[EventRow], format: Format) -> String {
    let mut out = String::new();
    for e in events {
        match format {
            Format::Json => {
                let v = json!({"id": e.id, "at": e.at, "move": e.move_id, "kind": e.kind,
                               "detail": e.detail});
                let _ = writeln!(out, "{v}");
            }
            Format::Text => {
                let mv = e.move_id.as_deref().unwrap_or("-");
                let head = format!("{}  {mv:<4} {:<14} ", e.at, e.kind);
                let indent = " ".repeat(head.chars().count());
                let _ = writeln!(
                    out,
                    "{}",
                    super::wrap(&format!("{head}{}", e.detail), 100, &indent)
                );
            }
        }
    }
    out
}

/// Writes to stdout; false when the reader has gone (`reshard log | head`), which ends the log
/// quietly.
fn emit(text: &str) -> Result<bool> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        r => r.map(|()| true).context("writing to stdout"),
    }
}
