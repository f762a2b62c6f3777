//! Preflight: everything that would stop a job, found before anything is written, and reported
//! all at once. Also the connections and table definitions that execution then uses.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use futures_util::future::join_all;

use crate::backend::{self, Backend, KeyFilter, TableSchema};
use crate::hashing::HashKind;
use crate::map::{Partitioner, TableSpec};
use crate::plan::{Move, Plan, Segments};
use crate::shard_url::ShardUrl;

/// Which side of the plan a shard connection belongs to. A shard named in both maps is one
/// database only when both maps give it the same URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    From,
    To,
}

/// Connections and compiled routing for one plan.
pub struct Context {
    pub plan: Plan,
    /// Shared, so that tasks working on the plan's moves (verification reads both sides at
    /// once) route rows without copying a ring's tokens.
    pub from: Arc<Partitioner>,
    pub to: Arc<Partitioner>,
    pub tables: Vec<TableSpec>,
    shards: HashMap<(Side, String), Arc<dyn Backend>>,
    /// Table definitions read at each shard (None: the table does not exist there).
    schemas: HashMap<(Side, String, String), Option<TableSchema>>,
}

impl Context {
    pub fn shard(&self, side: Side, name: &str) -> Option<&Arc<dyn Backend>> {
        self.shards.get(&(side, name.to_string()))
    }

    /// The shards the job reads or writes (its moves' sources and destinations), once each.
    pub fn moving_shards(&self) -> Vec<Arc<dyn Backend>> {
        let mut seen = std::collections::BTreeMap::new();
        for m in &self.plan.moves {
            for (side, name) in [(Side::From, &m.source), (Side::To, &m.destination)] {
                if let Some(b) = self.shard(side, name) {
                    seen.entry(name.clone()).or_insert_with(|| b.clone());
                }
            }
        }
        seen.into_values().collect()
    }

    pub fn schema(&self, side: Side, shard: &str, table: &str) -> Option<&TableSchema> {
        self.schemas
            .get(&(side, shard.to_string(), table.to_string()))
            .and_then(|s| s.as_ref())
    }

    pub fn set_schema(&mut self, side: Side, shard: &str, table: &str, schema: TableSchema) {
        self.schemas
            .insert((side, shard.into(), table.into()), Some(schema));
    }

    /// (index of the move's source in `from`, index of its destination in `to`).
    pub fn move_indices(&self, m: &Move) -> (usize, usize) {
        let s = self.from.shards.iter().position(|s| *s == m.source);
        let d = self.to.shards.iter().position(|s| *s == m.destination);
        // Plan::parse checked both names; a shard that owns no key would match no row.
        (s.unwrap_or(usize::MAX), d.unwrap_or(usize::MAX))
    }
}

/// The SQL-side filter for a move: only what the map lets SQL compute exactly or loosely.
pub fn key_filter(seg: &Segments) -> KeyFilter {
    match seg {
        Segments::Ranges { ranges } => KeyFilter::Ranges(
            ranges
                .iter()
                .map(|r| (r.from.clone(), r.to.clone()))
                .collect(),
        ),
        Segments::Residues {
            hash: HashKind::Identity,
            modulus,
            residues,
        } => KeyFilter::Residues {
            modulus: *modulus,
            residues: residues.clone(),
        },
        _ => KeyFilter::All,
    }
}

/// A database to connect to: its name, URL, and the (side, name) pairs it serves.
type Target<'a> = (String, &'a ShardUrl, Vec<(Side, String)>);

