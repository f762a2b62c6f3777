//! `reshard suggest`: from measured load to the next map. Pure: every decision here is a
//! function of the current map, the [`Measurements`] (gathered by [`measure`], the only part
//! that does I/O) and the [`Request`]; the same inputs give the same map and report, byte for
//! byte.
//!
//! - Range maps: each range above the target share is split at the median key of its data
//!   (from the measured key quantiles); the upper part goes to the next `--add` shard. Repeated
//!   until no range is above the target or the new shards run out. The key-midpoint split is
//!   shown beside each for contrast.
//! - Rings: nodes from `--add` and/or a larger vnode count, the option that moves the fewest keys
//!   among those that bring the largest predicted share under the target.
//! - Modulo: growing the modulus against moving to a ring; the one asked for is written.

mod hash;
mod loads;
pub mod measure;
mod merge;
mod range;
mod report;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::InputError;
use crate::map::{Bound, Map, Partitioning};
use crate::plan::round_fraction;
use crate::planner::{plan_labeled, PlannerOptions};
use crate::shard_url::ShardUrl;

pub(crate) use loads::Loads;
pub use report::render;

/// Key quantiles measured per range and table (exact pass): ranks `i * rows / QUANTILES`.
/// Sixteen give the exact median of a range and of its halves, quarters and eighths.
pub const QUANTILES: u64 = 16;
/// Vnodes of a ring that a modulo map is moved to.
pub const RING_VNODES: u32 = 64;
/// With `--shards N` the target share is this over N (within 10% of an even split).
pub const SHARDS_SLACK: f64 = 1.10;
/// Without `--max-share` or `--shards`: this over the current shard count.
pub const DEFAULT_SLACK: f64 = 1.25;

/// One table's measured load on one shard.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TableLoad {
    pub rows: u64,
    /// Table size on disk where the server reports it cheaply (not on SQLite).
    pub bytes: Option<u64>,
    /// Rows inserted, updated and deleted per second over the sampling window, where the
    /// server keeps such counters (see [`ShardLoad::writes_unavailable`] otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writes_per_second: Option<f64>,
}

/// A shard's measured load, per table.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ShardLoad {
    pub tables: BTreeMap<String, TableLoad>,
    /// Why this shard has no write rates although a window was sampled (the server keeps no
    /// counters, or they are switched off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writes_unavailable: Option<String>,
    /// The counters the write rates come from (`pg_stat_user_tables`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writes_source: Option<String>,
}

impl ShardLoad {
    pub fn rows(&self) -> u64 {
        self.tables.values().map(|t| t.rows).sum()
    }
    pub fn bytes(&self) -> Option<u64> {
        self.tables.values().map(|t| t.bytes).sum()
    }
    /// Writes per second over every table, when each has a rate.
    pub fn writes(&self) -> Option<f64> {
        if self.writes_unavailable.is_some() || self.tables.is_empty() {
            return None;
        }
        self.tables.values().map(|t| t.writes_per_second).sum()
    }
}

/// What the shares (and so the target) are computed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Weigh {
    /// Rows counted per shard (and per range).
    #[default]
    Rows,
    /// Rows inserted, updated and deleted per second over the sampling window.
    Writes,
    /// Table sizes on disk (data and indexes) as the server reports them.
    Bytes,
}

impl Weigh {
    pub fn word(self) -> &'static str {
        match self {
            Weigh::Rows => "rows",
            Weigh::Writes => "writes",
            Weigh::Bytes => "bytes",
        }
    }
}

/// How a table's key quantiles were obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum QuantileMethod {
    /// By key order: `ORDER BY key LIMIT 1 OFFSET n`.
    Exact,
    /// From PostgreSQL's `pg_stats` histogram (approximate).
    Histogram,
}

