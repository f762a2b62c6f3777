//! Partition maps: the JSON format, its validation, and routing a key to its owner shard.
//!
//! Validation walks the raw JSON rather than relying on serde's derive, because a reviewer wants
//! every problem in one run, each with its JSON path, not the first one serde stumbles on.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::InputError;
use crate::hashing::HashKind;
use crate::shard_url::ShardUrl;

mod partitioner;
mod validate;

pub use partitioner::{ring_successor, ring_tokens, Partitioner};
use validate::{parse_map, strip_position, Problems};

/// Most vnodes a node may have; beyond this a ring costs memory for no balance gain.
pub const MAX_VNODES: u64 = 65_536;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSpec {
    pub name: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[serde(untagged)]
pub enum Bound {
    Int(i64),
    Text(String),
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Int(v) => write!(f, "{v}"),
            Bound::Text(s) => write!(f, "{s:?}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeSpec {
    pub from: Option<Bound>,
    pub to: Option<Bound>,
    pub shard: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Partitioning {
    Modulo {
        hash: HashKind,
        shards: Vec<String>,
    },
    /// Ranges are kept sorted by `from`, so routing can binary-search them.
    Range {
        ranges: Vec<RangeSpec>,
    },
    Ring {
        hash: HashKind,
        vnodes: u32,
        nodes: Vec<String>,
    },
}

impl Partitioning {
    pub fn kind(&self) -> &'static str {
        match self {
            Partitioning::Modulo { .. } => "modulo",
            Partitioning::Range { .. } => "range",
            Partitioning::Ring { .. } => "ring",
        }
    }

    /// The shards that own some key, in the map's own order.
    pub fn owners(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let list: Vec<&String> = match self {
            Partitioning::Modulo { shards, .. } => shards.iter().collect(),
            Partitioning::Range { ranges } => ranges.iter().map(|r| &r.shard).collect(),
            Partitioning::Ring { nodes, .. } => nodes.iter().collect(),
        };
        list.into_iter()
            .filter(|s| seen.insert(s.as_str()))
            .cloned()
            .collect()
    }

    /// The key type the map can route.
    pub fn key_kind(&self) -> KeyKind {
        match self {
            Partitioning::Modulo {
                hash: HashKind::Identity,
                ..
            } => KeyKind::Integer,
            Partitioning::Range { ranges } => ranges
                .iter()
                .flat_map(|r| [r.from.as_ref(), r.to.as_ref()])
                .flatten()
                .map(|b| match b {
                    Bound::Int(_) => KeyKind::Integer,
                    Bound::Text(_) => KeyKind::Text,
                })
                .next()
                .unwrap_or(KeyKind::Any),
            _ => KeyKind::Any,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Integer,
    Text,
    /// Hash-based maps route any key by its canonical string.
    Any,
}

impl KeyKind {
    /// The kind both maps accept, or None when one needs integers and the other text.
    pub fn unify(self, other: KeyKind) -> Option<KeyKind> {
        match (self, other) {
            (KeyKind::Any, k) | (k, KeyKind::Any) => Some(k),
            (a, b) if a == b => Some(a),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Integer => "integer",
            KeyKind::Text => "text",
            KeyKind::Any => "integer or text",
        }
    }
}

/// A shard-key value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Int(i64),
    Text(String),
}

impl Key {
    /// Reads a key typed on a command line or in a file, as the map's key kind asks.
    pub fn parse(s: &str, kind: KeyKind) -> Result<Key, String> {
        match kind {
            KeyKind::Integer => s.trim().parse::<i64>().map(Key::Int).map_err(|_| {
                format!("key {s:?} is not a 64-bit integer, and this map routes integer keys")
            }),
            KeyKind::Text | KeyKind::Any => Ok(Key::Text(s.to_string())),
        }
    }

    /// The canonical string: decimal for an integer, the text itself otherwise.
    pub fn canonical(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Key::Int(v) => std::borrow::Cow::Owned(v.to_string()),
            Key::Text(s) => std::borrow::Cow::Borrowed(s),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("key {0} is not an integer, and this map routes integer keys")]
    NotInteger(String),
    #[error("key {0} is an integer, and this map routes text keys")]
    NotText(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "MapRepr", into = "MapRepr")]
pub struct Map {
    /// Each shard's primary: the database reshard reads, writes and fences.
    pub shards: BTreeMap<String, ShardUrl>,
    /// The replicas of the shards that have some (`{"url", "replicas"}` in the file): read
    /// for their lag only (src/throttle.rs).
    pub replicas: BTreeMap<String, Vec<ShardUrl>>,
    pub tables: Vec<TableSpec>,
    pub partitioning: Partitioning,
}

/// A shard as written: its URL alone (every map before replicas, so their fingerprints stay),
/// or the URL with its replicas.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum ShardRepr {
    Url(ShardUrl),
    WithReplicas {
        url: ShardUrl,
        replicas: Vec<ShardUrl>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MapRepr {
    shards: BTreeMap<String, ShardRepr>,
    tables: Vec<TableSpec>,
    partitioning: Partitioning,
}

impl From<MapRepr> for Map {
    fn from(r: MapRepr) -> Map {
        let mut shards = BTreeMap::new();
        let mut replicas = BTreeMap::new();
        for (name, s) in r.shards {
            match s {
                ShardRepr::Url(u) => {
                    shards.insert(name, u);
                }
                ShardRepr::WithReplicas {
                    url,
                    replicas: reps,
                } => {
                    shards.insert(name.clone(), url);
                    if !reps.is_empty() {
                        replicas.insert(name, reps);
                    }
                }
            }
        }
        Map {
            shards,
            replicas,
            tables: r.tables,
            partitioning: r.partitioning,
        }
    }
}

impl From<Map> for MapRepr {
    fn from(m: Map) -> MapRepr {
        let mut replicas = m.replicas;
        let shards = m
            .shards
            .into_iter()
            .map(|(name, url)| {
                let s = match replicas.remove(&name) {
                    Some(reps) if !reps.is_empty() => ShardRepr::WithReplicas {
                        url,
                        replicas: reps,
                    },
                    _ => ShardRepr::Url(url),
                };
                (name, s)
            })
            .collect();
        MapRepr {
            shards,
            tables: m.tables,
            partitioning: m.partitioning,
        }
    }
}

impl Map {
    /// Reads and validates a map file. Every problem is reported, prefixed with the file name.
    pub fn load(path: &Path) -> Result<Map, InputError> {
        let label = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| InputError::one(format!("{label}: cannot read: {e}")))?;
        Map::parse(&text, &label)
    }

    pub fn parse(text: &str, label: &str) -> Result<Map, InputError> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            InputError::one(format!(
                "{label}: malformed JSON at line {} column {}: {}",
                e.line(),
                e.column(),
                strip_position(&e.to_string())
            ))
        })?;
        Map::from_value(&value, label)
    }

    pub fn from_value(value: &Value, label: &str) -> Result<Map, InputError> {
        let mut p = Problems::new(label);
        let map = parse_map(value, &mut p);
        match map {
            Some(m) if p.list.is_empty() => Ok(m),
            _ => Err(InputError::many(p.list)),
        }
    }

    /// The map as it may be shown or stored: passwords replaced, `env:` names kept.
    pub fn redacted(&self) -> Map {
        let mut m = self.clone();
        for url in m.shards.values_mut() {
            *url = url.redacted();
        }
        for url in m.replicas.values_mut().flatten() {
            *url = url.redacted();
        }
        m
    }

    /// Canonical JSON of the redacted map: the bytes the plan's fingerprint is taken over.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(&self.redacted()).unwrap_or_default()
    }

    pub fn compile(&self) -> Partitioner {
        Partitioner::new(&self.partitioning)
    }
}

#[cfg(test)]
mod tests;
