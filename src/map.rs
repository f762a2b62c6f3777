//! Partition maps: the JSON format, its validation, and routing a key to its owner shard.
//!
//! Validation walks the raw JSON rather than relying on serde's derive, because a reviewer wants
//! every problem in one run, each with its JSON path, not the first one serde stumbles on.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::InputError;
use crate::hashing::{token_mod, HashKind, Token};
use crate::ident::{is_plain_identifier, is_shard_name};
use crate::shard_url::ShardUrl;

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
pub struct Map {
    pub shards: BTreeMap<String, ShardUrl>,
    pub tables: Vec<TableSpec>,
    pub partitioning: Partitioning,
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

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Collects problems with their JSON paths.
struct Problems {
    label: String,
    list: Vec<String>,
}

impl Problems {
    fn new(label: &str) -> Self {
        Problems {
            label: label.to_string(),
            list: Vec::new(),
        }
    }
    fn add(&mut self, path: &str, msg: impl fmt::Display) {
        if path.is_empty() {
            self.list.push(format!("{}: {msg}", self.label));
        } else {
            self.list.push(format!("{}: {path}: {msg}", self.label));
        }
    }
}

fn check_fields(
    obj: &serde_json::Map<String, Value>,
    path: &str,
    known: &[&str],
    p: &mut Problems,
) {
    for k in obj.keys() {
        if !known.contains(&k.as_str()) {
            let at = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            p.add(
                &at,
                format!("unknown field (expected one of: {})", known.join(", ")),
            );
        }
    }
}

fn parse_map(v: &Value, p: &mut Problems) -> Option<Map> {
    let Some(obj) = v.as_object() else {
        p.add("", "the map must be a JSON object");
        return None;
    };
    check_fields(obj, "", &["shards", "tables", "partitioning"], p);
    let shards = parse_shards(obj.get("shards"), p);
    let tables = parse_tables(obj.get("tables"), p);
    let partitioning = match obj.get("partitioning") {
        None => {
            p.add("partitioning", "missing");
            None
        }
        Some(v) => parse_partitioning(v, shards.as_ref(), p),
    };
    Some(Map {
        shards: shards?,
        tables: tables?,
        partitioning: partitioning?,
    })
}

fn parse_shards(v: Option<&Value>, p: &mut Problems) -> Option<BTreeMap<String, ShardUrl>> {
    let Some(v) = v else {
        p.add("shards", "missing");
        return None;
    };
    let Some(obj) = v.as_object() else {
        p.add(
            "shards",
            "must be an object of shard name to connection URL",
        );
        return None;
    };
    if obj.is_empty() {
        p.add("shards", "no shards");
    }
    let mut out = BTreeMap::new();
    for (name, url) in obj {
        let path = format!("shards.{name}");
        if !is_shard_name(name) {
            p.add(
                &path,
                "shard names are letters, digits, '_' and '-', starting with a letter, at most 63",
            );
        }
        match url.as_str() {
            None => p.add(&path, "must be a connection URL string"),
            Some(s) => match ShardUrl::parse(s) {
                Ok(u) => {
                    out.insert(name.clone(), u);
                }
                Err(e) => p.add(&path, e),
            },
        }
    }
    Some(out)
}

fn parse_tables(v: Option<&Value>, p: &mut Problems) -> Option<Vec<TableSpec>> {
    let Some(v) = v else {
        p.add("tables", "missing");
        return None;
    };
    let Some(arr) = v.as_array() else {
        p.add("tables", "must be an array of {\"name\", \"key\"}");
        return None;
    };
    if arr.is_empty() {
        p.add("tables", "no tables");
    }
    let mut out = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, t) in arr.iter().enumerate() {
        let path = format!("tables[{i}]");
        let Some(obj) = t.as_object() else {
            p.add(&path, "must be an object {\"name\", \"key\"}");
            continue;
        };
        check_fields(obj, &path, &["name", "key"], p);
        let name = ident_field(obj, &path, "name", p);
        let key = ident_field(obj, &path, "key", p);
        if let Some(name) = &name {
            let lower = name.to_ascii_lowercase();
            if let Some(j) = seen.get(&lower) {
                p.add(
                    &format!("{path}.name"),
                    format!("table {name} is listed twice (also tables[{j}])"),
                );
            } else {
                seen.insert(lower, i);
            }
        }
        if let (Some(name), Some(key)) = (name, key) {
            out.push(TableSpec { name, key });
        }
    }
    Some(out)
}

