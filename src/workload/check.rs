//! Reading the workload's tables straight from the shards (never through the code under test):
//! the snapshot taken before the writer starts, and the checker that compares every shard with
//! the snapshot and the writer's [`Tally`] afterwards.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{Context, Result};

use super::{ChildTable, Last, Pk, RowVal, Tally};
use crate::router::{Router, ShardPool};

fn missing_table(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("42P01") | Some("42S02"))
                || db.message().contains("no such table")
        }
        _ => false,
    }
}

type Rows = Vec<(Pk, RowVal)>;

/// Every row of both tables at one shard (a missing table reads as empty).
async fn read_shard(pool: &ShardPool, child: &ChildTable) -> Result<Rows> {
    let ChildTable { name, id, text } = child;
    let child_sql = |cast: &str| format!("SELECT user_id, {cast}, {text} FROM {name}");
    macro_rules! read {
        ($p:expr, $order_sql:expr) => {{
            let mut out = Vec::new();
            match sqlx::query_as::<_, (i64, String, Option<f64>)>(
                "SELECT id, name, score FROM users",
            )
            .fetch_all($p)
            .await
            {
                Ok(rows) => out.extend(rows.into_iter().map(|(id, name, score)| {
                    (
                        Pk::User(id),
                        RowVal::User {
                            name,
                            score: score.map(f64::to_bits),
                        },
                    )
                })),
                Err(e) if missing_table(&e) => {}
                Err(e) => return Err(e.into()),
            }
            match sqlx::query_as::<_, (i64, i64, Option<String>)>(&$order_sql)
                .fetch_all($p)
                .await
            {
                Ok(rows) => out.extend(
                    rows.into_iter()
                        .map(|(u, c, text)| (Pk::Child(u, c), RowVal::Child { text })),
                ),
                Err(e) if missing_table(&e) => {}
                Err(e) => return Err(e.into()),
            }
            Ok(out)
        }};
    }
    match pool {
        ShardPool::Postgres(p) => read!(p, child_sql(&format!("CAST({id} AS BIGINT)"))),
        ShardPool::Mysql(p) => read!(p, child_sql(&format!("CAST({id} AS SIGNED)"))),
        ShardPool::Sqlite(p) => read!(p, child_sql(id)),
    }
}

/// Rows of every shard the routing knows, by primary key: (shard, row) for each copy.
async fn read_all(
    router: &Router,
    child: &ChildTable,
) -> Result<BTreeMap<Pk, Vec<(String, RowVal)>>> {
    let mut out: BTreeMap<Pk, Vec<(String, RowVal)>> = BTreeMap::new();
    for shard in router.snapshot().shards() {
        let pool = router.pool(&shard).await?;
        let rows = read_shard(&pool, child)
            .await
            .with_context(|| format!("shard {shard}: reading the workload's tables"))?;
        for (pk, v) in rows {
            out.entry(pk).or_default().push((shard.clone(), v));
        }
    }
    Ok(out)
}

/// The rows as they were before the workload started, each read at its owner.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub rows: BTreeMap<Pk, RowVal>,
    /// The second table the rows were read from, which the checker reads again.
    pub child: ChildTable,
}

pub async fn snapshot(router: &Router, child: ChildTable) -> Result<Snapshot> {
    router.refresh().await?;
    let snap = router.snapshot();
    let mut rows = BTreeMap::new();
    for (pk, copies) in read_all(router, &child).await? {
        let owner = snap.route(&pk.key())?.shard;
        if let Some((_, v)) = copies.into_iter().find(|(s, _)| *s == owner) {
            rows.insert(pk, v);
        }
    }
    Ok(Snapshot { rows, child })
}

