//! Rings and modulo maps: weigh the options with the planner's moved fractions and the measured
//! rows, and keep the one that moves least among those that meet the target.
//!
//! Rows are predicted from the planner's moves: a move of fraction `f` of the key space out of a
//! shard that owns a share `s` of it and holds `r` rows carries `r * f / s` rows (a digest is
//! uniform over the keys, so a shard's rows spread evenly over its arcs or residues).

use std::collections::BTreeMap;

use super::range::unused;
use super::{
    budget, describe_target, max_share, round_share, target_share, with_partitioning, Candidate,
    Loads, Measurements, Report, Request, Suggestion, Target, ToKind, RING_VNODES,
};
use crate::error::InputError;
use crate::hashing::HashKind;
use crate::map::{Map, Partitioning};
use crate::plan::Plan;
use crate::planner::{plan_labeled, PlannerOptions};

/// Keys a sampled plan of an option draws (the planner's default is a million).
const CANDIDATE_SAMPLE_KEYS: u64 = 100_000;

/// Vnode counts weighed for a ring, besides its own.
const VNODE_OPTIONS: [u32; 8] = [8, 16, 32, 64, 128, 256, 512, 1024];

/// What a plan's moves do to one quantity per shard: the quantity after, and what moved.
fn carry(plan: &Plan, to: &Map, q: &BTreeMap<String, f64>) -> (BTreeMap<String, f64>, f64) {
    let key_shares = &plan.summary.shares_before;
    let mut after: BTreeMap<String, f64> = to
        .partitioning
        .owners()
        .into_iter()
        .map(|s| (s, 0.0))
        .collect();
    for (s, r) in q {
        *after.entry(s.clone()).or_insert(0.0) += r;
    }
    let mut moved = 0.0;
    for mv in &plan.moves {
        let ks = key_shares.get(&mv.source).copied().unwrap_or(0.0);
        let have = q.get(&mv.source).copied().unwrap_or(0.0);
        let r = if ks > 0.0 {
            (have * mv.fraction / ks).min(have)
        } else {
            0.0
        };
        let left = after.get(&mv.source).copied().unwrap_or(0.0);
        let r = r.min(left.max(0.0));
        after.insert(mv.source.clone(), left - r);
        *after.entry(mv.destination.clone()).or_insert(0.0) += r;
        moved += r;
    }
    after.retain(|s, _| to.partitioning.owners().contains(s));
    (after, moved)
}

/// The load each shard is predicted to hold under `to`, and the rows moved.
pub(super) fn predict(
    from: &Map,
    to: &Map,
    loads: &Loads,
) -> Result<(Plan, Loads, f64), InputError> {
    // Only a plan between different hashes samples keys (identity modulo to a ring); options
    // are weighed on a smaller sample, and the written map's own plan takes the full one.
    let opts = PlannerOptions {
        sample_keys: CANDIDATE_SAMPLE_KEYS,
    };
    let plan = plan_labeled(from, "from", to, "to", &opts)?;
    let after = loads.map(|q| carry(&plan, to, q).0);
    let (_, moved) = carry(&plan, to, &loads.rows);
    Ok((plan, after, moved))
}

/// A candidate map with its predicted rows.
struct Weighed {
    candidate: Candidate,
    map: Map,
    after: Loads,
    rows_moved: f64,
}

fn weigh(
    from: &Map,
    to: Map,
    loads: &Loads,
    name: String,
    added: Vec<String>,
    share: f64,
) -> Result<Weighed, InputError> {
    let (plan, after, moved) = predict(from, &to, loads)?;
    let max_after = max_share(&after.weight);
    let vnodes = match &to.partitioning {
        Partitioning::Ring { vnodes, .. } => Some(*vnodes),
        _ => None,
    };
    Ok(Weighed {
        candidate: Candidate {
            name,
            kind: to.partitioning.kind().to_string(),
            nodes_added: added,
            vnodes,
            moved_fraction: plan.summary.moved_fraction,
            rows_moved: moved.round() as u64,
            max_share_after: round_share(max_after),
            meets_target: max_after <= share + 1e-12,
        },
        map: to,
        after,
        rows_moved: moved,
    })
}

fn added_names(req: &Request, k: usize) -> Vec<String> {
    req.add.iter().take(k).map(|(n, _)| n.clone()).collect()
}