/// A table's keys within one range: its row count and points of its key distribution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeySample {
    pub rows: u64,
    /// `(key, rank)`: rank is how many of the range's rows of this table have a smaller key.
    /// Increasing in both; the first is the smallest key (rank 0), the last the largest.
    pub points: Vec<(Bound, u64)>,
    pub method: QuantileMethod,
}

/// The data of one range of a range map, per table.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RangeData {
    pub tables: BTreeMap<String, KeySample>,
}

/// Everything suggest decides from. Built by [`measure`] from the shards, or by hand in tests.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Measurements {
    /// Every shard of the map that owns keys.
    pub shards: BTreeMap<String, ShardLoad>,
    /// Range maps only: one per range, in the map's (sorted) order.
    pub ranges: Vec<RangeData>,
    /// The write-rate sampling window actually measured, in seconds (None: not sampled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_seconds: Option<f64>,
    /// What the measurement itself has to say (which quantile pass, and why).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// What the new map must achieve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// No shard (range, for range maps) above this share of the rows.
    MaxShare(f64),
    /// End with this many shards, within [`SHARDS_SLACK`] of an even split where possible.
    Shards(usize),
    /// Neither given: [`DEFAULT_SLACK`] over the current shard count.
    Default,
}

/// The kind of map to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToKind {
    Same,
    Ring,
    Modulo,
}

/// The choice's inputs besides the map and the measurements.
#[derive(Debug, Clone)]
pub struct Request {
    pub target: Target,
    /// New shards that may be added, in the order they are to be used.
    pub add: Vec<(String, ShardUrl)>,
    pub to_kind: ToKind,
    /// What the shares are computed from.
    pub weigh: Weigh,
    /// Range maps: shards whose ranges are merged into a neighbour, in the order given.
    pub remove: Vec<String>,
}

/// A shard's rows and share, before (measured) or after (predicted).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShardRow {
    pub shard: String,
    pub rows: u64,
    /// Share of the load basis ([`Report::weigh`]): of the rows by default.
    pub share: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writes_per_second: Option<f64>,
}

/// One range split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Split {
    pub from: Option<Bound>,
    pub to: Option<Bound>,
    pub shard: String,
    pub new_shard: String,
    pub share_before: f64,
    /// The split key: `[from, at)` stays, `[at, to)` moves to `new_shard`.
    pub at: Bound,
    pub rows_lower: u64,
    pub rows_upper: u64,
    /// The key-midpoint split, `(start + end) / 2`, for contrast (integer keys only); its rows
    /// are interpolated between the measured quantiles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub midpoint: Option<MidpointSplit>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MidpointSplit {
    pub at: Bound,
    pub rows_lower: u64,
    pub rows_upper: u64,
}

/// A range of a removed shard merged into its neighbour.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Merge {
    pub from: Option<Bound>,
    pub to: Option<Bound>,
    pub shard: String,
    pub into: String,
    /// The range's share of the load basis.
    pub share: f64,
    /// The share of the merged range: the neighbour's adjacent range(s) and this one.
    pub merged_share: f64,
    pub rows: u64,
    /// The other neighbour and the share its merge would have given (None: there is none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other: Option<(String, f64)>,
}

/// One option weighed for a ring or a modulo map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub name: String,
    pub kind: String,
    pub nodes_added: Vec<String>,
    pub vnodes: Option<u32>,
    /// Fraction of the key space that moves (the planner's `moved_fraction`).
    pub moved_fraction: f64,
    pub rows_moved: u64,
    pub max_share_after: f64,
    pub meets_target: bool,
}

