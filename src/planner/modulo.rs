//! modulo → modulo with the same hash: a key's old slot is `v mod N` and its new slot `v mod M`,
//! both functions of `v mod lcm(N, M)`, so each move is a set of residues modulo the lcm.

use super::{Acc, Draft, MAX_RESIDUE_MODULUS};
use crate::hashing::HashKind;
use crate::plan::Segments;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

pub(crate) fn diff(hash: HashKind, old: &[String], new: &[String]) -> Vec<Draft> {
    let (n, m) = (old.len() as u64, new.len() as u64);
    let g = gcd(n, m);
    let lcm = n / g * m;
    let mut acc = Acc::new();
    if lcm <= MAX_RESIDUE_MODULUS {
        for r in 0..lcm {
            let (a, b) = (&old[(r % n) as usize], &new[(r % m) as usize]);
            if a != b {
                let seg = acc.add(a, b, 1.0 / lcm as f64, || Segments::Residues {
                    hash,
                    modulus: lcm,
                    residues: Vec::new(),
                });
                if let Segments::Residues { residues, .. } = seg {
                    residues.push(r);
                }
            }
        }
    } else {
        // By the Chinese remainder theorem, old slot i and new slot j share exactly one residue
        // mod lcm when i ≡ j (mod gcd), and none otherwise.
        for i in 0..n {
            let mut j = i % g;
            while j < m {
                let (a, b) = (&old[i as usize], &new[j as usize]);
                if a != b {
                    acc.add(a, b, 1.0 / lcm as f64, || Segments::Owners);
                }
                j += g;
            }
        }
    }
    acc.into_drafts()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    #[test]
    fn doubling_moves_half_in_four_moves() {
        let d = diff(HashKind::Identity, &names("s", 4), &names("s", 8));
        assert_eq!(d.len(), 4);
        for (i, m) in d.iter().enumerate() {
            assert_eq!(m.source, format!("s{i}"));
            assert_eq!(m.destination, format!("s{}", i + 4));
            assert_eq!(
                m.segments,
                Segments::Residues {
                    hash: HashKind::Identity,
                    modulus: 8,
                    residues: vec![i as u64 + 4]
                }
            );
        }
        let total: f64 = d.iter().map(|m| m.fraction).sum();
        assert_eq!(total, 0.5);
    }

    #[test]
    fn huge_lcm_falls_back_to_owners_with_exact_fractions() {
        let d = diff(HashKind::Md5, &names("a", 1000), &names("b", 1001));
        let total: f64 = d.iter().map(|m| m.fraction).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        assert!(d.iter().all(|m| m.segments == Segments::Owners));
    }
}
