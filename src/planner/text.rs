//! The reviewer's table: what moves where, how much, and the balance before and after, in at
//! most 100 columns.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::map::{Map, Partitioning};
use crate::plan::{Plan, Segments};

pub const WIDTH: usize = 100;
/// Moves listed before the table is cut short (the JSON always has them all).
pub const MAX_ROWS: usize = 40;

fn describe(m: &Map) -> String {
    match &m.partitioning {
        Partitioning::Modulo { hash, shards } => {
            format!("modulo {} over {} shards", hash.name(), shards.len())
        }
        Partitioning::Range { ranges } => format!(
            "range, {} ranges over {} shards",
            ranges.len(),
            m.partitioning.owners().len()
        ),
        Partitioning::Ring {
            hash,
            vnodes,
            nodes,
        } => format!(
            "ring {} x{vnodes} vnodes over {} nodes",
            hash.name(),
            nodes.len()
        ),
    }
}

fn pct(x: f64) -> String {
    if x > 0.0 && x < 0.000_005 {
        // A sliver of a huge key space (say a 10^6-wide range of i64) is not nothing.
        "<0.001%".to_string()
    } else {
        format!("{:.3}%", x * 100.0)
    }
}

/// Integer keys in a move's finite integer ranges: `Some((keys, unbounded))`, where
/// `unbounded` says a range runs to -inf or +inf. None for other segments. A reviewer checks
/// "75,000 ids" against the data, not a fraction of the 2^64 key space that rounds to 0.
fn range_keys(seg: &Segments) -> Option<(u128, bool)> {
    let Segments::Ranges { ranges } = seg else {
        return None;
    };
    use crate::map::Bound;
    let mut keys = 0u128;
    let mut unbounded = false;
    for r in ranges {
        match (&r.from, &r.to) {
            (Some(Bound::Int(a)), Some(Bound::Int(b))) => {
                keys += (i128::from(*b) - i128::from(*a)).max(0) as u128;
            }
            (None | Some(Bound::Int(_)), None | Some(Bound::Int(_))) => unbounded = true,
            _ => return None,
        }
    }
    Some((keys, unbounded))
}

/// Below this many integer keys a count is what a reviewer checks against the data; above it
/// (ranges sized as shares of the i64 space, as in plans/range-split) the fraction reads better.
const COUNTABLE: u128 = 1_000_000_000_000;

/// Integer keys of finite integer ranges, when few enough to count.
fn countable(seg: &Segments) -> Option<u128> {
    range_keys(seg).and_then(|(k, open)| (!open && k < COUNTABLE).then_some(k))
}

/// The keys column of a move: its integer keys for countable integer ranges, else its key
/// fraction.
fn keys_cell(seg: &Segments, fraction: f64) -> String {
    countable(seg).map_or_else(|| pct(fraction), count)
}

fn count(k: u128) -> String {
    match u64::try_from(k) {
        Ok(k) => indicatif::HumanCount(k).to_string(),
        Err(_) => k.to_string(),
    }
}