#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Primary keys looked at (written, in the snapshot, or found on a shard).
    pub keys_checked: u64,
    /// Keys whose last acknowledged write was compared.
    pub written_checked: u64,
    /// Acknowledged writes not at their key's owner: row missing, or an older value.
    pub lost: u64,
    /// Rows deleted by an acknowledged write but present on some shard.
    pub resurrected: u64,
    /// Rows at a shard that does not own their key (only counted when `exclusive`).
    pub stray: u64,
    /// Rows the writer never touched that differ from the snapshot (or are missing).
    pub untouched_changed: u64,
    /// Rows neither written nor in the snapshot.
    pub unexpected: u64,
    /// Keys whose last write was given up on (not checked).
    pub unknown: u64,
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.resurrected == 0
            && self.stray == 0
            && self.untouched_changed == 0
            && self.unexpected == 0
    }

    fn problem(&mut self, msg: String) {
        if self.problems.len() < 20 {
            self.problems.push(msg);
        }
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} keys checked ({} written): {} lost, {} resurrected, {} stray, {} untouched rows \
             changed, {} unexpected, {} unknown",
            self.keys_checked,
            self.written_checked,
            self.lost,
            self.resurrected,
            self.stray,
            self.untouched_changed,
            self.unexpected,
            self.unknown
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// Compares every shard, read directly, with what the writer was told and the snapshot taken
/// before it started. Each key's owner is the router's answer after a reload (after `complete`,
/// the new map; after a rollback, the old one). With `exclusive`, a row at a shard other than
/// its key's owner is a problem (after `complete` or `cancel`: no moved key left behind); without
/// it (during dual-write, when the old owner still holds copies) such copies are ignored. A row
/// deleted by an acknowledged write must be absent from every shard in both modes: during
/// dual-write, reverse sync deletes it at the old owner too.
pub async fn check(
    router: &Router,
    before: &Snapshot,
    tally: &Tally,
    exclusive: bool,
) -> Result<CheckReport> {
    router.refresh().await?;
    let snap = router.snapshot();
    let child = &before.child;
    let found = read_all(router, child).await?;
    let mut keys: Vec<&Pk> = before
        .rows
        .keys()
        .chain(tally.last.keys())
        .chain(found.keys())
        .collect();
    keys.sort();
    keys.dedup();
    let mut r = CheckReport::default();
    let none = Vec::new();
    for pk in keys {
        r.keys_checked += 1;
        let copies = found.get(pk).unwrap_or(&none);
        let owner = snap.route(&pk.key())?.shard;
        let written = tally.last.get(pk);
        let expected = match written {
            Some(last) => Some(last.clone()),
            None => before.rows.get(pk).map(|v| Last::Row(v.clone())),
        };
        if written.is_some() {
            r.written_checked += 1;
        }
        let strays = |r: &mut CheckReport| {
            if exclusive {
                for (s, _) in copies.iter().filter(|(s, _)| *s != owner) {
                    r.stray += 1;
                    r.problem(format!(
                        "{}: a copy remains at {s}, its owner is {owner}",
                        pk.describe(child)
                    ));
                }
            }
        };
        match expected {
            Some(Last::Row(want)) => {
                let at_owner = copies.iter().find(|(s, _)| *s == owner).map(|(_, v)| v);
                if at_owner != Some(&want) {
                    let what = match at_owner {
                        None => format!("missing at its owner {owner}"),
                        Some(got) => format!("at {owner} is {got:?}, expected {want:?}"),
                    };
                    if written.is_some() {
                        r.lost += 1;
                        r.problem(format!(
                            "{}: acknowledged write lost: {what}",
                            pk.describe(child)
                        ));
                    } else {
                        r.untouched_changed += 1;
                        r.problem(format!(
                            "{}: untouched row changed: {what}",
                            pk.describe(child)
                        ));
                    }
                }
                strays(&mut r);
            }
            Some(Last::Deleted) => {
                for (s, _) in copies {
                    r.resurrected += 1;
                    r.problem(format!(
                        "{}: deleted by an acknowledged write, present at {s}",
                        pk.describe(child)
                    ));
                }
            }
            Some(Last::Unknown) => {
                r.unknown += 1;
                strays(&mut r);
            }
            None => {
                for (s, _) in copies {
                    r.unexpected += 1;
                    r.problem(format!(
                        "{}: never written and not in the snapshot, at {s}",
                        pk.describe(child)
                    ));
                }
            }
        }
    }
    Ok(r)
}
