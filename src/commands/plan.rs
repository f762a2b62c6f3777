//! `reshard plan`: diff two maps into a plan; print it for review, write it, or check that a
//! committed plan still matches its maps.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;

use super::Format;
use crate::error::{InputError, Stop};
use crate::map::Map;
use crate::plan_check::json_diff;
use crate::planner::{self, PlannerOptions};

#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub from: PathBuf,
    pub to: PathBuf,
    pub output: Option<PathBuf>,
    pub format: Format,
    pub check: Option<PathBuf>,
    pub svg: Option<PathBuf>,
}

pub fn run(opts: PlanOptions) -> i32 {
    match execute(&opts) {
        Ok(()) => 0,
        Err(e) => super::report(e),
    }
}

/// Loads both maps, reporting the problems of both files at once.
pub fn load_maps(from: &Path, to: &Path) -> Result<(Map, Map), InputError> {
    match (Map::load(from), Map::load(to)) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (a, b) => {
            let mut problems = Vec::new();
            for r in [a, b] {
                if let Err(e) = r {
                    problems.extend(e.problems);
                }
            }
            Err(InputError::many(problems))
        }
    }
}

fn execute(opts: &PlanOptions) -> anyhow::Result<()> {
    // Everything is validated and computed before any file is written.
    let (from, to) = load_maps(&opts.from, &opts.to)?;
    let plan = planner::plan_labeled(
        &from,
        &opts.from.display().to_string(),
        &to,
        &opts.to.display().to_string(),
        &PlannerOptions::default(),
    )?;
    let json = plan.to_json();

    if let Some(check) = &opts.check {
        return check_against(check, &json, opts);
    }
    if let Some(out) = &opts.output {
        crate::atomic::write(out, &json)
            .with_context(|| format!("writing the plan to {}", out.display()))?;
    }
    if let Some(svg) = &opts.svg {
        crate::atomic::write(svg, &crate::picture::plan_svg(&plan))
            .with_context(|| format!("writing the picture to {}", svg.display()))?;
    }
    let shown = match opts.format {
        Format::Json if opts.output.is_none() => json,
        Format::Json => String::new(),
        Format::Text => planner::render(&plan),
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(shown.as_bytes())
        .context("writing to stdout")?;
    if let Some(out) = &opts.output {
        if opts.format == Format::Text {
            writeln!(stdout, "\nplan written to {}", out.display()).context("writing to stdout")?;
        }
    }
    Ok(())
}

/// Exit 0 when the committed plan is byte-identical to the recomputed one, 1 with the fields
/// that differ otherwise, 2 when the committed file cannot be read as JSON.
fn check_against(path: &Path, fresh: &str, opts: &PlanOptions) -> anyhow::Result<()> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| InputError::one(format!("{label}: cannot read: {e}")))?;
    if text == fresh {
        println!("{label}: up to date");
        return Ok(());
    }
    let old: Value = serde_json::from_str(&text).map_err(|e| {
        InputError::one(format!(
            "{label}: malformed JSON at line {} column {}",
            e.line(),
            e.column()
        ))
    })?;
    let new: Value = serde_json::from_str(fresh).context("re-reading the recomputed plan")?;
    let mut diffs = Vec::new();
    json_diff("", &old, &new, &mut diffs);
    let mut lines: Vec<String> = diffs.iter().map(|d| d.to_string()).collect();
    if lines.is_empty() {
        lines
            .push("same content, different formatting (regenerate it with reshard plan -o)".into());
    }
    let shown = lines.len().min(MAX_DIFF_LINES);
    let mut msg = format!(
        "{label} does not match the plan recomputed from the maps (committed vs recomputed):\n"
    );
    for l in &lines[..shown] {
        msg.push_str("  ");
        msg.push_str(l);
        msg.push('\n');
    }
    if lines.len() > shown {
        msg.push_str(&format!("  … {} more differences\n", lines.len() - shown));
    }
    msg.push_str(&format!(
        "regenerate it with: reshard plan --from {} --to {} -o {label}",
        opts.from.display(),
        opts.to.display()
    ));
    Err(Stop::Different(msg).into())
}

const MAX_DIFF_LINES: usize = 30;
