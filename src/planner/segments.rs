//! Deciding membership from a move's segments alone — what execution's SQL filters rely on —
//! so tests can check the segments themselves, not just the owners.

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::hashing::{token_hex, token_mod, HashKind};
use crate::map::{Bound, Key, Partitioner, RouteError};
use crate::plan::{Move, Plan, Segments};

/// Whether the segments hold `key`: `Some` for exact descriptions, `None` for `Owners`, which
/// only routing under both maps can decide.
pub fn segment_contains(seg: &Segments, key: &Key) -> Result<Option<bool>, RouteError> {
    match seg {
        Segments::Residues {
            hash,
            modulus,
            residues,
        } => {
            let r = match (hash, key) {
                (HashKind::Identity, Key::Int(v)) => v.rem_euclid(*modulus as i64) as u64,
                (HashKind::Identity, Key::Text(s)) => match s.parse::<i64>() {
                    Ok(v) => v.rem_euclid(*modulus as i64) as u64,
                    Err(_) => return Err(RouteError::NotInteger(s.clone())),
                },
                (h, k) => token_mod(&h.token(k.canonical().as_bytes()), *modulus),
            };
            Ok(Some(residues.binary_search(&r).is_ok()))
        }
        Segments::Ranges { ranges } => {
            let mut found = false;
            for iv in ranges {
                let lo_ok = match &iv.from {
                    None => true,
                    Some(b) => cmp_key(key, b)? != Ordering::Less,
                };
                let hi_ok = match &iv.to {
                    None => true,
                    Some(b) => cmp_key(key, b)? == Ordering::Less,
                };
                if lo_ok && hi_ok {
                    found = true;
                    break;
                }
            }
            Ok(Some(found))
        }
        Segments::Arcs { hash, arcs } => {
            let h = token_hex(&hash.token(key.canonical().as_bytes()), hash.bits());
            // Equal-width lowercase hex compares like the integers it spells.
            let hit = arcs.iter().any(|a| {
                a.from.as_str() <= h.as_str() && a.to.as_deref().is_none_or(|t| h.as_str() < t)
            });
            Ok(Some(hit))
        }
        Segments::Owners => Ok(None),
    }
}

/// Compares a key with a range bound of the map's key type.
fn cmp_key(key: &Key, b: &Bound) -> Result<Ordering, RouteError> {
    match (key, b) {
        (Key::Int(v), Bound::Int(w)) => Ok(v.cmp(w)),
        (Key::Text(s), Bound::Int(w)) => match s.parse::<i64>() {
            Ok(v) => Ok(v.cmp(w)),
            Err(_) => Err(RouteError::NotInteger(s.clone())),
        },
        (Key::Text(s), Bound::Text(t)) => Ok(s.as_str().cmp(t.as_str())),
        (Key::Int(v), Bound::Text(_)) => Err(RouteError::NotText(v.to_string())),
    }
}

/// The move that carries `key`, or None when its owner does not change. Exact segments are
/// decided from the segments alone; `Owners` plans route the key under both maps.
pub fn move_for_key<'p>(plan: &'p Plan, key: &Key) -> Result<Option<&'p Move>, RouteError> {
    let mut owners: Option<(String, String)> = None;
    for m in &plan.moves {
        match segment_contains(&m.segments, key)? {
            Some(true) => return Ok(Some(m)),
            Some(false) => {}
            None => {
                if owners.is_none() {
                    let a = plan.from.compile().owner(key)?.to_string();
                    let b = plan.to.compile().owner(key)?.to_string();
                    owners = Some((a, b));
                }
                if let Some((a, b)) = &owners {
                    if *a == m.source && *b == m.destination {
                        return Ok(Some(m));
                    }
                }
            }
        }
    }
    Ok(None)
}

impl Plan {
    /// See [`move_for_key`].
    pub fn move_for_key(&self, key: &Key) -> Result<Option<&Move>, RouteError> {
        move_for_key(self, key)
    }
}

/// Finds a key's move by routing it under both maps, compiled once: the fast path for code
/// that classifies many rows (`move_for_key` re-reads segments and suits tests and one-offs).
pub struct MoveFinder<'p> {
    from: Partitioner,
    to: Partitioner,
    by_pair: HashMap<(usize, usize), &'p Move>,
}

impl<'p> MoveFinder<'p> {
    pub fn new(plan: &'p Plan) -> MoveFinder<'p> {
        let (from, to) = (plan.from.compile(), plan.to.compile());
        let mut by_pair = HashMap::new();
        for m in &plan.moves {
            let a = from.shards.iter().position(|s| *s == m.source);
            let b = to.shards.iter().position(|s| *s == m.destination);
            if let (Some(a), Some(b)) = (a, b) {
                by_pair.insert((a, b), m);
            }
        }
        MoveFinder { from, to, by_pair }
    }

    /// The move carrying `key`, or None when its owner does not change.
    pub fn find(&self, key: &Key) -> Result<Option<&'p Move>, RouteError> {
        let a = self.from.owner_index(key)?;
        let b = self.to.owner_index(key)?;
        Ok(self.by_pair.get(&(a, b)).copied())
    }
}