/// How many new shards the options may use: exactly the budget for `--shards`, any up to it
/// otherwise.
fn counts(req: &Request, current: usize) -> Vec<usize> {
    let b = budget(req, current);
    match req.target {
        Target::Shards(_) => vec![b],
        _ => (0..=b).collect(),
    }
}

fn name_of(added: &[String], vnodes: Option<u32>, kind: &str) -> String {
    let mut parts = Vec::new();
    if !added.is_empty() {
        parts.push(format!("add {}", added.join(", ")));
    }
    if let Some(v) = vnodes {
        parts.push(format!("vnodes {v}"));
    }
    if parts.is_empty() {
        parts.push("unchanged".into());
    }
    format!("{kind}: {}", parts.join("; "))
}

pub(super) fn suggest_ring(
    map: &Map,
    m: &Measurements,
    req: &Request,
) -> Result<Suggestion, InputError> {
    let Partitioning::Ring {
        hash,
        vnodes,
        nodes,
    } = &map.partitioning
    else {
        return Err(InputError::one("suggest_ring: not a ring"));
    };
    let rows = Loads::measured(&map.partitioning.owners(), m, req.weigh)?;
    let share = target_share(req.target, nodes.len());
    let mut vlist: Vec<u32> = VNODE_OPTIONS
        .iter()
        .copied()
        .filter(|v| v > vnodes)
        .collect();
    vlist.insert(0, *vnodes);
    let mut options = Vec::new();
    for k in counts(req, nodes.len()) {
        let added = added_names(req, k);
        for &v in &vlist {
            if k == 0 && v == *vnodes {
                continue; // the ring as it is: the "before" column
            }
            let mut all = nodes.clone();
            all.extend(added.iter().cloned());
            let part = Partitioning::Ring {
                hash: *hash,
                vnodes: v,
                nodes: all,
            };
            let to = with_partitioning(map, req, &added, part);
            let name = name_of(&added, Some(v), "ring");
            options.push(weigh(map, to, &rows, name, added.clone(), share)?);
        }
    }
    let already =
        max_share(&rows.weight) <= share + 1e-12 && !matches!(req.target, Target::Shards(_));
    let chosen = if already { None } else { choose(&options) };
    let key_shares = plan_labeled(map, "from", map, "to", &PlannerOptions::default())?
        .summary
        .shares_before;
    let mut notes = vec![ring_spread_note(*vnodes, &key_shares)];
    finish(map, req, share, rows, options, chosen, &mut notes, "ring").map(|mut s| {
        s.report.key_shares = key_shares
            .into_iter()
            .map(|(k, v)| (k, round_share(v)))
            .collect();
        s
    })
}

fn ring_spread_note(vnodes: u32, key_shares: &BTreeMap<String, f64>) -> String {
    let n = key_shares.len().max(1) as f64;
    let lo = key_shares.values().cloned().fold(f64::INFINITY, f64::min);
    let hi = key_shares.values().cloned().fold(0.0, f64::max);
    format!(
        "{vnodes} vnodes per node: key-space shares run from {:.1}% to {:.1}% (even {:.1}%; \
         about ±{:.0}% of it is expected from {vnodes} vnodes)",
        lo * 100.0,
        hi * 100.0,
        100.0 / n,
        100.0 / (vnodes as f64).sqrt()
    )
}

/// The option that meets the target and moves the fewest keys (then fewer new nodes, fewer
/// vnodes); when none meets it, the one with the smallest largest share.
fn choose(options: &[Weighed]) -> Option<usize> {
    let key = |w: &Weighed| {
        (
            w.candidate.nodes_added.len(),
            w.candidate.vnodes.unwrap_or(0),
        )
    };
    let feasible = options
        .iter()
        .enumerate()
        .filter(|(_, w)| w.candidate.meets_target)
        .min_by(|a, b| {
            (a.1.candidate.moved_fraction)
                .total_cmp(&b.1.candidate.moved_fraction)
                .then(key(a.1).cmp(&key(b.1)))
        });
    let best = feasible.or_else(|| {
        options.iter().enumerate().min_by(|a, b| {
            a.1.candidate
                .max_share_after
                .total_cmp(&b.1.candidate.max_share_after)
                .then(
                    a.1.candidate
                        .moved_fraction
                        .total_cmp(&b.1.candidate.moved_fraction),
                )
                .then(key(a.1).cmp(&key(b.1)))
        })
    });
    best.map(|(i, _)| i)
}

