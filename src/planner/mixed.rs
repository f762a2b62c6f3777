//! Maps of different kinds (or hash-based maps with different hashes). Moves are described by
//! owners; which (old, new) pairs exist is decided analytically, so no key can fall outside
//! every move, and only the fractions may come from a sample.
//!
//! - range × identity modulo: exact, by counting the integers of each range in each residue.
//! - modulo × ring, same digest: every arc holds every residue class evenly, so a pair weighs
//!   the product of the two shares — exact up to one token per arc.
//! - range × hash-based: the product of the range's weight and the hash owner's share, taking
//!   a digest as independent of key order ("independent"); ranges of at most
//!   [`SMALL_INTERVAL`] integers are routed key by key instead, so tiny ranges stay exact.
//! - anything else (two different hash functions): every pair of owners occurs; fractions come
//!   from a deterministic sample of integer keys uniform over i64 ("sampled").

use std::collections::BTreeMap;

use super::measure::{int_hi, int_lo, interval_measure, SplitMix64, TWO_64};
use super::{Acc, Draft, Method};
use crate::hashing::HashKind;
use crate::map::{Bound, Key, Map, Partitioner, Partitioning, RangeSpec};
use crate::plan::Segments;

/// Ranges with at most this many integers are routed key by key.
pub const SMALL_INTERVAL: i128 = 4096;
/// The sample's seed: fixed, so a sampled plan is byte-identical on every run.
pub const SAMPLE_SEED: u64 = 0x7265_7368_6172_6431; // "reshard1"

fn hash_of(p: &Partitioning) -> Option<HashKind> {
    match p {
        Partitioning::Modulo { hash, .. } | Partitioning::Ring { hash, .. } => Some(*hash),
        Partitioning::Range { .. } => None,
    }
}

/// Adds to the move (old, new), oriented by `range_is_old`.
fn add(acc: &mut Acc, range_owner: &str, other: &str, range_is_old: bool, f: f64) {
    let (s, d) = if range_is_old {
        (range_owner, other)
    } else {
        (other, range_owner)
    };
    if s != d {
        acc.add(s, d, f, || Segments::Owners);
    }
}

pub(crate) fn diff(
    from: &Map,
    to: &Map,
    fc: &Partitioner,
    tc: &Partitioner,
    sf: &BTreeMap<String, f64>,
    st: &BTreeMap<String, f64>,
    sample_keys: u64,
) -> (Vec<Draft>, Method) {
    use Partitioning::*;
    match (&from.partitioning, &to.partitioning) {
        (
            Range { ranges },
            Modulo {
                hash: HashKind::Identity,
                shards,
            },
        ) => (range_identity(ranges, shards, true), Method::Exact),
        (
            Modulo {
                hash: HashKind::Identity,
                shards,
            },
            Range { ranges },
        ) => (range_identity(ranges, shards, false), Method::Exact),
        (Range { ranges }, _) => (range_hash(ranges, tc, st, true), Method::Independent),
        (_, Range { ranges }) => (range_hash(ranges, fc, sf, false), Method::Independent),
        (a, b) if hash_of(a) == hash_of(b) && hash_of(a) != Some(HashKind::Identity) => {
            (product(sf, st), Method::Exact)
        }
        _ => (
            sampled(fc, tc, sf, st, sample_keys),
            Method::Sampled(sample_keys),
        ),
    }
}

/// Every pair of owners, weighted by the product of shares.
fn product(sf: &BTreeMap<String, f64>, st: &BTreeMap<String, f64>) -> Vec<Draft> {
    let mut acc = Acc::new();
    for (a, fa) in sf {
        for (b, fb) in st {
            if a != b && *fa > 0.0 && *fb > 0.0 {
                acc.add(a, b, fa * fb, || Segments::Owners);
            }
        }
    }
    acc.into_drafts()
}

/// Integer ranges against `v mod N`: count each range's integers in each residue class.
fn range_identity(ranges: &[RangeSpec], shards: &[String], range_is_old: bool) -> Vec<Draft> {
    let n = shards.len() as i128;
    let mut acc = Acc::new();
    for r in ranges {
        let (lo, hi) = (int_lo(r.from.as_ref()), int_hi(r.to.as_ref()));
        for (res, shard) in shards.iter().enumerate() {
            let res = res as i128;
            // Integers v in [lo, hi) with v ≡ res (mod n).
            let count = (hi - 1 - res).div_euclid(n) - (lo - 1 - res).div_euclid(n);
            if count > 0 {
                add(
                    &mut acc,
                    &r.shard,
                    shard,
                    range_is_old,
                    count as f64 / TWO_64,
                );
            }
        }
    }
    acc.into_drafts()
}

/// Ranges against a hash-based map.
fn range_hash(
    ranges: &[RangeSpec],
    hashed: &Partitioner,
    shares: &BTreeMap<String, f64>,
    range_is_old: bool,
) -> Vec<Draft> {
    let mut acc = Acc::new();
    for r in ranges {
        let integer = !matches!(
            (&r.from, &r.to),
            (Some(Bound::Text(_)), _) | (_, Some(Bound::Text(_)))
        );
        let (lo, hi) = (int_lo(r.from.as_ref()), int_hi(r.to.as_ref()));
        if integer && hi - lo <= SMALL_INTERVAL {
            for v in lo..hi {
                if let Ok(i) = hashed.owner_index(&Key::Int(v as i64)) {
                    add(
                        &mut acc,
                        &r.shard,
                        &hashed.shards[i],
                        range_is_old,
                        1.0 / TWO_64,
                    );
                }
            }
            continue;
        }
        let w = interval_measure(r.from.as_ref(), r.to.as_ref());
        for (b, s) in shares {
            if *s > 0.0 {
                add(&mut acc, &r.shard, b, range_is_old, w * s);
            }
        }
    }
    acc.into_drafts()
}

/// Two different hash functions: every pair of owners occurs; fractions from a sample.
fn sampled(
    fc: &Partitioner,
    tc: &Partitioner,
    sf: &BTreeMap<String, f64>,
    st: &BTreeMap<String, f64>,
    n: u64,
) -> Vec<Draft> {
    let mut counts = vec![vec![0u64; tc.shards.len()]; fc.shards.len()];
    let mut rng = SplitMix64(SAMPLE_SEED);
    for _ in 0..n {
        let k = Key::Int(rng.next_u64() as i64);
        if let (Ok(a), Ok(b)) = (fc.owner_index(&k), tc.owner_index(&k)) {
            counts[a][b] += 1;
        }
    }
    let mut acc = Acc::new();
    for (i, a) in fc.shards.iter().enumerate() {
        for (j, b) in tc.shards.iter().enumerate() {
            let possible =
                sf.get(a).is_some_and(|s| *s > 0.0) && st.get(b).is_some_and(|s| *s > 0.0);
            if a != b && possible {
                acc.add(a, b, counts[i][j] as f64 / n.max(1) as f64, || {
                    Segments::Owners
                });
            }
        }
    }
    acc.into_drafts()
}