/// Why suggest chose what it wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub kind: String,
    pub written_kind: String,
    /// What shares are of: rows, writes or bytes.
    pub weigh: Weigh,
    pub target_share: f64,
    pub target: String,
    pub total_rows: u64,
    pub before: Vec<ShardRow>,
    pub after: Vec<ShardRow>,
    pub rows_moved: u64,
    /// The key-space fraction `reshard plan` of the written map will report.
    pub moved_fraction: f64,
    pub reached_target: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub merges: Vec<Merge>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub splits: Vec<Split>,
    /// Rings: each node's share of the key space under the current vnode count.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub key_shares: BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<Candidate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chosen: Option<String>,
    pub added_shards: Vec<String>,
    pub unused_shards: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed_shards: Vec<String>,
    /// The write-rate sampling window in seconds (None: not sampled, `--sample 0s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_seconds: Option<f64>,
    /// Shards whose write rates could not be measured, and why.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub writes_unavailable: BTreeMap<String, String>,
    /// Where each shard's write rates come from.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub writes_sources: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub quantiles: BTreeMap<String, QuantileMethod>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// The new map and why.
#[derive(Debug, Clone)]
pub struct Suggestion {
    pub map: Map,
    pub report: Report,
}

/// The target share for a map with `current` shards.
pub fn target_share(target: Target, current: usize) -> f64 {
    match target {
        Target::MaxShare(s) => s,
        Target::Shards(n) => (SHARDS_SLACK / n.max(1) as f64).min(1.0),
        Target::Default => (DEFAULT_SLACK / current.max(1) as f64).min(1.0),
    }
}

/// How many of the `--add` shards may be used.
pub(crate) fn budget(req: &Request, current: usize) -> usize {
    match req.target {
        Target::Shards(n) => n.saturating_sub(current).min(req.add.len()),
        _ => req.add.len(),
    }
}

fn describe_target(t: Target, share: f64) -> String {
    match t {
        Target::MaxShare(_) => format!("--max-share {}", round_fraction(share)),
        Target::Shards(n) => format!("--shards {n}: at most {:.1}% each", share * 100.0),
        Target::Default => format!(
            "default: at most {:.1}% each ({DEFAULT_SLACK} x an even share)",
            share * 100.0
        ),
    }
}

/// Checks the request against the map: problems name the option (exit 2, nothing written).
pub fn check_request(map: &Map, req: &Request, label: &str) -> Result<(), InputError> {
    let mut problems = check_remove(map, req, label);
    let current = remaining(map, req);
    let removing = if req.remove.is_empty() {
        String::new()
    } else {
        " left after --remove".to_string()
    };
    match req.target {
        Target::MaxShare(s) if !(s > 0.0 && s <= 1.0) => {
            problems.push(format!("--max-share: {s} is not a share in (0, 1]"))
        }
        Target::Shards(n) if n < current => problems.push(format!(
            "--shards: {n} is fewer than the {current} shards of {label}{removing}; remove \
             shards with --remove NAME (range maps)"
        )),
        Target::Shards(n) if n > current + req.add.len() => problems.push(format!(
            "--shards: {n} shards need {} new ones, but --add names {}",
            n - current,
            req.add.len()
        )),
        _ => {}
    }
    for (i, (name, _)) in req.add.iter().enumerate() {
        if map.shards.contains_key(name) {
            problems.push(format!(
                "--add[{i}]: shard {name} is already in {label} (shards.{name})"
            ));
        }
    }
    let kind = map.partitioning.kind();
    match (kind, req.to_kind) {
        ("range", ToKind::Ring | ToKind::Modulo) => problems.push(format!(
            "--to-kind: {label} is a range map; suggest splits its ranges and writes a range map"
        )),
        ("ring", ToKind::Modulo) => problems.push(format!(
            "--to-kind modulo: {label} is a ring; moving a ring to modulo would move most keys"
        )),
        _ => {}
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(InputError::many(problems))
    }
}

/// The shards that own keys once `--remove` has taken its own.
fn remaining(map: &Map, req: &Request) -> usize {
    let owners = map.partitioning.owners();
    owners.iter().filter(|s| !req.remove.contains(s)).count()
}