pub(super) fn suggest_modulo(
    map: &Map,
    m: &Measurements,
    req: &Request,
) -> Result<Suggestion, InputError> {
    let Partitioning::Modulo { hash, shards } = &map.partitioning else {
        return Err(InputError::one("suggest_modulo: not a modulo map"));
    };
    let rows = Loads::measured(&map.partitioning.owners(), m, req.weigh)?;
    let share = target_share(req.target, shards.len());
    let ring_hash = match hash {
        HashKind::Identity => HashKind::Sha1,
        h => *h,
    };
    let (mut grow, mut ring) = (Vec::new(), Vec::new());
    for k in counts(req, shards.len()) {
        let added = added_names(req, k);
        let mut all = shards.clone();
        all.extend(added.iter().cloned());
        let part = Partitioning::Modulo {
            hash: *hash,
            shards: all.clone(),
        };
        let to = with_partitioning(map, req, &added, part);
        let name = name_of(&added, None, "modulo");
        grow.push(weigh(map, to, &rows, name, added.clone(), share)?);
        let part = Partitioning::Ring {
            hash: ring_hash,
            vnodes: RING_VNODES,
            nodes: all,
        };
        let to = with_partitioning(map, req, &added, part);
        let name = name_of(&added, Some(RING_VNODES), "ring");
        ring.push(weigh(map, to, &rows, name, added, share)?);
    }
    let pick = |list: &[Weighed]| {
        list.iter()
            .position(|w| w.candidate.meets_target)
            .or_else(|| choose(list))
    };
    let (g, r) = (pick(&grow), pick(&ring));
    let mut notes = Vec::new();
    if let (Some(g), Some(r)) = (g, r) {
        notes.push(format!(
            "growing the modulus ({}) moves {:.1}% of the keys; moving to a ring ({}) moves \
             {:.1}%",
            grow[g].candidate.name,
            grow[g].candidate.moved_fraction * 100.0,
            ring[r].candidate.name,
            ring[r].candidate.moved_fraction * 100.0
        ));
    }
    // Options list the modulus first, then the rings.
    let n = grow.len();
    let chosen = match req.to_kind {
        ToKind::Ring => r.map(|i| i + n),
        _ => g,
    };
    let mut options = grow;
    options.extend(ring);
    finish(map, req, share, rows, options, chosen, &mut notes, "modulo")
}

/// Builds the suggestion from the chosen option (None: the map stays as it is).
#[allow(clippy::too_many_arguments)]
fn finish(
    map: &Map,
    req: &Request,
    share: f64,
    rows: Loads,
    options: Vec<Weighed>,
    chosen: Option<usize>,
    notes: &mut Vec<String>,
    kind: &str,
) -> Result<Suggestion, InputError> {
    let before = rows.table();
    let (new_map, after, moved, name, added, reached) = match chosen.and_then(|i| options.get(i)) {
        Some(w) => (
            w.map.clone(),
            w.after.clone(),
            w.rows_moved,
            Some(w.candidate.name.clone()),
            w.candidate.nodes_added.clone(),
            w.candidate.meets_target,
        ),
        None => {
            let reached = max_share(&rows.weight) <= share + 1e-12;
            if reached {
                notes.push("every shard is within the target: the map is unchanged".into());
            }
            (map.clone(), rows.clone(), 0.0, None, Vec::new(), reached)
        }
    };
    if !reached {
        notes.push(if req.add.is_empty() {
            "no option reaches the target without new shards: add some with --add NAME=URL"
                .to_string()
        } else {
            "no option reaches the target with the new shards given: the closest is written"
                .to_string()
        });
    }
    let report = Report {
        kind: kind.into(),
        written_kind: new_map.partitioning.kind().into(),
        weigh: req.weigh,
        target_share: round_share(share),
        target: describe_target(req.target, share),
        total_rows: rows.total_rows().round() as u64,
        before,
        after: after.table(),
        rows_moved: moved.round() as u64,
        moved_fraction: 0.0,
        reached_target: reached,
        merges: Vec::new(),
        splits: Vec::new(),
        key_shares: BTreeMap::new(),
        options: options.into_iter().map(|w| w.candidate).collect(),
        chosen: name,
        unused_shards: unused(req, &added),
        added_shards: added,
        removed_shards: Vec::new(),
        sample_seconds: None,
        writes_unavailable: BTreeMap::new(),
        writes_sources: BTreeMap::new(),
        quantiles: BTreeMap::new(),
        notes: std::mem::take(notes),
    };
    Ok(Suggestion {
        map: new_map,
        report,
    })
}
