//! Range maps: split each range above the target at the median key of its data.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::{
    budget, describe_target, round_share, target_share, with_partitioning, KeySample, Loads,
    Measurements, MidpointSplit, RangeData, Report, Request, Split, Suggestion,
};
use crate::error::InputError;
use crate::map::{Bound, Map, Partitioning, RangeSpec};

/// A key's position on a line, for interpolating between two measured points.
fn position(b: &Bound) -> f64 {
    match b {
        Bound::Int(v) => *v as f64,
        Bound::Text(s) => crate::planner::text_point(s),
    }
}

impl KeySample {
    /// Rows of this table with a key below `x` (None: above every key), interpolated linearly
    /// between measured points; exact at the points themselves.
    pub fn rows_below(&self, x: Option<&Bound>) -> f64 {
        let Some(x) = x else {
            return self.rows as f64;
        };
        let (Some(first), Some(last)) = (self.points.first(), self.points.last()) else {
            return 0.0;
        };
        if x <= &first.0 {
            return 0.0;
        }
        if x > &last.0 {
            return self.rows as f64;
        }
        let i = self.points.partition_point(|(k, _)| k < x);
        let (hk, hr) = &self.points[i];
        if hk == x || i == 0 {
            return *hr as f64;
        }
        let (lk, lr) = &self.points[i - 1];
        let (lp, hp, xp) = (position(lk), position(hk), position(x));
        let t = if hp > lp {
            ((xp - lp) / (hp - lp)).clamp(0.0, 1.0)
        } else {
            0.0
        };
        *lr as f64 + t * (*hr as f64 - *lr as f64)
    }
}

impl RangeData {
    /// Rows of every table with a key in `[lo, hi)` (None unbounded).
    pub fn rows_between(&self, lo: Option<&Bound>, hi: Option<&Bound>) -> f64 {
        self.tables
            .values()
            .map(|t| {
                let below_lo = if lo.is_some() { t.rows_below(lo) } else { 0.0 };
                (t.rows_below(hi) - below_lo).max(0.0)
            })
            .sum()
    }

    /// The measured key that best halves the rows in `[lo, hi)`, strictly inside it and with
    /// rows on both sides: the weighted median of every table's points. Ties go to the smaller
    /// key.
    pub fn median(&self, lo: Option<&Bound>, hi: Option<&Bound>) -> Option<Bound> {
        let base = lo.map_or(0.0, |l| self.rows_between(None, Some(l)));
        let half = self.rows_between(lo, hi) / 2.0;
        let mut keys: Vec<&Bound> = self
            .tables
            .values()
            .flat_map(|t| t.points.iter().map(|(k, _)| k))
            .filter(|k| lo.is_none_or(|l| *k > l) && hi.is_none_or(|h| *k < h))
            .collect();
        keys.sort();
        keys.dedup();
        let mut best: Option<(f64, &Bound)> = None;
        for k in keys {
            let below = self.rows_between(None, Some(k)) - base;
            // Rows must stay on both sides, or the "split" would move the whole range.
            if below < 0.5 || below > 2.0 * half - 0.5 {
                continue;
            }
            let off = (below - half).abs();
            if best.is_none_or(|(b, _)| off < b) {
                best = Some((off, k));
            }
        }
        best.map(|(_, k)| k.clone())
    }

    /// The smallest and largest measured key (integer keys), for the midpoint of an open end.
    fn int_extent(&self) -> Option<(i64, i64)> {
        let ints = self.tables.values().flat_map(|t| {
            t.points.iter().filter_map(|(k, _)| match k {
                Bound::Int(v) => Some(*v),
                Bound::Text(_) => None,
            })
        });
        ints.fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((a, b)) => Some((a.min(v), b.max(v))),
        })
    }

    /// The guide's split: `(start + end) / 2` of the range's integer bounds (its data's smallest
    /// and largest key for an open end).
    fn midpoint(&self, lo: Option<&Bound>, hi: Option<&Bound>) -> Option<Bound> {
        let (min, max) = self.int_extent()?;
        let start = match lo {
            Some(Bound::Int(v)) => *v as i128,
            None => min as i128,
            Some(Bound::Text(_)) => return None,
        };
        let end = match hi {
            Some(Bound::Int(v)) => *v as i128,
            None => max as i128 + 1,
            Some(Bound::Text(_)) => return None,
        };
        let mid = start + (end - start).div_euclid(2);
        (mid > start && mid < end)
            .then(|| i64::try_from(mid).ok().map(Bound::Int))
            .flatten()
    }
}

/// A piece of an original range, possibly already split or merged into a neighbour.
#[derive(Debug, Clone)]
pub(super) struct Piece {
    pub from: Option<Bound>,
    pub to: Option<Bound>,
    pub shard: String,
    /// Index of the original range, whose data the piece's rows come from.
    pub data: usize,
    /// No key inside the piece halves its rows (one key holds them all).
    pub stuck: bool,
    /// Given to a neighbour by `--remove`: joined with it in the written map.
    pub merged: bool,
}

