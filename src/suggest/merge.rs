//! `--remove NAME` on range maps: each range of a removed shard is merged into an adjacent
//! range that stays, the colder of the two neighbours by the load basis, when the merged range
//! stays within the target. Otherwise nothing is written and the reason is given (exit 2).

use super::range::{show_range, Piece, Weights};
use super::{round_share, Merge};
use crate::error::InputError;
use crate::map::RangeSpec;

/// The neighbour of `pieces[i]` on one side: its shard and the load of its run of adjacent
/// pieces (the range the merge would extend).
fn neighbour(pieces: &[Piece], i: usize, left: bool, w: &Weights<'_>) -> (String, f64) {
    let shard = pieces[if left { i - 1 } else { i + 1 }].shard.clone();
    let side: Box<dyn Iterator<Item = &Piece>> = if left {
        Box::new(pieces[..i].iter().rev())
    } else {
        Box::new(pieces[i + 1..].iter())
    };
    let load = side
        .take_while(|p| p.shard == shard)
        .map(|p| w.weight(p))
        .sum();
    (shard, load)
}

/// Merges every range of the `remove` shards into a neighbour. `pieces` are in key order.
pub(super) fn remove(
    pieces: &mut [Piece],
    remove: &[String],
    w: &Weights<'_>,
    total: f64,
    share: f64,
) -> Result<Vec<Merge>, InputError> {
    let frac = |x: f64| if total > 0.0 { x / total } else { 0.0 };
    let (mut merges, mut problems, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    let gone = |p: &Piece| remove.contains(&p.shard);
    loop {
        let stays = |j: usize| pieces.get(j).is_some_and(|p| !gone(p));
        let next = (0..pieces.len()).find(|&i| {
            gone(&pieces[i]) && !failed.contains(&i) && ((i > 0 && stays(i - 1)) || stays(i + 1))
        });
        let Some(i) = next else { break };
        let mut sides: Vec<(String, f64)> = Vec::new();
        if i > 0 && stays(i - 1) {
            sides.push(neighbour(pieces, i, true, w));
        }
        if stays(i + 1) {
            sides.push(neighbour(pieces, i, false, w));
        }
        // The colder neighbour; on a tie the lower one (it comes first).
        sides.sort_by(|a, b| a.1.total_cmp(&b.1));
        let p = &pieces[i];
        let own = w.weight(p);
        let (into, load) = sides[0].clone();
        let merged = frac(load + own);
        if merged > share + 1e-12 {
            problems.push(format!(
                "--remove {}: its range {} holds {:.1}% of the {}; merged into {}, its {} \
                 neighbour, that range would hold {:.1}%, above the target of {:.1}%: raise \
                 --max-share, or keep the shard",
                p.shard,
                show_range(&p.from, &p.to),
                frac(own) * 100.0,
                w.basis.word(),
                into,
                if sides.len() > 1 { "colder" } else { "only" },
                merged * 100.0,
                share * 100.0
            ));
            failed.push(i);
            continue;
        }
        merges.push(Merge {
            from: p.from.clone(),
            to: p.to.clone(),
            shard: p.shard.clone(),
            into: into.clone(),
            share: round_share(frac(own)),
            merged_share: round_share(merged),
            rows: w.rows(p).round() as u64,
            other: sides
                .get(1)
                .map(|(s, l)| (s.clone(), round_share(frac(l + own)))),
        });
        pieces[i].shard = into;
        pieces[i].merged = true;
    }
    for p in pieces.iter().filter(|p| gone(p)) {
        if !problems
            .iter()
            .any(|m| m.contains(&show_range(&p.from, &p.to)))
        {
            problems.push(format!(
                "--remove {}: its range {} has no neighbour that stays to merge into",
                p.shard,
                show_range(&p.from, &p.to)
            ));
        }
    }
    if problems.is_empty() {
        Ok(merges)
    } else {
        Err(InputError::many(problems))
    }
}

/// The pieces (in key order) as ranges, a merged piece joined with its neighbour.
pub(super) fn coalesce(pieces: &[Piece]) -> Vec<RangeSpec> {
    let mut out: Vec<(RangeSpec, bool)> = Vec::new();
    for p in pieces {
        if let Some((last, merged)) = out.last_mut() {
            if last.shard == p.shard && last.to == p.from && (*merged || p.merged) {
                last.to = p.to.clone();
                *merged = true;
                continue;
            }
        }
        let spec = RangeSpec {
            from: p.from.clone(),
            to: p.to.clone(),
            shard: p.shard.clone(),
        };
        out.push((spec, p.merged));
    }
    out.into_iter().map(|(r, _)| r).collect()
}
