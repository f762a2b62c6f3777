//! `reshard verify JOB [--move ID] [--repair] [--audit] [--max-rows-per-sec N] [--format text|json]`.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};

use super::Format;
use crate::catalog::{Access, Catalog};
use crate::error::{InputError, Stop};
use crate::plan::Plan;
use crate::preflight;
use crate::progress::{MoveInfo, Progress, Work};
use crate::verify::{self, audit, Options, Scope, Verifier};

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// None: the most recent job.
    pub job: Option<String>,
    pub catalog: String,
    pub moves: Vec<String>,
    pub repair: bool,
    pub audit: bool,
    /// `table=N` tallies for the audit, as given.
    pub expect_rows: Vec<String>,
    pub format: Format,
    /// Fixed chunk size (no adaptation) when set.
    pub chunk_rows: Option<usize>,
    pub chunk_ms: u64,
    pub max_listed: usize,
    /// The rate cap of this command's reads (None: none).
    pub max_rows_per_sec: Option<u64>,
    pub progress: super::ProgressMode,
}

fn parse_expect(items: &[String]) -> Result<BTreeMap<String, u64>, InputError> {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for it in items {
        match it.split_once('=').map(|(t, n)| (t, n.parse::<u64>())) {
            Some((t, Ok(n))) if crate::ident::is_plain_identifier(t) => {
                out.insert(t.to_string(), n);
            }
            _ => problems.push(format!(
                "--expect-rows {it:?}: expected TABLE=N (a table name and a row count)"
            )),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(InputError::many(problems))
    }
}

pub fn run(opts: VerifyOptions) -> i32 {
    let mut problems = Vec::new();
    let expect = match parse_expect(&opts.expect_rows) {
        Ok(e) => e,
        Err(e) => {
            problems.extend(e.problems);
            BTreeMap::new()
        }
    };
    if opts.max_rows_per_sec == Some(0) {
        problems.push("--max-rows-per-sec: must be at least 1 (leave it out for no cap)".into());
    }
    if opts.chunk_rows == Some(0) {
        problems.push("--chunk-rows: must be at least 1".into());
    }
    if !opts.audit && !opts.expect_rows.is_empty() {
        problems.push("--expect-rows: only with --audit".into());
    }
    if opts.audit && (opts.repair || !opts.moves.is_empty()) {
        problems.push("--audit checks the whole layout: no --repair or --move with it".into());
    }
    if !problems.is_empty() {
        return super::report(InputError::many(problems).into());
    }
    super::block_on(verify_job(opts, expect))
}

async fn verify_job(opts: VerifyOptions, expect: BTreeMap<String, u64>) -> Result<()> {
    if Catalog::open(&opts.catalog, Access::ReadOnly)
        .await?
        .is_none()
    {
        return Err(InputError::one(format!(
            "--catalog: {} holds no jobs (it does not exist)",
            crate::shard_url::redact(&opts.catalog)
        ))
        .into());
    }
    let catalog = Catalog::open_rw(&opts.catalog).await?;
    let job = super::pick_job(&catalog, opts.job.as_deref()).await?;
    let plan = Plan::parse(&job.plan_json, &format!("job {} plan", job.id))?;
    let unknown: Vec<String> = opts
        .moves
        .iter()
        .filter(|m| !plan.moves.iter().any(|p| &p.id == *m))
        .map(|m| format!("--move {m}: job {} has no such move", job.id))
        .collect();
    if !unknown.is_empty() {
        return Err(InputError::many(unknown).into());
    }
    if opts.audit {
        let recorded = catalog.row_counts(&job.id).await?;
        let rep = audit::audit(&job.id, &plan, &recorded, &expect, opts.max_listed).await?;
        catalog
            .verify_save_report(&job.id, None, rep.ok, &serde_json::to_string(&rep)?)
            .await?;
        match opts.format {
            Format::Json => println!("{}", serde_json::to_string_pretty(&rep)?),
            Format::Text => print!("{}", rep.render_text()),
        }
        catalog.close().await;
        if !rep.ok {
            return Err(Stop::Mismatch(format!("audit of job {} found problems", job.id)).into());
        }
        return Ok(());
    }
    let (mut ctx, mut problems) = preflight::connect(&plan).await;
    problems.extend(preflight::describe_all(&mut ctx).await);
    if !problems.is_empty() {
        anyhow::bail!(
            "job {} cannot be verified yet:\n  - {}",
            job.id,
            problems.join("\n  - ")
        );
    }
    let stop = crate::signals::install().context("installing signal handlers")?;
    let mut options = Options {
        target_chunk_ms: opts.chunk_ms,
        max_listed: opts.max_listed,
        ..Options::default()
    };
    if let Some(k) = opts.chunk_rows {
        options.initial_chunk_rows = k;
        options.min_chunk_rows = k;
        options.max_chunk_rows = k;
        options.adapt = false;
    }
    let selected = |id: &str| opts.moves.is_empty() || opts.moves.iter().any(|m| m == id);
    // The rows each move copied are what a full pass compares at the source (a writer may
    // have added some since; the display never shows more done than total).
    let progress = Progress::for_work(
        Work::Verify,
        opts.progress,
        &job.id,
        catalog
            .moves(&job.id)
            .await?
            .into_iter()
            .filter(|r| selected(&r.id))
            .map(|r| MoveInfo {
                id: r.id,
                source: r.source,
                destination: r.destination,
                state: "waiting".into(),
                rows_total: r.rows_copied,
                rows_copied: 0,
            })
            .collect(),
    );
    // This process's throttle of the job is its own: a running apply's cap stays with it.
    crate::throttle::for_job(&job.id).set_rate(opts.max_rows_per_sec);
    let v = Verifier {
        ctx: &ctx,
        catalog: &catalog,
        job: &job.id,
        options,
        stop: Some(&stop),
        progress: Some(&progress),
        paced: opts.max_rows_per_sec.is_some(),
    };
    let mut reports = Vec::new();
    let mut bad = Vec::new();
    // Text reports are printed once the progress display is finished: printed between bar
    // redraws they would be torn on a terminal.
    let mut text = String::new();
    let mut notes = Vec::new();
    for m in plan.moves.iter().filter(|m| selected(&m.id)) {
        progress.set_state(&m.id, "verifying");
        let mut r = match verify::verify_move(&v, m, Scope::Full).await {
            Ok(r) => r,
            Err(e) => {
                progress.set_state(&m.id, "stopped");
                progress.finish();
                if opts.format == Format::Text {
                    print!("{text}");
                }
                return Err(e.context(format!("verifying move {}", m.id)));
            }
        };
        if !r.ok && opts.repair {
            progress.set_state(&m.id, "repairing");
            text.push_str(&r.render_text());
            let (r2, written, deleted) = match verify::repair_move(&v, m).await {
                Ok(x) => x,
                Err(e) => {
                    progress.finish();
                    if opts.format == Format::Text {
                        print!("{text}");
                    }
                    return Err(e.context(format!("repairing move {}", m.id)));
                }
            };
            notes.push(format!(
                "reshard: move {}: repaired ({written} rows written again, {deleted} extra rows \
                 deleted) and verified again",
                m.id
            ));
            r = r2;
        }
        progress.set_state(&m.id, if r.ok { "match" } else { "MISMATCH" });
        if !r.ok {
            bad.push(m.id.clone());
        }
        text.push_str(&r.render_text());
        reports.push(r);
    }
    progress.finish();
    for n in &notes {
        eprintln!("{n}");
    }
    if opts.format == Format::Text {
        print!("{text}");
    }
    if opts.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    catalog.close().await;
    if !bad.is_empty() {
        return Err(Stop::Mismatch(format!(
            "move(s) {} differ between source and destination{}",
            bad.join(", "),
            if opts.repair {
                " even after repair"
            } else {
                "; `--repair` copies the differing rows again"
            }
        ))
        .into());
    }
    Ok(())
}