/// Connects to every shard that takes part in a move. Returns the context and the shards that
/// could not be reached (one problem each).
pub async fn connect(plan: &Plan) -> (Context, Vec<String>) {
    let mut wanted: BTreeSet<(Side, String)> = BTreeSet::new();
    for m in &plan.moves {
        wanted.insert((Side::From, m.source.clone()));
        wanted.insert((Side::To, m.destination.clone()));
    }
    let mut problems = Vec::new();
    // The same database named on both sides shares one connection pool: one connection per
    // distinct (name, URL), for every (side, name) that names it.
    let mut targets: Vec<Target<'_>> = Vec::new();
    for (side, name) in wanted {
        let map = if side == Side::From {
            &plan.from
        } else {
            &plan.to
        };
        let Some(url) = map.shards.get(&name) else {
            problems.push(format!("shard {name}: not in the plan's maps"));
            continue;
        };
        match targets.iter_mut().find(|(n, u, _)| *n == name && *u == url) {
            Some((_, _, users)) => users.push((side, name)),
            None => targets.push((name.clone(), url, vec![(side, name)])),
        }
    }
    // Concurrently: with many shards, one handshake after another added up.
    let connected = join_all(targets.iter().map(|(name, url, _)| async move {
        let b = backend::connect(name, url).await?;
        crate::retry::retry(&format!("shard {name}: ping"), || b.ping()).await?;
        anyhow::Ok(b)
    }))
    .await;
    let mut shards = HashMap::new();
    for ((name, url, users), res) in targets.into_iter().zip(connected) {
        match res {
            Ok(b) => {
                for u in users {
                    shards.insert(u, b.clone());
                }
            }
            Err(e) => {
                // The causes name the shard too: said once.
                let cause = format!("{e:#}");
                let prefix = format!("shard {name}: ");
                let cause = cause.strip_prefix(&prefix).unwrap_or(&cause);
                let shown = url.shown(&name);
                problems.push(format!("shard {name} ({shown}): not reachable: {cause}"))
            }
        }
    }
    let ctx = Context {
        from: Arc::new(plan.from.compile()),
        to: Arc::new(plan.to.compile()),
        tables: plan.from.tables.clone(),
        plan: plan.clone(),
        shards,
        schemas: HashMap::new(),
    };
    (ctx, problems)
}

/// Reads the definition of every table at every connected shard.
pub async fn describe_all(ctx: &mut Context) -> Vec<String> {
    let mut wanted = Vec::new();
    for ((side, shard), b) in &ctx.shards {
        for t in &ctx.tables {
            wanted.push((*side, shard.clone(), t.name.clone(), b.clone()));
        }
    }
    // Concurrently, like the connections.
    let described = join_all(
        wanted
            .iter()
            .map(|(_, _, table, b)| crate::retry::describe(b.as_ref(), table)),
    )
    .await;
    let mut problems = Vec::new();
    for ((side, shard, table, _), res) in wanted.into_iter().zip(described) {
        match res {
            Ok(s) => {
                ctx.schemas.insert((side, shard, table), s);
            }
            Err(e) => problems.push(format!(
                "shard {shard}: table {table}: cannot be described: {e:#}"
            )),
        }
    }
    problems
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MoveCount {
    pub id: String,
    pub source: String,
    pub destination: String,
    /// Rows (and their bytes) that will be copied.
    pub rows: u64,
    pub bytes: u64,
    /// Rows the copy will read at the source (the SQL filter admits more than move).
    pub rows_scanned: u64,
}

#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<String>,
    /// (destination shard, table) to create with --create-tables.
    pub missing: Vec<(String, String)>,
    pub counts: Vec<MoveCount>,
    /// Rows per (source shard, table), counted in the same pass as the moves: what the audit
    /// records at job start for these shards, so that they are not counted twice.
    pub shard_rows: BTreeMap<(String, String), u64>,
}

pub struct Checks {
    pub create_tables: bool,
    pub allow_existing: bool,
}

