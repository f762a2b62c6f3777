//! The plan document: what `reshard plan` writes and `reshard apply` carries out.
//!
//! Field names here are a contract (docs/plan-format.md): reviewers read them, CI diffs them,
//! and execution relies on them. Floats are rounded to a fixed number of digits so that the
//! same inputs give byte-identical output on every machine.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha1::{Digest, Sha1};

use crate::error::InputError;
use crate::map::{Bound, Map};

pub const PLAN_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub format_version: u32,
    /// sha1 over the canonical (redacted) from and to maps; see [`fingerprint`].
    pub fingerprint: String,
    pub from: Map,
    pub to: Map,
    pub summary: Summary,
    pub moves: Vec<Move>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// Fraction of the key space whose owner changes.
    pub moved_fraction: f64,
    /// "exact" when computed analytically, "sampled" when estimated from `sample_keys` keys.
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_keys: Option<u64>,
    /// Each shard's share of the key space before and after.
    pub shares_before: BTreeMap<String, f64>,
    pub shares_after: BTreeMap<String, f64>,
    /// Balance: the largest share over the mean share (1.0 is perfect).
    pub balance_before: f64,
    pub balance_after: f64,
    pub added_shards: Vec<String>,
    pub removed_shards: Vec<String>,
    /// When k shards are added to N: k/(N+k), the least any scheme must move to reach balance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_fraction: Option<f64>,
    /// For a modulo change: what a consistent-hash ring with the same shard change would move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_equivalent_fraction: Option<f64>,
    /// Filled by `apply --dry-run` when connected; absent in a plan made offline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Move {
    /// `m1`, `m2`, ... in (source, destination) order.
    pub id: String,
    pub source: String,
    pub destination: String,
    pub fraction: f64,
    pub segments: Segments,
}

/// Which keys a move covers. A row is in the move exactly when its old owner is `source` and its
/// new owner is `destination`; segments describe that set for a reviewer and let execution push a
/// filter into SQL, but execution always routes every row in Rust as well.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Segments {
    /// Both maps modulo: keys with `v mod modulus` in `residues`, where v is the key itself
    /// (identity) or its digest.
    Residues {
        hash: crate::hashing::HashKind,
        modulus: u64,
        residues: Vec<u64>,
    },
    /// Both maps ranges: half-open key intervals `[from, to)`, null unbounded.
    Ranges { ranges: Vec<KeyInterval> },
    /// Both maps rings: token intervals `[from, to)` in hex; `to` null is the top of the space.
    Arcs {
        hash: crate::hashing::HashKind,
        arcs: Vec<TokenArc>,
    },
    /// Maps of different kinds: every key whose owner goes from `source` to `destination`.
    Owners,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyInterval {
    pub from: Option<Bound>,
    pub to: Option<Bound>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenArc {
    pub from: String,
    pub to: Option<String>,
}

/// sha1 over the canonical JSON of the redacted maps, from then to, separated by a newline.
pub fn fingerprint(from: &Map, to: &Map) -> String {
    let mut h = Sha1::new();
    h.update(from.canonical_json().as_bytes());
    h.update(b"\n");
    h.update(to.canonical_json().as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Rounds a fraction for output: twelve decimal places is well past any reviewer's need and
/// well inside f64's precision, so the printed plan does not depend on summation order.
pub fn round_fraction(x: f64) -> f64 {
    (x * 1e12).round() / 1e12
}

impl Plan {
    /// The plan as written: pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Reads a plan and checks that its maps are valid and match its fingerprint.
    pub fn load(path: &Path) -> Result<Plan, InputError> {
        let label = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| InputError::one(format!("{label}: cannot read: {e}")))?;
        Plan::parse(&text, &label)
    }

    pub fn parse(text: &str, label: &str) -> Result<Plan, InputError> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            InputError::one(format!(
                "{label}: malformed JSON at line {} column {}",
                e.line(),
                e.column()
            ))
        })?;
        // Validate the maps with the map validator first: its messages name the JSON path.
        let mut problems = Vec::new();
        let mut maps = Vec::new();
        for side in ["from", "to"] {
            match value.get(side) {
                None => problems.push(format!("{label}: {side}: missing")),
                Some(v) => match Map::from_value(v, &format!("{label}: {side}")) {
                    Ok(m) => maps.push(m),
                    Err(e) => problems.extend(e.problems),
                },
            }
        }
        if !problems.is_empty() {
            return Err(InputError::many(problems));
        }
        let mut plan: Plan = serde_json::from_value(value)
            .map_err(|e| InputError::one(format!("{label}: not a reshard plan: {e}")))?;
        // Keep the validated maps (ranges sorted), not serde's unchecked copies.
        plan.to = maps.pop().unwrap_or(plan.to);
        plan.from = maps.pop().unwrap_or(plan.from);
        if plan.format_version != PLAN_FORMAT_VERSION {
            return Err(InputError::one(format!(
                "{label}: format_version: {} is not supported (this reshard reads {PLAN_FORMAT_VERSION})",
                plan.format_version
            )));
        }
        let want = fingerprint(&plan.from, &plan.to);
        if plan.fingerprint != want {
            return Err(InputError::one(format!(
                "{label}: fingerprint: does not match the plan's maps (edited by hand?); regenerate it with reshard plan"
            )));
        }
        for (i, m) in plan.moves.iter().enumerate() {
            for (field, shard) in [("source", &m.source), ("destination", &m.destination)] {
                let known = if field == "source" {
                    &plan.from
                } else {
                    &plan.to
                };
                if !known.shards.contains_key(shard) {
                    problems.push(format!(
                        "{label}: moves[{i}].{field}: unknown shard {shard:?}"
                    ));
                }
            }
        }
        if !problems.is_empty() {
            return Err(InputError::many(problems));
        }
        Ok(plan)
    }
}
