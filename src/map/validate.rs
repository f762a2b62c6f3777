//! Validation of a map's JSON: every problem at once, each with the file and its JSON path.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

use super::{Bound, Map, Partitioning, RangeSpec, TableSpec, MAX_VNODES};
use crate::hashing::HashKind;
use crate::ident::{is_plain_identifier, is_shard_name};
use crate::shard_url::ShardUrl;

pub(super) fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Collects problems with their JSON paths.
pub(super) struct Problems {
    label: String,
    pub(super) list: Vec<String>,
}

impl Problems {
    pub(super) fn new(label: &str) -> Self {
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

pub(super) fn parse_map(v: &Value, p: &mut Problems) -> Option<Map> {
    let Some(obj) = v.as_object() else {
        p.add("", "the map must be a JSON object");
        return None;
    };
    check_fields(obj, "", &["shards", "tables", "partitioning"], p);
    let mut replicas = BTreeMap::new();
    let shards = parse_shards(obj.get("shards"), &mut replicas, p);
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
        replicas,
        tables: tables?,
        partitioning: partitioning?,
    })
}

/// A shard is its URL, or `{"url": URL, "replicas": [URL, ...]}`; the replicas of the shards
/// that have some go into `replicas`.
fn parse_shards(
    v: Option<&Value>,
    replicas: &mut BTreeMap<String, Vec<ShardUrl>>,
    p: &mut Problems,
) -> Option<BTreeMap<String, ShardUrl>> {
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
        let (primary, reps) = match url {
            Value::Object(o) => {
                check_fields(o, &path, &["url", "replicas"], p);
                let primary = match o.get("url") {
                    None => {
                        p.add(&format!("{path}.url"), "missing");
                        None
                    }
                    Some(u) => parse_url(u, &format!("{path}.url"), p),
                };
                (primary, parse_replicas(o.get("replicas"), &path, p))
            }
            _ => (parse_url(url, &path, p), Vec::new()),
        };
        let Some(primary) = primary else { continue };
        for (i, r) in reps.iter().enumerate() {
            let at = format!("{path}.replicas[{i}]");
            if *r == primary {
                p.add(&at, "is the shard's own URL");
            } else if let (Some(a), Some(b)) = (r.dialect(), primary.dialect()) {
                if a != b {
                    p.add(&at, "is not the same kind of database as the shard");
                }
            }
            if reps[..i].contains(r) {
                p.add(&at, "listed twice");
            }
        }
        if !reps.is_empty() {
            replicas.insert(name.clone(), reps);
        }
        out.insert(name.clone(), primary);
    }
    Some(out)
}

fn parse_url(v: &Value, path: &str, p: &mut Problems) -> Option<ShardUrl> {
    match v.as_str() {
        None => {
            p.add(
                path,
                "must be a connection URL string (or {\"url\", \"replicas\"})",
            );
            None
        }
        Some(s) => match ShardUrl::parse(s) {
            Ok(u) => Some(u),
            Err(e) => {
                p.add(path, e);
                None
            }
        },
    }
}

fn parse_replicas(v: Option<&Value>, path: &str, p: &mut Problems) -> Vec<ShardUrl> {
    let Some(v) = v else { return Vec::new() };
    let at = format!("{path}.replicas");
    let Some(arr) = v.as_array() else {
        p.add(&at, "must be an array of connection URLs");
        return Vec::new();
    };
    if arr.is_empty() {
        p.add(&at, "empty: leave it out for a shard without replicas");
    }
    arr.iter()
        .enumerate()
        .filter_map(|(i, r)| parse_url(r, &format!("{at}[{i}]"), p))
        .collect()
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
pub(super) fn cmp_bound(a: &Bound, b: &Bound) -> Ordering {
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
