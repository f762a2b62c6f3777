//! A map compiled for routing: shard indices instead of names, sorted tokens for rings.

use std::cmp::Ordering;

use super::validate::cmp_bound;
use super::{Bound, Key, KeyKind, Partitioning, RouteError};
use crate::hashing::{token_mod, HashKind, Token};

/// A map compiled for routing: shard indices instead of names, sorted tokens for rings.
#[derive(Debug, Clone)]
pub struct Partitioner {
    /// Owner shard names; routing answers an index into this list.
    pub shards: Vec<String>,
    kind: Compiled,
}

#[derive(Debug, Clone)]
enum Compiled {
    Modulo {
        hash: HashKind,
        slots: Vec<usize>,
    },
    Range {
        starts: Vec<Option<Bound>>,
        owner: Vec<usize>,
        integer: bool,
    },
    Ring {
        hash: HashKind,
        tokens: Vec<Token>,
        /// The top 64 significant bits of each token: a lookup binary-searches this compact
        /// array (8 bytes a token instead of 20) and compares whole tokens only among equal
        /// prefixes, which keeps a 256k-token ring's search in cache.
        prefixes: Vec<u64>,
        /// `buckets[b]` is the index of the first token whose top 16 bits are >= b (65,537
        /// entries): a lookup searches only its bucket, a handful of tokens, so routing through a
        /// ring of a quarter-million tokens costs two or three cache misses instead of eighteen.
        buckets: Vec<u32>,
        owner: Vec<usize>,
    },
}

const BUCKETS: usize = 1 << 16;

/// The 64 most significant bits of a digest of `hash`.
fn prefix(hash: HashKind, t: &Token) -> u64 {
    let skip = (160 - hash.bits() as usize) / 8;
    let mut b = [0u8; 8];
    b.copy_from_slice(&t[skip..skip + 8]);
    u64::from_be_bytes(b)
}