/// Cuts `s` to `n` characters, marking the cut.
fn fit(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn segments_brief(seg: &Segments) -> String {
    match seg {
        Segments::Residues {
            hash,
            modulus,
            residues,
        } => {
            let shown: Vec<String> = residues.iter().take(6).map(|r| r.to_string()).collect();
            let more = if residues.len() > 6 {
                format!(" +{} more", residues.len() - 6)
            } else {
                String::new()
            };
            let v = if *hash == crate::hashing::HashKind::Identity {
                "key".to_string()
            } else {
                format!("{}(key)", hash.name())
            };
            format!("{v} mod {modulus} in {{{}}}{more}", shown.join(","))
        }
        Segments::Ranges { ranges } => {
            let b = |x: &Option<crate::map::Bound>, inf: &str| match x {
                None => inf.to_string(),
                Some(b) => b.to_string(),
            };
            let first = ranges
                .first()
                .map(|r| format!("[{}, {})", b(&r.from, "-inf"), b(&r.to, "+inf")))
                .unwrap_or_default();
            if ranges.len() > 1 {
                format!("{first} +{} more", ranges.len() - 1)
            } else {
                first
            }
        }
        Segments::Arcs { hash, arcs } => {
            let first = arcs
                .first()
                .map(|a| {
                    let to =
                        a.to.as_deref()
                            .map(|t| &t[..t.len().min(8)])
                            .unwrap_or("top");
                    format!(" first [{}…, {to}…)", &a.from[..a.from.len().min(8)])
                })
                .unwrap_or_default();
            format!("{} {} arc(s){first}", arcs.len(), hash.name())
        }
        Segments::Owners => "every key moving between these owners".to_string(),
    }
}

/// The table a reviewer reads in ten seconds.
pub fn render(plan: &Plan) -> String {
    let s = &plan.summary;
    let mut out = String::new();
    let _ = writeln!(out, "from  {}", describe(&plan.from));
    let _ = writeln!(out, "to    {}", describe(&plan.to));
    let how = match s.sample_keys {
        Some(n) => format!("sampled from {n} keys"),
        None => s.method.clone(),
    };
    let _ = writeln!(
        out,
        "plan  {} (fractions: {how})",
        &plan.fingerprint[..plan.fingerprint.len().min(12)]
    );
    let ranged: Option<Vec<u128>> = plan.moves.iter().map(|m| countable(&m.segments)).collect();
    let counted = ranged.as_ref().is_some_and(|r| !r.is_empty());
    let mut moved = match ranged.filter(|r| !r.is_empty()) {
        // Integer ranges on real ids: the ids that move, which a reviewer can count in the data,
        // instead of a fraction of the 2^64 key space that rounds to 0.
        Some(r) => format!(
            "moved {} integer keys in {} moves",
            count(r.iter().sum()),
            plan.moves.len()
        ),
        None => format!(
            "moved {} of keys in {} moves",
            pct(s.moved_fraction),
            plan.moves.len()
        ),
    };
    if let Some(m) = s.minimum_fraction {
        let _ = write!(moved, "; minimum to rebalance {}", pct(m));
    }
    if let Some(r) = s.ring_equivalent_fraction {
        let _ = write!(moved, "; a ring would move {}", pct(r));
    }
    let _ = writeln!(out, "{}", fit(&moved, WIDTH));
    let _ = writeln!(
        out,
        "balance (largest share / mean) {:.3} -> {:.3}",
        s.balance_before, s.balance_after
    );
    if !s.added_shards.is_empty() {
        let _ = writeln!(
            out,
            "{}",
            fit(&format!("added   {}", s.added_shards.join(", ")), WIDTH)
        );
    }
    if !s.removed_shards.is_empty() {
        let _ = writeln!(
            out,
            "{}",
            fit(&format!("removed {}", s.removed_shards.join(", ")), WIDTH)
        );
    }
    out.push('\n');
    if plan.moves.is_empty() {
        out.push_str("no key changes owner: nothing to move\n");
    } else {
        let _ = writeln!(
            out,
            "{:<6}{:<36}{:>9}  segments",
            "move", "source -> destination", "keys"
        );
        for m in plan.moves.iter().take(MAX_ROWS) {
            let pair = fit(&format!("{} -> {}", m.source, m.destination), 35);
            let line = format!(
                "{:<6}{:<36}{:>9}  {}",
                fit(&m.id, 5),
                pair,
                keys_cell(&m.segments, m.fraction),
                segments_brief(&m.segments)
            );
            let _ = writeln!(out, "{}", fit(&line, WIDTH));
        }
        if plan.moves.len() > MAX_ROWS {
            let _ = writeln!(
                out,
                "… {} more moves (all are in the plan JSON: --format json or -o)",
                plan.moves.len() - MAX_ROWS
            );
        }
    }
    out.push('\n');
    let shards: BTreeSet<&String> = s
        .shares_before
        .keys()
        .chain(s.shares_after.keys())
        .collect();
    let _ = writeln!(out, "{:<36}{:>10}{:>10}", "shard", "before", "after");
    for (i, sh) in shards.iter().enumerate() {
        if i == MAX_ROWS {
            let _ = writeln!(out, "… {} more shards", shards.len() - MAX_ROWS);
            break;
        }
        let cell = |v: Option<&f64>| v.map(|x| pct(*x)).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<36}{:>10}{:>10}",
            fit(sh, 35),
            cell(s.shares_before.get(*sh)),
            cell(s.shares_after.get(*sh))
        );
    }
    if counted {
        let _ = writeln!(
            out,
            "shares are of the whole key space; the rows each move takes: reshard apply PLAN --dry-run"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::Bound;
    use crate::plan::KeyInterval;

    fn ranges(rs: &[(Option<i64>, Option<i64>)]) -> Segments {
        Segments::Ranges {
            ranges: rs
                .iter()
                .map(|(a, b)| KeyInterval {
                    from: a.map(Bound::Int),
                    to: b.map(Bound::Int),
                })
                .collect(),
        }
    }

    #[test]
    fn integer_ranges_count_their_keys() {
        let seg = ranges(&[(Some(25_000), Some(100_000)), (Some(-10), Some(0))]);
        assert_eq!(range_keys(&seg), Some((75_010, false)));
        assert_eq!(keys_cell(&seg, 0.0), "75,010");
        let open = ranges(&[(Some(5), None)]);
        assert_eq!(keys_cell(&open, 0.5), "50.000%");
        let huge = ranges(&[(Some(0), Some(1 << 61))]);
        assert_eq!(keys_cell(&huge, 0.125), "12.500%");
    }
}