fn check_remove(map: &Map, req: &Request, label: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if req.remove.is_empty() {
        return problems;
    }
    let kind = map.partitioning.kind();
    if kind != "range" {
        problems.push(format!(
            "--remove: {label} is a {kind} map; --remove merges the ranges of a range map into \
             their neighbours"
        ));
        return problems;
    }
    let owners = map.partitioning.owners();
    for (i, name) in req.remove.iter().enumerate() {
        if req.remove[..i].contains(name) {
            problems.push(format!("--remove[{i}]: shard {name} is given twice"));
        } else if !owners.contains(name) {
            problems.push(format!(
                "--remove[{i}]: {name} owns no range of {label} (its shards that do: {})",
                owners.join(", ")
            ));
        }
    }
    if problems.is_empty() && remaining(map, req) == 0 {
        problems.push(format!(
            "--remove: that is every shard of {label}; at least one must keep the keys"
        ));
    }
    problems
}

/// The pure choice: the new map and the report, from the map and its measurements.
pub fn suggest(map: &Map, m: &Measurements, req: &Request) -> Result<Suggestion, InputError> {
    check_request(map, req, "the map")?;
    let mut s = match &map.partitioning {
        Partitioning::Range { ranges } => range::suggest(map, ranges, m, req),
        Partitioning::Ring { .. } => hash::suggest_ring(map, m, req),
        Partitioning::Modulo { .. } => hash::suggest_modulo(map, m, req),
    }?;
    s.report.sample_seconds = m.sample_seconds;
    s.report.writes_unavailable = Loads::writes_unavailable(m);
    s.report.writes_sources = m
        .shards
        .iter()
        .filter_map(|(n, l)| l.writes_source.clone().map(|w| (n.clone(), w)))
        .collect();
    s.report.notes.extend(m.notes.iter().cloned());
    let pg = s
        .report
        .writes_sources
        .values()
        .any(|v| v == "pg_stat_user_tables");
    if pg && m.sample_seconds.is_some_and(|t| t < 2.0) {
        s.report.notes.push(
            "a window under 2 s can fall between two of a PostgreSQL session's flushes (about one \
             a second) and read 0 writes/s for a busy shard: sample 2 s or more"
                .into(),
        );
    }
    // The planner has the last word on what moves: the same call `reshard plan` makes.
    let plan = plan_labeled(map, "from", &s.map, "to", &PlannerOptions::default())?;
    // `+ 0.0`: an empty sum is -0.0, which would print as such.
    s.report.moved_fraction = plan.summary.moved_fraction + 0.0;
    // Options of a sampled plan were weighed on fewer keys; the chosen one shows the full plan.
    if let Some(c) = &s.report.chosen {
        for o in s.report.options.iter_mut().filter(|o| &o.name == c) {
            o.moved_fraction = s.report.moved_fraction;
        }
    }
    for (name, url) in &s.map.shards {
        if url.redacted() != *url {
            s.report.notes.push(format!(
                "shard {name}: the new map holds its password as {}, as plans do; give the \
                 URL as env:NAME or set RESHARD_SHARD_{}_URL",
                crate::shard_url::REDACTED,
                name.to_ascii_uppercase().replace('-', "_")
            ));
        }
    }
    Ok(s)
}

/// The map with `added` shards (from the request) and a new partitioning; replicas kept.
pub(crate) fn with_partitioning(
    map: &Map,
    req: &Request,
    added: &[String],
    partitioning: Partitioning,
) -> Map {
    let mut out = map.clone();
    for (name, url) in &req.add {
        if added.contains(name) {
            out.shards.insert(name.clone(), url.clone());
        }
    }
    out.partitioning = partitioning;
    out
}

/// Shares are shown to a millionth: finer digits only tell summation order.
pub(crate) fn round_share(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

pub(crate) fn max_share(rows: &BTreeMap<String, f64>) -> f64 {
    let total: f64 = rows.values().sum();
    if total <= 0.0 {
        return 0.0;
    }
    rows.values().cloned().fold(0.0, f64::max) / total
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_load;
