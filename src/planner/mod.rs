//! The planner: a pure function from two maps to a plan. No I/O.
//!
//! A key moves when its owner differs between the maps; a move gathers every key that goes from
//! one source to one destination. Same-kind diffs describe each move exactly (`modulo`, `range`,
//! `ring`); other pairs describe moves by owners and compute fractions analytically where they
//! can, else from a deterministic sample (`mixed`).

mod measure;
mod mixed;
mod modulo;
mod range;
mod ring;
pub mod segments;
pub mod text;

use std::collections::{BTreeMap, BTreeSet};

use crate::error::InputError;
use crate::map::{KeyKind, Map, Partitioning};
use crate::plan::{
    fingerprint, round_fraction, Move, Plan, Segments, Summary, PLAN_FORMAT_VERSION,
};

pub use measure::text_point;
pub use segments::{move_for_key, segment_contains, MoveFinder};
pub use text::render;

/// Keys drawn when fractions cannot be computed analytically.
pub const DEFAULT_SAMPLE_KEYS: u64 = 1_000_000;
/// Largest lcm(N, M) whose residues a modulo plan lists; beyond it, moves are described by
/// owners (a million residues is already more than any SQL filter should carry).
pub const MAX_RESIDUE_MODULUS: u64 = 1_000_000;

#[derive(Debug, Clone)]
pub struct PlannerOptions {
    /// Keys sampled for a sampled plan. Plans written by the CLI always use the default;
    /// tests lower it, since which moves exist never depends on the sample.
    pub sample_keys: u64,
}

impl Default for PlannerOptions {
    fn default() -> Self {
        PlannerOptions {
            sample_keys: DEFAULT_SAMPLE_KEYS,
        }
    }
}

/// How the fractions of a plan were obtained (`summary.method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// Computed from the maps alone (digests taken as uniform over their space).
    Exact,
    /// A range map against a hash-based map: computed analytically, taking a key's digest as
    /// independent of where the key sits in key order.
    Independent,
    /// Estimated from this many deterministic sample keys.
    Sampled(u64),
}

/// A move before ids are given.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub source: String,
    pub destination: String,
    pub fraction: f64,
    pub segments: Segments,
}

/// Diffs two maps into a plan, labelling problems "from" and "to".
pub fn plan(from: &Map, to: &Map) -> Result<Plan, InputError> {
    plan_labeled(from, "from", to, "to", &PlannerOptions::default())
}

/// Diffs two maps into a plan; problems name the maps by `from_label` / `to_label` (file names).
pub fn plan_labeled(
    from: &Map,
    from_label: &str,
    to: &Map,
    to_label: &str,
    opts: &PlannerOptions,
) -> Result<Plan, InputError> {
    check_compatible(from, from_label, to, to_label)?;
    let fc = from.compile();
    let tc = to.compile();
    let shares_before = measure::shares(&from.partitioning, &fc);
    let shares_after = measure::shares(&to.partitioning, &tc);

    let same = match (&from.partitioning, &to.partitioning) {
        (
            Partitioning::Modulo {
                hash: h1,
                shards: a,
            },
            Partitioning::Modulo {
                hash: h2,
                shards: b,
            },
        ) if h1 == h2 => Some(modulo::diff(*h1, a, b)),
        (Partitioning::Range { ranges: a }, Partitioning::Range { ranges: b }) => {
            Some(range::diff(a, b))
        }
        (Partitioning::Ring { hash: h1, .. }, Partitioning::Ring { hash: h2, .. }) if h1 == h2 => {
            Some(ring::diff(&fc, &tc))
        }
        _ => None,
    };
    let (drafts, method) = match same {
        Some(d) => (d, Method::Exact),
        None => mixed::diff(
            from,
            to,
            &fc,
            &tc,
            &shares_before,
            &shares_after,
            opts.sample_keys,
        ),
    };

    let moved: f64 = drafts.iter().map(|d| d.fraction).sum();
    let mut drafts = drafts;
    drafts.sort_by(|a, b| (&a.source, &a.destination).cmp(&(&b.source, &b.destination)));
    let moves: Vec<Move> = drafts
        .into_iter()
        .enumerate()
        .map(|(i, d)| Move {
            id: format!("m{}", i + 1),
            source: d.source,
            destination: d.destination,
            fraction: round_fraction(d.fraction),
            segments: d.segments,
        })
        .collect();

    let before: BTreeSet<&String> = shares_before.keys().collect();
    let after: BTreeSet<&String> = shares_after.keys().collect();
    let added: Vec<String> = after.difference(&before).map(|s| s.to_string()).collect();
    let removed: Vec<String> = before.difference(&after).map(|s| s.to_string()).collect();
    let minimum_fraction = (!added.is_empty() || !removed.is_empty())
        .then(|| round_fraction(minimum_to_balance(&shares_before, &shares_after)));
    let ring_equivalent_fraction = matches!(
        (&from.partitioning, &to.partitioning),
        (Partitioning::Modulo { .. }, Partitioning::Modulo { .. })
    )
    .then(|| {
        let common = before.intersection(&after).count() as f64;
        let union = before.union(&after).count() as f64;
        round_fraction(1.0 - common / union)
    });
    let (method_name, sample_keys) = match method {
        Method::Exact => ("exact", None),
        Method::Independent => ("independent", None),
        Method::Sampled(n) => ("sampled", Some(n)),
    };
    let summary = Summary {
        moved_fraction: round_fraction(moved),
        method: method_name.to_string(),
        sample_keys,
        balance_before: round_fraction(balance(&shares_before)),
        balance_after: round_fraction(balance(&shares_after)),
        shares_before: rounded(shares_before),
        shares_after: rounded(shares_after),
        added_shards: added,
        removed_shards: removed,
        minimum_fraction,
        ring_equivalent_fraction,
        rows: None,
    };
    Ok(Plan {
        format_version: PLAN_FORMAT_VERSION,
        fingerprint: fingerprint(from, to),
        from: from.redacted(),
        to: to.redacted(),
        summary,
        moves,
    })
}