fn cmp_from(a: &Option<Bound>, b: &Option<Bound>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, _) => Ordering::Less,
        (_, None) => Ordering::Greater,
        (Some(x), Some(y)) => x.cmp(y),
    }
}

/// How a piece's rows and load are counted. A piece's load in any quantity is its rows times
/// its original owner's quantity per row: within a shard, writes and bytes are taken to spread
/// over the keys as its rows do.
pub(super) struct Weights<'a> {
    m: &'a Measurements,
    owner: Vec<String>,
    before: Loads,
    pub basis: super::Weigh,
}

impl Weights<'_> {
    /// The measured loads, rows counted within each shard's ranges (the basis follows when it
    /// is rows).
    fn new<'a>(
        owners: &[String],
        ranges: &[RangeSpec],
        m: &'a Measurements,
        basis: super::Weigh,
    ) -> Result<Weights<'a>, InputError> {
        let measured = Loads::measured(owners, m, basis)?;
        let mut in_ranges: BTreeMap<String, f64> =
            owners.iter().map(|s| (s.clone(), 0.0)).collect();
        for (p, r) in ranges.iter().zip(&m.ranges) {
            *in_ranges.entry(p.shard.clone()).or_insert(0.0) +=
                r.rows_between(p.from.as_ref(), p.to.as_ref());
        }
        Ok(Weights {
            m,
            owner: ranges.iter().map(|r| r.shard.clone()).collect(),
            before: measured.with_rows(in_ranges, basis),
            basis,
        })
    }

    pub fn rows(&self, p: &Piece) -> f64 {
        self.m.ranges[p.data].rows_between(p.from.as_ref(), p.to.as_ref())
    }

    fn per_row(&self, q: &BTreeMap<String, f64>, data: usize) -> f64 {
        let s = &self.owner[data];
        match (q.get(s), self.before.rows.get(s)) {
            (Some(v), Some(r)) if *r > 0.0 => v / r,
            _ => 0.0,
        }
    }

    /// The piece's share of the basis, as a load (not normalised).
    pub fn weight(&self, p: &Piece) -> f64 {
        self.rows(p) * self.per_row(&self.before.weight, p.data)
    }

    /// Every quantity per shard for these pieces.
    fn loads(&self, pieces: &[Piece]) -> Loads {
        self.before.map(|q| {
            let mut out = BTreeMap::new();
            for p in pieces {
                *out.entry(p.shard.clone()).or_insert(0.0) +=
                    self.rows(p) * self.per_row(q, p.data);
            }
            out
        })
    }
}

pub(super) fn suggest(
    map: &Map,
    ranges: &[RangeSpec],
    m: &Measurements,
    req: &Request,
) -> Result<Suggestion, InputError> {
    if m.ranges.len() != ranges.len() {
        return Err(InputError::one(format!(
            "measurements: {} ranges measured for a map of {}",
            m.ranges.len(),
            ranges.len()
        )));
    }
    let current = map.partitioning.owners();
    let mut pieces = pieces_of(ranges);
    let w = Weights::new(&current, ranges, m, req.weigh)?;
    let before = w.loads(&pieces);
    let total: f64 = before.weight.values().sum();
    let staying = current.len() - req.remove.len();
    let share = target_share(req.target, staying);
    let merges = super::merge::remove(&mut pieces, &req.remove, &w, total, share)?;
    let fresh: Vec<&String> = req
        .add
        .iter()
        .take(budget(req, staying))
        .map(|(n, _)| n)
        .collect();
    let Splitting {
        splits,
        mut notes,
        added,
    } = split_hot(&mut pieces, &w, share, total, &fresh);
    pieces.sort_by(|a, b| cmp_from(&a.from, &b.from));
    let after = w.loads(&pieces);
    let rows_moved: f64 = splits
        .iter()
        .map(|s: &Split| s.rows_upper as f64)
        .sum::<f64>()
        + merges.iter().map(|g| g.rows as f64).sum::<f64>();
    let new_map = with_partitioning(
        map,
        req,
        &added,
        Partitioning::Range {
            ranges: super::merge::coalesce(&pieces),
        },
    );
    let reached = pieces
        .iter()
        .all(|p| total <= 0.0 || w.weight(p) / total <= share + 1e-12);
    if splits.is_empty() && merges.is_empty() && reached {
        notes.push("every range is within the target: the map is unchanged".into());
    }
    notes.extend(basis_note(req, &splits));
    let report = Report {
        kind: "range".into(),
        written_kind: "range".into(),
        weigh: req.weigh,
        target_share: round_share(share),
        target: describe_target(req.target, share),
        total_rows: before.total_rows().round() as u64,
        before: before.table(),
        after: after.table(),
        rows_moved: rows_moved.round() as u64,
        moved_fraction: 0.0,
        reached_target: reached,
        merges,
        splits,
        key_shares: BTreeMap::new(),
        options: Vec::new(),
        chosen: None,
        unused_shards: unused(req, &added),
        added_shards: added,
        removed_shards: req.remove.clone(),
        sample_seconds: None,
        writes_unavailable: BTreeMap::new(),
        writes_sources: BTreeMap::new(),
        quantiles: quantile_methods(m),
        notes,
    };
    Ok(Suggestion {
        map: new_map,
        report,
    })
}

