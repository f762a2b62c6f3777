//! The audit of a finished job (`reshard verify JOB --audit`): every row of every table sits on
//! its owner under the new map and nowhere else, and the rows per table across all shards equal
//! the count recorded when the job was created (or a tally given by the caller).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::backend::{self, Backend, KeyFilter};
use crate::map::{Key, Map};
use crate::plan::Plan;

/// Keys found on a shard that does not own them under the new map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Misplaced {
    pub shard: String,
    pub key: serde_json::Value,
    pub rows: u64,
    /// The owner under the new map.
    pub owner: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditTable {
    pub table: String,
    /// Rows across all shards of both maps (each database counted once).
    pub rows: u64,
    /// What they should add up to, and where that number comes from.
    pub expected_rows: Option<u64>,
    pub expected_from: Option<String>,
    pub misplaced_rows: u64,
    pub misplaced: Vec<Misplaced>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    pub job: String,
    pub ok: bool,
    pub tables: Vec<AuditTable>,
}

impl AuditReport {
    pub fn render_text(&self) -> String {
        let mut s = format!(
            "audit of job {}: {}\n",
            self.job,
            if self.ok { "OK" } else { "PROBLEMS FOUND" }
        );
        for t in &self.tables {
            let exp = match (&t.expected_rows, &t.expected_from) {
                (Some(n), Some(f)) => format!(
                    ", expected {n} ({f}){}",
                    if *n == t.rows { "" } else { " MISMATCH" }
                ),
                _ => format!(
                    ", NO EXPECTED COUNT recorded (the audit cannot see a lost row without one; \
                     pass --expect-rows {}=N)",
                    t.table
                ),
            };
            s.push_str(&format!(
                "  {}: {} rows{exp}, {} misplaced\n",
                t.table, t.rows, t.misplaced_rows
            ));
            for m in &t.misplaced {
                s.push_str(&format!(
                    "    key {} ({} rows) at {}, owner {}\n",
                    m.key, m.rows, m.shard, m.owner
                ));
            }
        }
        s
    }
}

/// The distinct databases of some maps: (shard name, backend), each database once.
async fn connect_all(maps: &[&Map]) -> Result<Vec<(String, String, Arc<dyn Backend>)>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for map in maps {
        for (name, url) in &map.shards {
            let id = format!("{name}\n{url}");
            if !seen.insert(id.clone()) {
                continue;
            }
            let b = backend::connect(name, url)
                .await
                .with_context(|| format!("shard {name}"))?;
            out.push((name.clone(), id, b));
        }
    }
    Ok(out)
}

fn key_json(k: &Key) -> serde_json::Value {
    match k {
        Key::Int(i) => serde_json::Value::from(*i),
        Key::Text(s) => serde_json::Value::from(s.clone()),
    }
}

/// Rows per table across the databases of `plan.from`: recorded when a job is created, and
/// what the audit expects afterwards for a job without concurrent writes. `known`: counts per
/// (shard, table) already taken (preflight's), used instead of counting those shards again.
pub async fn count_rows(
    plan: &Plan,
    known: &BTreeMap<(String, String), u64>,
) -> Result<Vec<(String, u64)>> {
    let counted = |name: &str| known.keys().any(|(s, _)| s == name);
    let mut from = plan.from.clone();
    from.shards.retain(|name, _| !counted(name));
    let dbs = connect_all(&[&from]).await?;
    let mut out = Vec::new();
    for t in &plan.from.tables {
        let mut total: u64 = known
            .iter()
            .filter(|((_, table), _)| *table == t.name)
            .map(|(_, n)| n)
            .sum();
        for (_, _, b) in &dbs {
            let Some(schema) = crate::retry::describe(b.as_ref(), &t.name).await? else {
                continue;
            };
            b.key_counts(&schema, &t.key, &KeyFilter::All, &mut |_, n, _| total += n)
                .await?;
        }
        out.push((t.name.clone(), total));
    }
    Ok(out)
}

/// The audit. `recorded`: counts from job creation; `expect`: a tally given by the caller,
/// which wins per table.
pub async fn audit(
    job: &str,
    plan: &Plan,
    recorded: &[(String, u64)],
    expect: &BTreeMap<String, u64>,
    max_listed: usize,
) -> Result<AuditReport> {
    let dbs = connect_all(&[&plan.from, &plan.to]).await?;
    let to = plan.to.compile();
    let mut report = AuditReport {
        job: job.to_string(),
        ok: true,
        tables: Vec::new(),
    };
    for t in &plan.from.tables {
        let mut at = AuditTable {
            table: t.name.clone(),
            ..Default::default()
        };
        if let Some(n) = expect.get(&t.name) {
            at.expected_rows = Some(*n);
            at.expected_from = Some("--expect-rows".into());
        } else if let Some((_, n)) = recorded.iter().find(|(name, _)| *name == t.name) {
            at.expected_rows = Some(*n);
            at.expected_from = Some("recorded at job start".into());
        }
        for (name, id, b) in &dbs {
            let Some(schema) = crate::retry::describe(b.as_ref(), &t.name).await? else {
                continue;
            };
            // This database is the owner's only if the new map names it under this name.
            let is_new_db = plan
                .to
                .shards
                .get(name)
                .is_some_and(|u| format!("{name}\n{u}") == *id);
            // Retried as a whole, with fresh tallies: a dropped connection mid-scan otherwise
            // failed the audit.
            let scan = || async {
                let mut err = None;
                let mut found: Vec<Misplaced> = Vec::new();
                let mut misplaced_rows = 0u64;
                let mut rows = 0u64;
                b.key_counts(&schema, &t.key, &KeyFilter::All, &mut |k, n, _| {
                    rows += n;
                    match to.owner(&k) {
                        Ok(owner) if is_new_db && owner == name.as_str() => {}
                        Ok(owner) => {
                            misplaced_rows += n;
                            if found.len() < max_listed {
                                found.push(Misplaced {
                                    shard: name.clone(),
                                    key: key_json(&k),
                                    rows: n,
                                    owner: owner.to_string(),
                                });
                            }
                        }
                        Err(e) => err = Some(format!("{e}")),
                    }
                })
                .await?;
                Ok((err, found, misplaced_rows, rows))
            };
            let (err, found, misplaced_rows, rows) =
                crate::retry::retry(&format!("shard {name}: counting {}", t.name), scan)
                    .await
                    .with_context(|| format!("shard {name}: counting {}", t.name))?;
            if let Some(e) = err {
                anyhow::bail!(
                    "shard {name}: table {}: a key cannot be routed: {e}",
                    t.name
                );
            }
            at.rows += rows;
            at.misplaced_rows += misplaced_rows;
            let room = max_listed.saturating_sub(at.misplaced.len());
            at.misplaced.extend(found.into_iter().take(room));
        }
        // No count to compare is a failure, not a pass: an audit without one cannot see a
        // lost row.
        if at.misplaced_rows > 0 || at.expected_rows.is_none_or(|n| n != at.rows) {
            report.ok = false;
        }
        report.tables.push(at);
    }
    Ok(report)
}