fn ident_field(
    obj: &serde_json::Map<String, Value>,
    path: &str,
    field: &str,
    p: &mut Problems,
) -> Option<String> {
    let at = format!("{path}.{field}");
    match obj.get(field) {
        None => {
            p.add(&at, "missing");
            None
        }
        Some(Value::String(s)) if is_plain_identifier(s) => Some(s.clone()),
        Some(Value::String(s)) => {
            p.add(
                &at,
                format!("{s:?} is not a plain SQL identifier (letters, digits and '_', not starting with a digit, at most 63)"),
            );
            None
        }
        Some(_) => {
            p.add(&at, "must be a string");
            None
        }
    }
}

fn hash_field(
    obj: &serde_json::Map<String, Value>,
    allowed: &[HashKind],
    kind: &str,
    p: &mut Problems,
) -> Option<HashKind> {
    let names: Vec<&str> = allowed.iter().map(|h| h.name()).collect();
    match obj.get("hash") {
        None => {
            p.add(
                "partitioning.hash",
                format!("missing (one of: {})", names.join(", ")),
            );
            None
        }
        Some(Value::String(s)) => match HashKind::parse(s) {
            Some(h) if allowed.contains(&h) => Some(h),
            _ => {
                p.add(
                    "partitioning.hash",
                    format!(
                        "{kind} does not take hash {s:?} (one of: {})",
                        names.join(", ")
                    ),
                );
                None
            }
        },
        Some(_) => {
            p.add("partitioning.hash", "must be a string");
            None
        }
    }
}

fn shard_list(
    obj: &serde_json::Map<String, Value>,
    field: &str,
    shards: Option<&BTreeMap<String, ShardUrl>>,
    p: &mut Problems,
) -> Option<Vec<String>> {
    let path = format!("partitioning.{field}");
    let Some(arr) = obj.get(field).and_then(|v| v.as_array()) else {
        p.add(&path, "missing or not an array of shard names");
        return None;
    };
    if arr.is_empty() {
        p.add(&path, "no shards");
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (i, v) in arr.iter().enumerate() {
        let at = format!("{path}[{i}]");
        match v.as_str() {
            None => {
                p.add(&at, "must be a shard name");
                ok = false;
            }
            Some(s) => {
                if let Some(j) = out.iter().position(|o: &String| o == s) {
                    p.add(&at, format!("duplicate shard {s:?} (also {path}[{j}])"));
                    ok = false;
                }
                if let Some(sh) = shards {
                    if !sh.contains_key(s) {
                        p.add(&at, format!("unknown shard {s:?} (not in shards)"));
                        ok = false;
                    }
                }
                out.push(s.to_string());
            }
        }
    }
    ok.then_some(out)
}

fn parse_partitioning(
    v: &Value,
    shards: Option<&BTreeMap<String, ShardUrl>>,
    p: &mut Problems,
) -> Option<Partitioning> {
    let Some(obj) = v.as_object() else {
        p.add("partitioning", "must be an object with a \"kind\"");
        return None;
    };
    let kind = obj.get("kind").and_then(|k| k.as_str());
    match kind {
        Some("modulo") => {
            check_fields(obj, "partitioning", &["kind", "hash", "shards"], p);
            let hash = hash_field(
                obj,
                &[HashKind::Identity, HashKind::Md5, HashKind::Sha1],
                "modulo",
                p,
            );
            let list = shard_list(obj, "shards", shards, p);
            Some(Partitioning::Modulo {
                hash: hash?,
                shards: list?,
            })
        }
        Some("ring") => {
            check_fields(obj, "partitioning", &["kind", "hash", "vnodes", "nodes"], p);
            let hash = hash_field(obj, &[HashKind::Md5, HashKind::Sha1], "ring", p);
            let vnodes = match obj.get("vnodes").and_then(|v| v.as_u64()) {
                Some(0) => {
                    p.add("partitioning.vnodes", "must be at least 1");
                    None
                }
                Some(n) if n > MAX_VNODES => {
                    p.add(
                        "partitioning.vnodes",
                        format!("{n} is absurdly many (at most {MAX_VNODES})"),
                    );
                    None
                }
                Some(n) => Some(n as u32),
                None => {
                    p.add("partitioning.vnodes", "missing or not a positive integer");
                    None
                }
            };
            let nodes = shard_list(obj, "nodes", shards, p);
            Some(Partitioning::Ring {
                hash: hash?,
                vnodes: vnodes?,
                nodes: nodes?,
            })
        }
        Some("range") => {
            check_fields(obj, "partitioning", &["kind", "ranges"], p);
            parse_ranges(obj.get("ranges"), shards, p).map(|ranges| Partitioning::Range { ranges })
        }
        Some(other) => {
            p.add(
                "partitioning.kind",
                format!("unknown kind {other:?} (one of: modulo, range, ring)"),
            );
            None
        }
        None => {
            p.add("partitioning.kind", "missing (one of: modulo, range, ring)");
            None
        }
    }
}

fn parse_bound(v: Option<&Value>, at: &str, p: &mut Problems) -> Result<Option<Bound>, ()> {
    match v {
        None => {
            p.add(at, "missing (use null for unbounded)");
            Err(())
        }
        Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => Ok(Some(Bound::Int(i))),
            None => {
                p.add(at, format!("{n} is not a 64-bit integer"));
                Err(())
            }
        },
        Some(Value::String(s)) => Ok(Some(Bound::Text(s.clone()))),
        Some(_) => {
            p.add(at, "must be an integer, a string or null");
            Err(())
        }
    }
}

