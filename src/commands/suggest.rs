//! `reshard suggest`: measure the shards of a map (read-only), and write the next map with the
//! reasons for it. Input is checked in full before any connection (exit 2, every problem named,
//! nothing written); the decision itself is the pure [`crate::suggest::suggest`].

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;

use super::Format;
use crate::error::InputError;
use crate::ident::is_shard_name;
use crate::map::Map;
use crate::shard_url::ShardUrl;
use crate::suggest::measure::{measure, MeasureOptions};
use crate::suggest::{self, check_request, Request, Target, ToKind, Weigh};

#[derive(Debug, Clone)]
pub struct SuggestOptions {
    pub from: PathBuf,
    pub output: PathBuf,
    pub target: Target,
    /// `NAME=URL` as given.
    pub add: Vec<String>,
    pub format: Format,
    pub exact: bool,
    pub to_kind: ToKind,
    /// The write-rate sampling window as given (`5s`; `0s` turns it off).
    pub sample: String,
    pub weigh: Weigh,
    /// `--remove NAME` as given.
    pub remove: Vec<String>,
}

pub fn run(opts: SuggestOptions) -> i32 {
    let (map, req, measure) = match prepare(&opts) {
        Ok(v) => v,
        Err(e) => return super::report(e.into()),
    };
    super::block_on(execute(opts, map, req, measure))
}

/// Parses `--add NAME=URL` entries; problems name the entry.
pub fn parse_add(given: &[String]) -> Result<Vec<(String, ShardUrl)>, Vec<String>> {
    let (mut out, mut problems) = (Vec::new(), Vec::new());
    for (i, a) in given.iter().enumerate() {
        let Some((name, url)) = a.split_once('=') else {
            problems.push(format!("--add[{i}]: expected NAME=URL"));
            continue;
        };
        if !is_shard_name(name) {
            problems.push(format!(
                "--add[{i}]: shard name {name:?}: letters, digits, '_' and '-', starting with a \
                 letter, at most 63"
            ));
            continue;
        }
        if out.iter().any(|(n, _): &(String, ShardUrl)| n == name) {
            problems.push(format!("--add[{i}]: shard {name} is given twice"));
            continue;
        }
        match ShardUrl::parse(url) {
            Ok(u) => out.push((name.to_string(), u)),
            // ShardUrl's message never quotes a password (it names the scheme it expected).
            Err(_) => problems.push(format!(
                "--add[{i}]: shard {name}: not a sqlite:, postgres://, mysql:// or env:NAME URL"
            )),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Everything checked before any connection: the map, the options, the output path.
fn prepare(opts: &SuggestOptions) -> Result<(Map, Request, MeasureOptions), InputError> {
    let label = opts.from.display().to_string();
    let mut problems = Vec::new();
    let map = Map::load(&opts.from)
        .map_err(|e| problems.extend(e.problems))
        .ok();
    let add = parse_add(&opts.add)
        .map_err(|p| problems.extend(p))
        .unwrap_or_default();
    if opts.output == opts.from {
        problems.push(format!(
            "-o: {} is the current map (--from); write the new map to another file",
            opts.output.display()
        ));
    }
    let sample = super::online::parse_duration_or_off("--sample", &opts.sample)
        .map_err(|e| problems.extend(e.problems))
        .unwrap_or_default();
    if opts.weigh == Weigh::Writes && sample.is_zero() && problems.is_empty() {
        problems.push(format!(
            "--weigh writes: write rates need a sampling window, and --sample {} turns it off",
            opts.sample
        ));
    }
    let req = Request {
        target: opts.target,
        add,
        to_kind: opts.to_kind,
        weigh: opts.weigh,
        remove: opts.remove.clone(),
    };
    let measure = MeasureOptions {
        exact: opts.exact,
        sample,
    };
    if let Some(map) = &map {
        if let Err(e) = check_request(map, &req, &label) {
            problems.extend(e.problems);
        }
    }
    match map {
        Some(map) if problems.is_empty() => Ok((map, req, measure)),
        _ => Err(InputError::many(problems)),
    }
}

async fn execute(
    opts: SuggestOptions,
    map: Map,
    req: Request,
    how: MeasureOptions,
) -> anyhow::Result<()> {
    let label = opts.from.display().to_string();
    let m = measure(&map, &label, how).await?;
    let s = suggest::suggest(&map, &m, &req)?;
    // The written map must read back as a valid map: parse what is about to be written.
    let mut text = serde_json::to_string_pretty(&s.map).context("encoding the new map")?;
    text.push('\n');
    let out_label = opts.output.display().to_string();
    Map::parse(&text, &out_label)
        .map_err(|e| anyhow::anyhow!("internal error: the suggested map is invalid: {e}"))?;
    crate::atomic::write(&opts.output, &text)
        .with_context(|| format!("writing the map to {out_label}"))?;
    let shown = match opts.format {
        Format::Json => s.report.to_json(),
        Format::Text => format!(
            "{}\nmap written to {out_label}; next: reshard plan --from {label} --to {out_label}\n",
            suggest::render(&s.report)
        ),
    };
    std::io::stdout()
        .lock()
        .write_all(shown.as_bytes())
        .context("writing to stdout")?;
    Ok(())
}