impl Partitioner {
    pub fn new(part: &Partitioning) -> Partitioner {
        let shards = part.owners();
        let idx = |name: &str| shards.iter().position(|s| s == name).unwrap_or(0);
        let kind = match part {
            Partitioning::Modulo { hash, shards: list } => Compiled::Modulo {
                hash: *hash,
                slots: list.iter().map(|s| idx(s)).collect(),
            },
            Partitioning::Range { ranges } => Compiled::Range {
                starts: ranges.iter().map(|r| r.from.clone()).collect(),
                owner: ranges.iter().map(|r| idx(&r.shard)).collect(),
                integer: part.key_kind() != KeyKind::Text,
            },
            Partitioning::Ring {
                hash,
                vnodes,
                nodes,
            } => {
                // Resolve each node's index once: a linear lookup per token made compiling a
                // 1000-node x 256-vnode ring take most of a second.
                let node_idx: Vec<usize> = nodes.iter().map(|n| idx(n)).collect();
                let mut pairs: Vec<(Token, usize)> = ring_tokens(*hash, *vnodes, nodes)
                    .into_iter()
                    .map(|(t, n)| (t, node_idx[n]))
                    .collect();
                // Equal tokens are astronomically unlikely; break ties by name so that the
                // ring is still a deterministic function of the map.
                pairs.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| shards[a.1].cmp(&shards[b.1])));
                pairs.dedup_by(|a, b| a.0 == b.0);
                let prefixes: Vec<u64> = pairs.iter().map(|p| prefix(*hash, &p.0)).collect();
                let mut buckets = Vec::with_capacity(BUCKETS + 1);
                for b in 0..=BUCKETS as u64 {
                    buckets.push(prefixes.partition_point(|p| (p >> 48) < b) as u32);
                }
                Compiled::Ring {
                    hash: *hash,
                    tokens: pairs.iter().map(|p| p.0).collect(),
                    prefixes,
                    buckets,
                    owner: pairs.iter().map(|p| p.1).collect(),
                }
            }
        };
        Partitioner { shards, kind }
    }

    /// The index (into `self.shards`) of the key's owner.
    pub fn owner_index(&self, key: &Key) -> Result<usize, RouteError> {
        match &self.kind {
            Compiled::Modulo { hash, slots } => {
                let n = slots.len() as u64;
                let slot = match (hash, key) {
                    (HashKind::Identity, Key::Int(v)) => v.rem_euclid(n as i64) as u64,
                    (HashKind::Identity, Key::Text(s)) => match s.parse::<i64>() {
                        Ok(v) => v.rem_euclid(n as i64) as u64,
                        Err(_) => return Err(RouteError::NotInteger(s.clone())),
                    },
                    (h, k) => token_mod(&h.token(k.canonical().as_bytes()), n),
                };
                Ok(slots[slot as usize])
            }
            Compiled::Range {
                starts,
                owner,
                integer,
            } => {
                // A single unbounded range has no bounds to compare with: it takes any key.
                if starts.len() == 1 {
                    return Ok(owner[0]);
                }
                let b = match (integer, key) {
                    (true, Key::Int(v)) => Bound::Int(*v),
                    (true, Key::Text(s)) => match s.parse::<i64>() {
                        Ok(v) => Bound::Int(v),
                        Err(_) => return Err(RouteError::NotInteger(s.clone())),
                    },
                    (false, Key::Text(s)) => Bound::Text(s.clone()),
                    (false, Key::Int(v)) => return Err(RouteError::NotText(v.to_string())),
                };
                // starts[0] is None (unbounded below); find the last start <= key.
                let i = starts.partition_point(|s| match s {
                    None => true,
                    Some(s) => cmp_bound(s, &b) != Ordering::Greater,
                });
                Ok(owner[i.saturating_sub(1)])
            }
            Compiled::Ring {
                hash,
                tokens,
                prefixes,
                buckets,
                owner,
            } => {
                let h = hash.token(key.canonical().as_bytes());
                let hp = prefix(*hash, &h);
                let b = (hp >> 48) as usize;
                let (start, end) = (buckets[b] as usize, buckets[b + 1] as usize);
                // Tokens of earlier buckets or with a smaller prefix are below h, of later
                // buckets or with a larger prefix above it; only equal prefixes need the whole
                // token compared.
                let lo = start + prefixes[start..end].partition_point(|p| *p < hp);
                let hi = lo + prefixes[lo..end].partition_point(|p| *p <= hp);
                let i = lo + tokens[lo..hi].partition_point(|t| t <= &h);
                Ok(owner[if i == tokens.len() { 0 } else { i }])
            }
        }
    }

    pub fn owner(&self, key: &Key) -> Result<&str, RouteError> {
        self.owner_index(key).map(|i| self.shards[i].as_str())
    }

    /// For a ring: its hash, sorted tokens and each token's owner (an index into `shards`).
    /// The planner diffs rings token by token and must see exactly the ring routing uses.
    pub fn ring(&self) -> Option<(HashKind, &[Token], &[usize])> {
        match &self.kind {
            Compiled::Ring {
                hash,
                tokens,
                owner,
                ..
            } => Some((*hash, tokens, owner)),
            _ => None,
        }
    }
}

/// Index of the first token strictly greater than `h`, wrapping to the smallest.
pub fn ring_successor(tokens: &[Token], h: &Token) -> usize {
    let i = tokens.partition_point(|t| t <= h);
    if i == tokens.len() {
        0
    } else {
        i
    }
}

/// Every (token, node index) of a ring, unsorted: node n owns `H("n:i")` for i in 0..vnodes.
pub fn ring_tokens(hash: HashKind, vnodes: u32, nodes: &[String]) -> Vec<(Token, usize)> {
    let mut out = Vec::with_capacity(nodes.len() * vnodes as usize);
    for (n, name) in nodes.iter().enumerate() {
        for i in 0..vnodes {
            out.push((hash.token(format!("{name}:{i}").as_bytes()), n));
        }
    }
    out
}