fn rounded(m: BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    m.into_iter().map(|(k, v)| (k, round_fraction(v))).collect()
}

/// Largest share over the mean share.
fn balance(shares: &BTreeMap<String, f64>) -> f64 {
    if shares.is_empty() {
        return 1.0;
    }
    let max = shares.values().cloned().fold(0f64, f64::max);
    max * shares.len() as f64
}

/// The least any scheme must move to go from `before` to an even split over the new owners:
/// every key a shard is short of its even share has to come from somewhere. From N balanced
/// shards plus k new ones this is k/(N+k).
fn minimum_to_balance(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> f64 {
    let target = 1.0 / after.len() as f64;
    after
        .keys()
        .map(|s| (target - before.get(s).copied().unwrap_or(0.0)).max(0.0))
        .sum()
}

/// Both maps must shard the same tables by the same keys, with key types both can route.
fn check_compatible(
    from: &Map,
    from_label: &str,
    to: &Map,
    to_label: &str,
) -> Result<(), InputError> {
    let mut problems = Vec::new();
    let index = |m: &Map| -> BTreeMap<String, (usize, String)> {
        m.tables
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.to_ascii_lowercase(), (i, t.key.clone())))
            .collect()
    };
    let (a, b) = (index(from), index(to));
    for (name, (i, key)) in &b {
        match a.get(name) {
            None => problems.push(format!(
                "{to_label}: tables[{i}].name: table {name} is not in {from_label}; both maps must list the same tables"
            )),
            Some((_, k)) if k != key => problems.push(format!(
                "{to_label}: tables[{i}].key: table {name} is sharded by {key} here but by {k} in {from_label}"
            )),
            _ => {}
        }
    }
    for (name, (i, _)) in &a {
        if !b.contains_key(name) {
            problems.push(format!(
                "{from_label}: tables[{i}].name: table {name} is not in {to_label}; both maps must list the same tables"
            ));
        }
    }
    let (ka, kb) = (from.partitioning.key_kind(), to.partitioning.key_kind());
    if ka.unify(kb).is_none() {
        problems.push(format!(
            "{to_label}: partitioning: routes {} keys, but {from_label} routes {} keys",
            kb.name(),
            ka.name()
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(InputError::many(problems))
    }
}

/// The key kind both maps route (integer when either needs integers).
pub fn common_key_kind(from: &Map, to: &Map) -> KeyKind {
    from.partitioning
        .key_kind()
        .unify(to.partitioning.key_kind())
        .unwrap_or(KeyKind::Any)
}

/// Accumulates drafts per (source, destination).
pub(crate) struct Acc {
    map: BTreeMap<(String, String), (f64, Segments)>,
}

impl Acc {
    pub fn new() -> Self {
        Acc {
            map: BTreeMap::new(),
        }
    }

    /// Adds `fraction` to the pair's move, creating it with `empty` segments; returns them.
    pub fn add(
        &mut self,
        source: &str,
        destination: &str,
        fraction: f64,
        empty: impl FnOnce() -> Segments,
    ) -> &mut Segments {
        let e = self
            .map
            .entry((source.to_string(), destination.to_string()))
            .or_insert_with(|| (0.0, empty()));
        e.0 += fraction;
        &mut e.1
    }

    pub fn into_drafts(self) -> Vec<Draft> {
        self.map
            .into_iter()
            .map(|((source, destination), (fraction, segments))| Draft {
                source,
                destination,
                fraction,
                segments,
            })
            .collect()
    }
}