/// Compares the definitions at each move's source and destination, and looks for rows of the
/// moving keys already at a destination; counts what each move will copy.
pub async fn check(ctx: &Context, checks: &Checks) -> Report {
    let mut rep = Report::default();
    let mut seen_missing = BTreeSet::new();
    let mut compared = BTreeSet::new();
    // (destination, table, difference) -> the sources that differ from it so.
    let mut diffs: BTreeMap<(String, String, Diff), Vec<String>> = BTreeMap::new();
    for m in &ctx.plan.moves {
        let (src, dst) = (
            ctx.shard(Side::From, &m.source),
            ctx.shard(Side::To, &m.destination),
        );
        let (Some(src), Some(dst)) = (src, dst) else {
            continue; // unreachable: already reported
        };
        if src.dialect() != dst.dialect() {
            rep.problems.push(format!(
                "move {}: {} is {} but {} is {}; source and destination must be the same kind of database",
                m.id, m.source, src.dialect().name(), m.destination, dst.dialect().name()
            ));
            continue;
        }
        for t in &ctx.tables {
            let s = ctx
                .schemas
                .get(&(Side::From, m.source.clone(), t.name.clone()));
            let d = ctx
                .schemas
                .get(&(Side::To, m.destination.clone(), t.name.clone()));
            let Some(s) = s else { continue };
            let Some(s) = s else {
                rep.problems.push(format!(
                    "shard {}: table {} does not exist at the source",
                    m.source, t.name
                ));
                continue;
            };
            if s.primary_key.is_empty() {
                rep.problems.push(format!(
                    "shard {}: table {} has no primary key; reshard copies by primary key",
                    m.source, t.name
                ));
            }
            if s.column_index(&t.key).is_none() {
                rep.problems.push(format!(
                    "shard {}: table {} has no column {} (its shard key in the map)",
                    m.source, t.name, t.key
                ));
            }
            match d {
                Some(Some(d))
                    if compared.insert((
                        m.source.clone(),
                        m.destination.clone(),
                        t.name.clone(),
                    )) =>
                {
                    for diff in compare(s, d) {
                        diffs
                            .entry((m.destination.clone(), t.name.clone(), diff))
                            .or_default()
                            .push(m.source.clone());
                    }
                }
                Some(None) => {
                    if checks.create_tables {
                        if seen_missing.insert((m.destination.clone(), t.name.clone())) {
                            match src.check_constraints(&t.name).await {
                                Ok(c) if c.is_empty() => {
                                    rep.missing.push((m.destination.clone(), t.name.clone()))
                                }
                                Ok(c) => rep.problems.push(format!(
                                    "shard {}: table {} has CHECK constraints ({}) that \
                                     --create-tables does not copy; create the table at {} \
                                     with them yourself, then apply again",
                                    m.source,
                                    t.name,
                                    c.join(", "),
                                    m.destination
                                )),
                                Err(e) => rep.problems.push(format!("{e:#}")),
                            }
                        }
                    } else if seen_missing.insert((m.destination.clone(), t.name.clone())) {
                        rep.problems.push(format!(
                            "shard {}: table {} does not exist at the destination; \
                             pass --create-tables to create it from {}'s definition",
                            m.destination, t.name, m.source
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    for ((dest, table, diff), sources) in &diffs {
        rep.problems.push(render_diff(table, diff, sources, dest));
    }
    if !rep.problems.is_empty() {
        return rep;
    }
    // Counting reads every key once; only worth it when the definitions are right. One pass
    // per source shard and table counts all of its moves and its total (issue 16: the moves
    // of a hash map each scanned the whole shard, and the audit's count scanned it again).
    let mut sources: Vec<&str> = ctx.plan.moves.iter().map(|m| m.source.as_str()).collect();
    sources.sort_unstable();
    sources.dedup();
    for source in sources {
        let moves: Vec<&Move> = ctx
            .plan
            .moves
            .iter()
            .filter(|m| m.source == source)
            .collect();
        // A read like any other: a dropped connection is retried, not reported as a problem.
        let counted = crate::retry::retry(&format!("shard {source}: counting rows"), || {
            count_source(ctx, source, &moves)
        })
        .await;
        match counted {
            Ok((counts, totals, mut problems)) => {
                rep.counts.extend(counts);
                rep.shard_rows.extend(totals);
                rep.problems.append(&mut problems);
            }
            Err(e) => rep
                .problems
                .push(format!("shard {source}: counting rows: {e:#}")),
        }
    }
    for m in &ctx.plan.moves {
        let found = crate::retry::retry(&format!("move {}: looking for its keys", m.id), || {
            existing_at_destination(ctx, m, checks.allow_existing)
        })
        .await;
        match found {
            Ok(mut problems) => rep.problems.append(&mut problems),
            Err(e) => rep.problems.push(format!(
                "move {}: looking for its keys at {}: {e:#}",
                m.id, m.destination
            )),
        }
    }
    // In plan order, as before.
    let order = |id: &str| ctx.plan.moves.iter().position(|m| m.id == id);
    rep.counts.sort_by_key(|c| order(&c.id));
    rep
}

/// One way a destination's definition of a table differs from a source's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Diff {
    /// A source column the destination lacks.
    Missing(String),
    /// A destination column the source lacks.
    Extra(String),
    /// (column, type at the source, type at the destination)
    Type(String, String, String),
    /// (column, nullable at the source, nullable at the destination)
    Null(String, bool, bool),
    /// Primary-key columns at the source and at the destination.
    Key(String, String),
}

fn compare(s: &TableSchema, d: &TableSchema) -> Vec<Diff> {
    let mut out = Vec::new();
    let dcols: BTreeMap<&str, _> = d.columns.iter().map(|c| (c.name.as_str(), c)).collect();
    let scols: BTreeMap<&str, _> = s.columns.iter().map(|c| (c.name.as_str(), c)).collect();
    for c in &s.columns {
        match dcols.get(c.name.as_str()) {
            None => out.push(Diff::Missing(c.name.clone())),
            Some(dc) if dc.data_type != c.data_type => out.push(Diff::Type(
                c.name.clone(),
                c.data_type.clone(),
                dc.data_type.clone(),
            )),
            Some(dc) if dc.nullable != c.nullable => {
                out.push(Diff::Null(c.name.clone(), c.nullable, dc.nullable))
            }
            _ => {}
        }
    }
    for c in &d.columns {
        if !scols.contains_key(c.name.as_str()) {
            out.push(Diff::Extra(c.name.clone()));
        }
    }
    if s.primary_key != d.primary_key {
        out.push(Diff::Key(
            s.primary_key.join(", "),
            d.primary_key.join(", "),
        ));
    }
    out
}

/// A difference between table `t` at `sources` (every source that differs the same way) and
/// at the destination `dname`: one problem, not one per move.
fn render_diff(t: &str, diff: &Diff, sources: &[String], dname: &str) -> String {
    let srcs = sources.join(", ");
    let what = match diff {
        Diff::Missing(c) => format!("column {c} exists at {srcs} but not at {dname}"),
        Diff::Extra(c) => format!("column {c} exists at {dname} but not at {srcs}"),
        Diff::Type(c, st, dt) => format!("column {c} is {st} at {srcs} but {dt} at {dname}"),
        Diff::Null(c, sn, dn) => format!(
            "column {c} is {} at {srcs} but {} at {dname}",
            null_word(*sn),
            null_word(*dn)
        ),
        Diff::Key(sk, dk) => format!("primary key is ({sk}) at {srcs} but ({dk}) at {dname}"),
    };
    format!("shard {dname}: table {t}: {what}")
}

fn null_word(nullable: bool) -> &'static str {
    if nullable {
        "NULL"
    } else {
        "NOT NULL"
    }
}

/// Source totals per (shard, table).
type Totals = BTreeMap<(String, String), u64>;

/// One pass over each table of `source` (every key): the rows and bytes each of its `moves`
/// will copy, the table's total, and the rows whose key the maps cannot route.
async fn count_source(
    ctx: &Context,
    source: &str,
    moves: &[&Move],
) -> Result<(Vec<MoveCount>, Totals, Vec<String>)> {
    let mut counts: Vec<MoveCount> = moves
        .iter()
        .map(|m| MoveCount {
            id: m.id.clone(),
            source: m.source.clone(),
            destination: m.destination.clone(),
            ..Default::default()
        })
        .collect();
    let (mut totals, mut problems) = (Totals::new(), Vec::new());
    let Some(src) = ctx.shard(Side::From, source) else {
        return Ok((counts, totals, problems));
    };
    let indices: Vec<(usize, usize)> = moves.iter().map(|m| ctx.move_indices(m)).collect();
    for t in &ctx.tables {
        let Some(schema) = ctx.schema(Side::From, source, &t.name) else {
            continue;
        };
        let (mut total, mut unroutable) = (0u64, 0u64);
        let mut per: Vec<(u64, u64)> = vec![(0, 0); moves.len()];
        src.key_counts(schema, &t.key, &KeyFilter::All, &mut |k, n, b| {
            total += n;
            match (ctx.from.owner_index(&k), ctx.to.owner_index(&k)) {
                (Ok(s), Ok(d)) => {
                    if let Some(j) = indices.iter().position(|&ix| ix == (s, d)) {
                        per[j].0 += n;
                        per[j].1 += b;
                    }
                }
                _ => unroutable += n,
            }
        })
        .await?;
        if unroutable > 0 {
            problems.push(format!(
                "shard {source}: table {}: {unroutable} rows have a {} the maps cannot route",
                t.name, t.key
            ));
        }
        for (j, m) in moves.iter().enumerate() {
            let c = &mut counts[j];
            c.rows += per[j].0;
            c.bytes += per[j].1;
            // What the copy's SQL filter admits: the move's rows when the filter is exact
            // (ranges, identity residues), the whole table when there is none.
            c.rows_scanned += match key_filter(&m.segments) {
                KeyFilter::All => total,
                _ => per[j].0,
            };
        }
        totals.insert((source.to_string(), t.name.clone()), total);
    }
    Ok((counts, totals, problems))
}

/// Rows of the move's keys already at its destination: a problem unless `allow_existing`.
async fn existing_at_destination(
    ctx: &Context,
    m: &Move,
    allow_existing: bool,
) -> Result<Vec<String>> {
    let filter = key_filter(&m.segments);
    let (si, di) = ctx.move_indices(m);
    let mut problems = Vec::new();
    let Some(dst) = ctx.shard(Side::To, &m.destination) else {
        return Ok(problems);
    };
    for t in &ctx.tables {
        let Some(dschema) = ctx.schema(Side::To, &m.destination, &t.name) else {
            continue;
        };
        let mut existing = 0u64;
        dst.key_counts(dschema, &t.key, &filter, &mut |k, n, _| {
            if let (Ok(s), Ok(d)) = (ctx.from.owner_index(&k), ctx.to.owner_index(&k)) {
                if s == si && d == di {
                    existing += n;
                }
            }
        })
        .await?;
        if existing > 0 && !allow_existing {
            problems.push(format!(
                "move {}: shard {} already holds {existing} rows of table {} whose keys move \
                 there from {}; no job in flight copied them (apply refuses to start while a \
                 job on the catalog is unfinished), so they were written outside reshard or \
                 by a job of another catalog: clean them up, or pass --allow-existing to \
                 overwrite them",
                m.id, m.destination, t.name, m.source
            ));
        }
    }
    Ok(problems)
}

/// Rows per second of one measured batch read at the first move's source (None when there is
/// nothing to read).
pub async fn measure_read(ctx: &Context, batch_size: usize) -> Result<Option<f64>> {
    let Some(m) = ctx.plan.moves.first() else {
        return Ok(None);
    };
    let Some(src) = ctx.shard(Side::From, &m.source) else {
        return Ok(None);
    };
    for t in &ctx.tables {
        let Some(schema) = ctx.schema(Side::From, &m.source, &t.name) else {
            continue;
        };
        let start = Instant::now();
        let b = src
            .read_batch(schema, &t.key, None, &key_filter(&m.segments), batch_size)
            .await?;
        if !b.rows.is_empty() {
            let secs = start.elapsed().as_secs_f64().max(1e-6);
            return Ok(Some(b.rows.len() as f64 / secs));
        }
    }
    Ok(None)
}
