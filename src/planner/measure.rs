//! The key-space measure that fractions are taken over (docs/plan-format.md, "Fractions").
//!
//! - Integer keys: uniform over i64, so `[from, to)` weighs `(to - from) / 2^64`.
//! - Text keys: the bytewise order embedded into [0, 1) as a base-256 fraction of the key's
//!   bytes, so `[from, to)` weighs `point(to) - point(from)`.
//! - Hash-based maps: a key's digest is uniform over the hash space, so an arc weighs its
//!   length over `2^bits` and each residue class mod N weighs `1/N`.

use std::collections::BTreeMap;

use crate::hashing::Token;
use crate::map::{Bound, Partitioner, Partitioning};

pub const TWO_64: f64 = 18_446_744_073_709_551_616.0;
pub const TWO_128: f64 = 340_282_366_920_938_463_463_374_607_431_768_211_456.0;

/// Lowest integer of an interval starting at `from` (null: unbounded below).
pub fn int_lo(from: Option<&Bound>) -> i128 {
    match from {
        Some(Bound::Int(v)) => *v as i128,
        _ => i64::MIN as i128,
    }
}

/// One past the highest integer of an interval ending at `to` (null: unbounded above).
pub fn int_hi(to: Option<&Bound>) -> i128 {
    match to {
        Some(Bound::Int(v)) => *v as i128,
        _ => i64::MAX as i128 + 1,
    }
}

/// The text key's position in [0, 1): its bytes read as a base-256 fraction. Eight bytes hold
/// more precision than an f64 does, so the rest are ignored.
pub fn text_point(s: &str) -> f64 {
    let mut v = 0f64;
    let mut scale = 1.0 / 256.0;
    for &b in s.as_bytes().iter().take(8) {
        v += b as f64 * scale;
        scale /= 256.0;
    }
    v
}

/// The weight of the key interval `[from, to)`; the bounds' type says which measure applies.
pub fn interval_measure(from: Option<&Bound>, to: Option<&Bound>) -> f64 {
    match (from, to) {
        (None, None) => 1.0,
        (Some(Bound::Text(_)), _) | (_, Some(Bound::Text(_))) => {
            let lo = match from {
                Some(Bound::Text(s)) => text_point(s),
                _ => 0.0,
            };
            let hi = match to {
                Some(Bound::Text(s)) => text_point(s),
                _ => 1.0,
            };
            hi - lo
        }
        _ => (int_hi(to) - int_lo(from)) as f64 / TWO_64,
    }
}

/// The top 128 bits of a token's `bits`-wide digest (all of an md5).
pub fn tok128(t: &Token, bits: u32) -> u128 {
    let skip = (160 - bits as usize) / 8;
    let mut b = [0u8; 16];
    b.copy_from_slice(&t[skip..skip + 16]);
    u128::from_be_bytes(b)
}

/// The weight of the token arc `[from, to)`; `to` None is the top of the space.
pub fn arc_measure(from: &Token, to: Option<&Token>, bits: u32) -> f64 {
    let lo = tok128(from, bits);
    match to {
        Some(t) => (tok128(t, bits) - lo) as f64 / TWO_128,
        None => ((u128::MAX - lo) as f64 + 1.0) / TWO_128,
    }
}

/// Each owner's share of the key space under one map.
pub fn shares(part: &Partitioning, compiled: &Partitioner) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    match part {
        Partitioning::Modulo { shards, .. } => {
            for s in shards {
                *out.entry(s.clone()).or_default() += 1.0 / shards.len() as f64;
            }
        }
        Partitioning::Range { ranges } => {
            for r in ranges {
                *out.entry(r.shard.clone()).or_default() +=
                    interval_measure(r.from.as_ref(), r.to.as_ref());
            }
        }
        Partitioning::Ring { .. } => {
            if let Some((hash, tokens, owner)) = compiled.ring() {
                let bits = hash.bits();
                let mut acc = vec![0f64; compiled.shards.len()];
                for i in 1..tokens.len() {
                    acc[owner[i]] += arc_measure(&tokens[i - 1], Some(&tokens[i]), bits);
                }
                if let (Some(first), Some(last)) = (tokens.first(), tokens.last()) {
                    acc[owner[0]] +=
                        arc_measure(last, None, bits) + arc_measure(&[0; 20], Some(first), bits);
                }
                for (i, a) in acc.into_iter().enumerate() {
                    out.insert(compiled.shards[i].clone(), a);
                }
            }
        }
    }
    out
}

/// splitmix64: a tiny, well-mixed, seedable PRNG, so sampled plans are reproducible anywhere.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_intervals_weigh_their_width() {
        assert_eq!(interval_measure(None, None), 1.0);
        assert_eq!(interval_measure(None, Some(&Bound::Int(0))), 0.5);
        assert_eq!(
            interval_measure(Some(&Bound::Int(0)), Some(&Bound::Int(1 << 62))),
            0.25
        );
    }

    #[test]
    fn text_points_follow_bytewise_order() {
        assert_eq!(text_point(""), 0.0);
        assert_eq!(
            text_point("\u{80}"),
            0xc2 as f64 / 256.0 + 0x80 as f64 / 65536.0
        );
        assert!(text_point("a") < text_point("ab"));
        assert!(text_point("ab") < text_point("b"));
        let m = interval_measure(Some(&Bound::Text("m".into())), None);
        assert!((m - (1.0 - 109.0 / 256.0)).abs() < 1e-15);
    }

    #[test]
    fn arcs_measure_over_the_digest_width() {
        let mut half = [0u8; 20];
        half[4] = 0x80;
        assert_eq!(arc_measure(&[0; 20], Some(&half), 128), 0.5);
        assert_eq!(arc_measure(&half, None, 128), 0.5);
    }

    #[test]
    fn splitmix_is_the_reference_sequence() {
        // First outputs for seed 0 from the reference implementation (Vigna).
        let mut r = SplitMix64(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }
}
