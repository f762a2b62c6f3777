//! Per-shard quantities: rows always, bytes and write rates where the shards report them, and
//! the basis (`--weigh`) that shares and the target are computed from. Predictions for a new
//! map carry every quantity the same way.

use std::collections::BTreeMap;

use super::{round_share, Measurements, ShardRow, Weigh};
use crate::error::InputError;

/// Quantities per shard. `bytes` and `writes` hold the shards that report them; `weight` is the
/// basis, held for every shard.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Loads {
    pub rows: BTreeMap<String, f64>,
    pub bytes: BTreeMap<String, f64>,
    pub writes: BTreeMap<String, f64>,
    pub weight: BTreeMap<String, f64>,
}

/// Why a shard has no value for the basis.
fn missing(m: &Measurements, shard: &str, weigh: Weigh) -> String {
    let load = m.shards.get(shard);
    match weigh {
        Weigh::Writes => match (
            m.sample_seconds,
            load.and_then(|l| l.writes_unavailable.clone()),
        ) {
            (None, _) => "no sampling window (--sample 0s)".to_string(),
            (_, Some(why)) => why,
            (_, None) => "no rate measured".to_string(),
        },
        _ => "the server reports no table sizes (SQLite does not)".to_string(),
    }
}

impl Loads {
    /// The shards' measured quantities. With `--weigh writes|bytes` every shard must have the
    /// basis: otherwise the error names each shard that lacks it and why.
    pub fn measured(
        owners: &[String],
        m: &Measurements,
        weigh: Weigh,
    ) -> Result<Loads, InputError> {
        let mut l = Loads::default();
        for s in owners {
            let load = m.shards.get(s);
            l.rows
                .insert(s.clone(), load.map_or(0, |x| x.rows()) as f64);
            if let Some(b) = load.and_then(|x| x.bytes()) {
                l.bytes.insert(s.clone(), b as f64);
            }
            if let Some(w) = load.and_then(|x| x.writes()) {
                l.writes.insert(s.clone(), w);
            }
        }
        let lacking: Vec<String> = owners
            .iter()
            .filter(|s| !l.basis(weigh).contains_key(*s))
            .map(|s| format!("{s} ({})", missing(m, s, weigh)))
            .collect();
        if !lacking.is_empty() {
            return Err(InputError::one(format!(
                "--weigh {}: not measured on every shard: {}; weigh by rows instead",
                weigh.word(),
                lacking.join(", ")
            )));
        }
        l.weight = l.basis(weigh).clone();
        Ok(l)
    }

    fn basis(&self, weigh: Weigh) -> &BTreeMap<String, f64> {
        match weigh {
            Weigh::Rows => &self.rows,
            Weigh::Bytes => &self.bytes,
            Weigh::Writes => &self.writes,
        }
    }

    /// `rows` in place of the measured rows (range maps count rows within their ranges), the
    /// basis following when it is rows.
    pub fn with_rows(&self, rows: BTreeMap<String, f64>, weigh: Weigh) -> Loads {
        let mut l = self.clone();
        if weigh == Weigh::Rows {
            l.weight = rows.clone();
        }
        l.rows = rows;
        l
    }

    /// Each quantity through `f`; bytes and writes only where every shard has them (a
    /// prediction from part of the shards would be wrong), else left empty.
    pub fn map(&self, f: impl Fn(&BTreeMap<String, f64>) -> BTreeMap<String, f64>) -> Loads {
        let whole = |q: &BTreeMap<String, f64>| {
            if self.rows.keys().all(|s| q.contains_key(s)) {
                f(q)
            } else {
                BTreeMap::new()
            }
        };
        Loads {
            rows: f(&self.rows),
            bytes: whole(&self.bytes),
            writes: whole(&self.writes),
            weight: f(&self.weight),
        }
    }

    pub fn total_rows(&self) -> f64 {
        self.rows.values().sum()
    }

    /// One row per shard, sorted by name: rows, share of the basis, bytes and writes.
    pub fn table(&self) -> Vec<ShardRow> {
        let total: f64 = self.weight.values().sum();
        self.rows
            .iter()
            .map(|(shard, r)| {
                let w = self.weight.get(shard).copied().unwrap_or(0.0);
                ShardRow {
                    shard: shard.clone(),
                    rows: r.round().max(0.0) as u64,
                    share: if total > 0.0 {
                        round_share(w / total)
                    } else {
                        0.0
                    },
                    bytes: self.bytes.get(shard).map(|b| b.round().max(0.0) as u64),
                    writes_per_second: self.writes.get(shard).map(|w| round_rate(*w)),
                }
            })
            .collect()
    }

    /// Shards whose write rates are missing although a window was sampled, with the reason.
    pub fn writes_unavailable(m: &Measurements) -> BTreeMap<String, String> {
        if m.sample_seconds.is_none() {
            return BTreeMap::new();
        }
        m.shards
            .iter()
            .filter_map(|(s, l)| l.writes_unavailable.clone().map(|w| (s.clone(), w)))
            .collect()
    }
}

/// Write rates are shown to a hundredth of a write per second.
pub(crate) fn round_rate(x: f64) -> f64 {
    ((x * 100.0).round() / 100.0).max(0.0) + 0.0
}