/// Splits by another basis than rows still cut at the rows' median: said so.
fn basis_note(req: &Request, splits: &[Split]) -> Option<String> {
    (req.weigh != super::Weigh::Rows && !splits.is_empty()).then(|| {
        format!(
            "the split keys are the median of the rows (from the key quantiles): {} are taken \
             to spread over a shard's keys as its rows do",
            req.weigh.word()
        )
    })
}

/// The map's ranges as pieces, each measured by its own range's data.
fn pieces_of(ranges: &[RangeSpec]) -> Vec<Piece> {
    ranges
        .iter()
        .enumerate()
        .map(|(i, r)| Piece {
            from: r.from.clone(),
            to: r.to.clone(),
            shard: r.shard.clone(),
            data: i,
            stuck: false,
            merged: false,
        })
        .collect()
}

/// What the splitting loop did.
struct Splitting {
    splits: Vec<Split>,
    notes: Vec<String>,
    added: Vec<String>,
}

/// Splits the hottest piece above the target at its data median, giving the upper part to the
/// next of `fresh`, until none is above the target or `fresh` runs out.
fn split_hot(
    pieces: &mut Vec<Piece>,
    w: &Weights<'_>,
    share: f64,
    total: f64,
    fresh: &[&String],
) -> Splitting {
    let mut fresh = fresh.iter();
    let (mut splits, mut notes, mut added) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        let hot = pieces
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.stuck && total > 0.0 && w.weight(p) / total > share)
            .max_by(|a, b| w.weight(a.1).total_cmp(&w.weight(b.1)).then(b.0.cmp(&a.0)))
            .map(|(i, _)| i);
        let Some(i) = hot else { break };
        let p = pieces[i].clone();
        let data = &w.m.ranges[p.data];
        let at = data.median(p.from.as_ref(), p.to.as_ref());
        let Some(at) = at else {
            notes.push(format!(
                "range {} of {}: no measured key inside it halves its rows; left whole",
                show_range(&p.from, &p.to),
                p.shard
            ));
            pieces[i].stuck = true;
            continue;
        };
        let Some(new_shard) = fresh.next() else {
            notes.push(format!(
                "range {} of {} still holds {:.1}% of the {}, above the target, and no new \
                 shard is left: add one with --add NAME=URL",
                show_range(&p.from, &p.to),
                p.shard,
                w.weight(&p) / total * 100.0,
                w.basis.word()
            ));
            break;
        };
        splits.push(split_report(data, &p, &at, new_shard, w.weight(&p) / total));
        added.push((*new_shard).clone());
        pieces[i].to = Some(at.clone());
        pieces.push(Piece {
            from: Some(at),
            to: p.to.clone(),
            shard: (*new_shard).clone(),
            data: p.data,
            stuck: false,
            merged: false,
        });
    }
    Splitting {
        splits,
        notes,
        added,
    }
}

fn split_report(data: &RangeData, p: &Piece, at: &Bound, new_shard: &str, share: f64) -> Split {
    let (lo, hi) = (p.from.as_ref(), p.to.as_ref());
    let whole = data.rows_between(lo, hi);
    let lower = data.rows_between(lo, Some(at));
    let midpoint = data.midpoint(lo, hi).map(|mid| {
        let below = data.rows_between(lo, Some(&mid));
        MidpointSplit {
            at: mid,
            rows_lower: below.round() as u64,
            rows_upper: (whole - below).max(0.0).round() as u64,
        }
    });
    Split {
        from: p.from.clone(),
        to: p.to.clone(),
        shard: p.shard.clone(),
        new_shard: new_shard.to_string(),
        share_before: round_share(share),
        at: at.clone(),
        rows_lower: lower.round() as u64,
        rows_upper: (whole - lower).max(0.0).round() as u64,
        midpoint,
    }
}

pub(super) fn show_range(from: &Option<Bound>, to: &Option<Bound>) -> String {
    let b = |x: &Option<Bound>| x.as_ref().map_or("null".to_string(), |b| b.to_string());
    format!("[{}, {})", b(from), b(to))
}

pub(super) fn unused(req: &Request, added: &[String]) -> Vec<String> {
    req.add
        .iter()
        .map(|(n, _)| n.clone())
        .filter(|n| !added.contains(n))
        .collect()
}

fn quantile_methods(m: &Measurements) -> BTreeMap<String, super::QuantileMethod> {
    let mut out = BTreeMap::new();
    for r in &m.ranges {
        for (t, s) in &r.tables {
            // A table measured by histogram anywhere is reported as approximate.
            let e = out.entry(t.clone()).or_insert(s.method);
            *e = (*e).max(s.method);
        }
    }
    out
}