fn cmp_from(a: &Option<Bound>, b: &Option<Bound>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, _) => Ordering::Less,
        (_, None) => Ordering::Greater,
        (Some(x), Some(y)) => cmp_bound(x, y),
    }
}

/// Text compares bytewise, which is what `str`'s Ord does on UTF-8.
fn cmp_bound(a: &Bound, b: &Bound) -> Ordering {
    a.cmp(b)
}

fn parse_ranges(
    v: Option<&Value>,
    shards: Option<&BTreeMap<String, ShardUrl>>,
    p: &mut Problems,
) -> Option<Vec<RangeSpec>> {
    let Some(arr) = v.and_then(|v| v.as_array()) else {
        p.add("partitioning.ranges", "missing or not an array");
        return None;
    };
    if arr.is_empty() {
        p.add("partitioning.ranges", "no ranges");
        return None;
    }
    let before = p.list.len();
    let mut items: Vec<(usize, RangeSpec)> = Vec::new();
    let mut kinds = BTreeSet::new();
    for (i, r) in arr.iter().enumerate() {
        let path = format!("partitioning.ranges[{i}]");
        let Some(obj) = r.as_object() else {
            p.add(&path, "must be an object {\"from\", \"to\", \"shard\"}");
            continue;
        };
        check_fields(obj, &path, &["from", "to", "shard"], p);
        let from = parse_bound(obj.get("from"), &format!("{path}.from"), p);
        let to = parse_bound(obj.get("to"), &format!("{path}.to"), p);
        let shard = match obj.get("shard").and_then(|s| s.as_str()) {
            None => {
                p.add(&format!("{path}.shard"), "missing or not a shard name");
                None
            }
            Some(s) => {
                if shards.is_some_and(|m| !m.contains_key(s)) {
                    p.add(
                        &format!("{path}.shard"),
                        format!("unknown shard {s:?} (not in shards)"),
                    );
                }
                Some(s.to_string())
            }
        };
        let (Ok(from), Ok(to), Some(shard)) = (from, to, shard) else {
            continue;
        };
        for b in [&from, &to].into_iter().flatten() {
            kinds.insert(matches!(b, Bound::Int(_)));
        }
        if let (Some(f), Some(t)) = (&from, &to) {
            if cmp_bound(f, t) != Ordering::Less {
                p.add(&path, format!("from ({f}) must be less than to ({t})"));
            }
        }
        items.push((i, RangeSpec { from, to, shard }));
    }
    if kinds.len() > 1 {
        p.add(
            "partitioning.ranges",
            "bounds mix integers and strings; a map's keys are all integers or all text",
        );
        return None;
    }
    if p.list.len() > before {
        return None;
    }
    items.sort_by(|a, b| cmp_from(&a.1.from, &b.1.from).then(a.0.cmp(&b.0)));
    let (first_i, first) = &items[0];
    if first.from.is_some() {
        p.add(
            &format!("partitioning.ranges[{first_i}]"),
            "gap: no range starts at null (unbounded below)",
        );
    }
    for w in items.windows(2) {
        let ((ai, a), (bi, b)) = (&w[0], &w[1]);
        let path = format!("partitioning.ranges[{bi}]");
        match (&a.to, &b.from) {
            (None, _) => p.add(&path, format!("overlaps ranges[{ai}]")),
            (Some(_), None) => p.add(&path, format!("overlaps ranges[{ai}]")),
            (Some(t), Some(f)) => match cmp_bound(t, f) {
                Ordering::Greater => p.add(&path, format!("overlaps ranges[{ai}]")),
                Ordering::Less => p.add(
                    &path,
                    format!("gap: ranges[{ai}] ends at {t} but this range starts at {f}"),
                ),
                Ordering::Equal => {}
            },
        }
    }
    let (last_i, last) = &items[items.len() - 1];
    if last.to.is_some() {
        p.add(
            &format!("partitioning.ranges[{last_i}]"),
            "gap: no range ends at null (unbounded above)",
        );
    }
    if p.list.len() > before {
        return None;
    }
    Some(items.into_iter().map(|(_, r)| r).collect())
}

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
        owner: Vec<usize>,
    },
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
                Compiled::Ring {
                    hash: *hash,
                    tokens: pairs.iter().map(|p| p.0).collect(),
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
                owner,
            } => {
                let h = hash.token(key.canonical().as_bytes());
                Ok(owner[ring_successor(tokens, &h)])
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Map, InputError> {
        Map::parse(s, "m.json")
    }

    const BASE: &str = r#"{"shards": {"s0": "sqlite://a.db", "s1": "sqlite://b.db"},
        "tables": [{"name": "users", "key": "id"}],
        "partitioning": PART}"#;

    fn with(part: &str) -> Result<Map, InputError> {
        parse(&BASE.replace("PART", part))
    }

    fn problems(part: &str) -> Vec<String> {
        with(part).unwrap_err().problems
    }

    #[test]
    fn identity_modulo_routes_by_euclidean_remainder() {
        let m = with(r#"{"kind":"modulo","hash":"identity","shards":["s0","s1"]}"#).unwrap();
        let p = m.compile();
        assert_eq!(p.owner(&Key::Int(4)).unwrap(), "s0");
        assert_eq!(p.owner(&Key::Int(-3)).unwrap(), "s1");
        assert!(p.owner(&Key::Text("x".into())).is_err());
    }

    #[test]
    fn range_routes_half_open() {
        let m = with(
            r#"{"kind":"range","ranges":[{"from":10,"to":null,"shard":"s1"},{"from":null,"to":10,"shard":"s0"}]}"#,
        )
        .unwrap();
        let p = m.compile();
        assert_eq!(p.owner(&Key::Int(9)).unwrap(), "s0");
        assert_eq!(p.owner(&Key::Int(10)).unwrap(), "s1");
        assert_eq!(p.owner(&Key::Int(i64::MIN)).unwrap(), "s0");
    }

    #[test]
    fn a_single_unbounded_range_takes_any_key() {
        let m =
            with(r#"{"kind":"range","ranges":[{"from":null,"to":null,"shard":"s1"}]}"#).unwrap();
        let p = m.compile();
        assert_eq!(p.owner(&Key::Text("abc".into())).unwrap(), "s1");
        assert_eq!(p.owner(&Key::Int(-7)).unwrap(), "s1");
    }

    #[test]
    fn text_range_compares_bytewise() {
        let m = with(
            r#"{"kind":"range","ranges":[{"from":null,"to":"m","shard":"s0"},{"from":"m","to":null,"shard":"s1"}]}"#,
        )
        .unwrap();
        let p = m.compile();
        assert_eq!(p.owner(&Key::Text("Zebra".into())).unwrap(), "s0");
        assert_eq!(p.owner(&Key::Text("m".into())).unwrap(), "s1");
        assert_eq!(p.owner(&Key::Text("é".into())).unwrap(), "s1");
    }

    #[test]
    fn ring_successor_wraps() {
        let t = [[1u8; 20], [5u8; 20]];
        assert_eq!(ring_successor(&t, &[0u8; 20]), 0);
        assert_eq!(ring_successor(&t, &[1u8; 20]), 1);
        assert_eq!(ring_successor(&t, &[9u8; 20]), 0);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errs = problems(
            r#"{"kind":"range","ranges":[{"from":null,"to":10,"shard":"s0"},{"from":5,"to":20,"shard":"s9"},{"from":30,"to":null,"shard":"s1"}]}"#,
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("ranges[1].shard: unknown shard")),
            "{errs:?}"
        );
        let errs = problems(
            r#"{"kind":"range","ranges":[{"from":null,"to":10,"shard":"s0"},{"from":5,"to":20,"shard":"s1"},{"from":30,"to":null,"shard":"s1"}]}"#,
        );
        assert!(
            errs.contains(&"m.json: partitioning.ranges[1]: overlaps ranges[0]".to_string()),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.contains("ranges[2]: gap")),
            "{errs:?}"
        );
    }

    #[test]
    fn validation_errors() {
        let cases = [
            (
                r#"{"kind":"ring","hash":"identity","vnodes":4,"nodes":["s0"]}"#,
                "ring does not take hash",
            ),
            (
                r#"{"kind":"ring","hash":"sha1","vnodes":0,"nodes":["s0"]}"#,
                "vnodes: must be at least 1",
            ),
            (
                r#"{"kind":"ring","hash":"sha1","vnodes":100000000,"nodes":["s0"]}"#,
                "absurdly many",
            ),
            (
                r#"{"kind":"ring","hash":"sha1","vnodes":4,"nodes":["s0","s0"]}"#,
                "duplicate shard",
            ),
            (
                r#"{"kind":"modulo","hash":"md5","shards":["s0","s7"]}"#,
                "unknown shard \"s7\"",
            ),
            (
                r#"{"kind":"modulo","hash":"md5","shards":["s0"],"extra":1}"#,
                "partitioning.extra: unknown field",
            ),
            (
                r#"{"kind":"range","ranges":[{"from":null,"to":5,"shard":"s0"},{"from":5,"to":5,"shard":"s1"},{"from":5,"to":null,"shard":"s1"}]}"#,
                "must be less than",
            ),
            (r#"{"kind":"wheel"}"#, "unknown kind"),
        ];
        for (part, want) in cases {
            let errs = problems(part);
            assert!(errs.iter().any(|e| e.contains(want)), "{part}: {errs:?}");
        }
    }

    #[test]
    fn malformed_json_names_line_and_column() {
        let e = parse("{\n  \"shards\": ,\n}").unwrap_err();
        assert!(
            e.problems[0].starts_with("m.json: malformed JSON at line 2 column"),
            "{e}"
        );
    }

    #[test]
    fn bad_identifiers_and_duplicate_tables() {
        let e = parse(
            r#"{"shards":{"s0":"sqlite://a.db"},"tables":[{"name":"users; drop","key":"id"},{"name":"t","key":"k"},{"name":"T","key":"k"}],
            "partitioning":{"kind":"modulo","hash":"md5","shards":["s0"]}}"#,
        )
        .unwrap_err();
        let all = e.to_string();
        assert!(
            all.contains("tables[0].name: \"users; drop\" is not a plain SQL identifier"),
            "{all}"
        );
        assert!(
            all.contains("tables[2].name: table T is listed twice"),
            "{all}"
        );
    }

    #[test]
    fn no_shards() {
        let e = parse(r#"{"shards":{},"tables":[{"name":"t","key":"k"}],"partitioning":{"kind":"modulo","hash":"md5","shards":["s0"]}}"#).unwrap_err();
        assert!(e.to_string().contains("shards: no shards"), "{e}");
    }
}
