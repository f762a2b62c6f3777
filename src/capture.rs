//! Change capture at run time: installing the logs, triggers and guards of
//! [`crate::triggers`] on every shard of a job, and consuming the logs (catch-up forward,
//! reverse sync after a flip). See docs/online.md.
//!
//! One log per (shard, table) serves both directions. An entry names a row identity; its key
//! is routed with both maps to find the move it belongs to:
//! - the move has not flipped and this shard is its source: forward — the current source rows
//!   for those primary keys are re-read and upserted at the destination (deleted there when
//!   gone or no longer the move's);
//! - the move has flipped and this shard is its destination: reverse — the same, from the
//!   destination back to the source;
//! - otherwise the entry is dropped (a key that does not move, or reshard's own write).
//!
//! Entries are then deleted by their sequence numbers, never "up to a position": a
//! transaction that commits late with a lower number is still seen by a later round. A crash
//! between the write and the deletion replays the entries, which converges because every
//! replay re-reads the current row.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use anyhow::{Context as _, Result};

use crate::backend::{Backend, KeyFilter, PkValues, TableSchema, Value};
use crate::catalog::{CaptureCounts, Catalog};
use crate::map::Key;
use crate::plan::Move;
use crate::preflight::{Context, Side};
use crate::retry::retry;
use crate::triggers::{self, FencePair};

/// Rows consumed per log and round.
pub const DEFAULT_LOG_BATCH: usize = 500;

/// The online state of one job run: connections, routing of moves, which moves have flipped.
pub struct Online<'a> {
    pub ctx: &'a Context,
    pub catalog: &'a Catalog,
    pub job: &'a str,
    pub log_batch: usize,
    /// The job's moves, in plan order, with their (old owner, new owner) fence pair.
    pub moves: Vec<Move>,
    pub pairs: Vec<FencePair>,
    by_pair: HashMap<FencePair, usize>,
    /// Whether each move has flipped (mirrors `moves.flipped` in the catalog).
    pub flipped: Vec<bool>,
    /// Schema of each (shard, table) change log, read once it is installed.
    logs: HashMap<(String, String), TableSchema>,
}

/// What one pass over a log did.
#[derive(Debug, Default)]
pub struct Round {
    pub entries: usize,
    /// Sequence numbers read (and, unless deferred, deleted).
    pub seqs: Vec<i64>,
    pub last_seq: Option<i64>,
    /// Primary keys applied per move index (either direction).
    pub touched: HashMap<usize, Vec<PkValues>>,
}

fn pk_id(pk: &PkValues) -> String {
    serde_json::to_string(pk).unwrap_or_default()
}

impl<'a> Online<'a> {
    pub async fn new(ctx: &'a Context, catalog: &'a Catalog, job: &'a str) -> Result<Online<'a>> {
        let rows = catalog.moves(job).await?;
        let moves = ctx.plan.moves.clone();
        let pairs: Vec<FencePair> = moves.iter().map(|m| ctx.move_indices(m)).collect();
        let by_pair = pairs.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        let flipped = moves
            .iter()
            .map(|m| rows.iter().any(|r| r.id == m.id && r.flipped))
            .collect();
        Ok(Online {
            ctx,
            catalog,
            job,
            log_batch: DEFAULT_LOG_BATCH,
            moves,
            pairs,
            by_pair,
            flipped,
            logs: HashMap::new(),
        })
    }

    /// Every shard taking part (source or destination of a move), once, with its connection.
    pub fn shards(&self) -> Vec<(String, Arc<dyn Backend>)> {
        let mut out: BTreeMap<String, Arc<dyn Backend>> = BTreeMap::new();
        for m in &self.moves {
            if let Some(b) = self.ctx.shard(Side::From, &m.source) {
                out.entry(m.source.clone()).or_insert_with(|| b.clone());
            }
            if let Some(b) = self.ctx.shard(Side::To, &m.destination) {
                out.entry(m.destination.clone())
                    .or_insert_with(|| b.clone());
            }
        }
        out.into_iter().collect()
    }

    pub fn backend(&self, side: Side, shard: &str) -> Result<Arc<dyn Backend>> {
        self.ctx
            .shard(side, shard)
            .cloned()
            .with_context(|| format!("shard {shard} is not connected"))
    }

    /// A table's definition at a shard, from whichever side described it.
    pub fn schema(&self, shard: &str, table: &str) -> Option<&TableSchema> {
        self.ctx
            .schema(Side::From, shard, table)
            .or_else(|| self.ctx.schema(Side::To, shard, table))
    }

    /// The move a key belongs to: its (old owner, new owner) pair is a move's.
    pub fn move_of(&self, key: &Key) -> Result<Option<usize>> {
        let o = self.ctx.from.owner_index(key)?;
        let n = self.ctx.to.owner_index(key)?;
        Ok(self.by_pair.get(&(o, n)).copied())
    }

    /// Installs capture and guards on every shard of the job, recorded in the catalog before
    /// and after; every statement is idempotent, so a crash in between re-runs it all.
    pub async fn install(&mut self) -> Result<()> {
        let done: HashSet<String> = self
            .catalog
            .installs(self.job)
            .await?
            .into_iter()
            .filter(|(_, s)| s == "installed")
            .map(|(sh, _)| sh)
            .collect();
        for (shard, b) in self.shards() {
            if !done.contains(&shard) {
                self.catalog
                    .set_install(self.job, &shard, "installing")
                    .await?;
                self.replace_left_guards(&shard, &b).await?;
                for t in &self.ctx.tables {
                    let Some(schema) = self.schema(&shard, &t.name) else {
                        anyhow::bail!("shard {shard}: table {} not described", t.name);
                    };
                    let cap = triggers::capture(b.dialect(), schema, &t.key)
                        .with_context(|| format!("shard {shard}: capture on {}", t.name))?;
                    ddl(&b, &shard, &cap.install).await?;
                    let g = self.guard(&b, schema, &t.key)?;
                    ddl(&b, &shard, &g.shared).await?;
                    ddl(&b, &shard, &g.install).await?;
                }
                crate::failpoint::hit("install");
                self.catalog
                    .set_install(self.job, &shard, "installed")
                    .await?;
            }
        }
        self.load_logs().await
    }

    /// Drops the guards and fence rows a finished job left on `shard` (a completed job keeps
    /// them on its old owners against stale writers) before this job installs its own. The
    /// objects have the same names for every job, so keeping them would give this job the old
    /// job's fence rows: rows are keyed by owner indices, and one the old job had raised
    /// refused this job's writers of keys that shard still owned. Only a finished job can have
    /// left them (one job at a time), and none of this job's fences is up before its install
    /// completes, so dropping is safe to repeat after a crash.
    async fn replace_left_guards(&self, shard: &str, b: &Arc<dyn Backend>) -> Result<()> {
        if crate::retry::describe(b.as_ref(), triggers::FENCE_TABLE)
            .await?
            .is_none()
        {
            return Ok(());
        }
        self.remove_guards(shard, b).await?;
        let why = "dropped the guards and fence rows found before this job's install (a finished \
                   job's, or this install's own, cut short)";
        crate::progress::say(format!("reshard: shard {shard}: {why}"));
        self.catalog
            .event(
                self.job,
                None,
                "guards_replaced",
                &format!("{shard}: {why}"),
            )
            .await
    }

    /// The primary keys (as [`crate::verify::report::pk_json`] text) that have entries waiting
    /// in `shard`'s change log of table `ti`: rows written there that no drain has applied yet.
    pub async fn pending(&self, shard: &str, ti: usize) -> Result<HashSet<String>> {
        const PAGE: usize = 5000;
        let t = &self.ctx.tables[ti];
        let mut out = HashSet::new();
        let Some(log) = self.logs.get(&(shard.to_string(), t.name.clone())) else {
            return Ok(out);
        };
        let b = self.backend_any(shard)?;
        let pk_cols: Vec<Option<usize>> =
            (0..log.columns.iter().filter(|c| is_pk_col(&c.name)).count())
                .map(|i| log.column_index(&format!("p{i}")))
                .collect();
        let mut after: Option<PkValues> = None;
        loop {
            let batch = retry(
                &format!("{shard}: reading change log of {}", t.name),
                || b.read_batch(log, "k", after.as_ref(), &KeyFilter::All, PAGE),
            )
            .await?;
            for row in &batch.rows {
                let pk: PkValues = pk_cols
                    .iter()
                    .map(|c| c.and_then(|c| row.get(c).cloned()).unwrap_or(Value::Null))
                    .collect();
                out.insert(crate::verify::report::pk_json(&pk).to_string());
            }
            if batch.rows.len() < PAGE {
                return Ok(out);
            }
            after = batch.last;
        }
    }

    /// Reads the definitions of the change logs that exist (after `install`, or for
    /// `complete`, `rollback`, `cancel` and `sync`, which install nothing).
    pub async fn load_logs(&mut self) -> Result<()> {
        for (shard, b) in self.shards() {
            for t in &self.ctx.tables {
                let log = triggers::log_table(&t.name);
                if let Some(s) = crate::retry::describe(b.as_ref(), &log).await? {
                    self.logs.insert((shard.clone(), t.name.clone()), s);
                }
            }
        }
        Ok(())
    }

    pub fn guard(
        &self,
        b: &Arc<dyn Backend>,
        schema: &TableSchema,
        key: &str,
    ) -> Result<triggers::Guard> {
        triggers::guard(
            b.dialect(),
            schema,
            key,
            &self.ctx.plan.from.partitioning,
            &self.ctx.plan.to.partitioning,
            &self.pairs,
        )
        .with_context(|| format!("shard {}: guard on {}", b.shard(), schema.name))
    }

    /// Reads up to `log_batch` entries of one log after `after` (None: from the start) and
    /// applies them. With `defer`, the entries are not deleted (the caller deletes `seqs`
    /// later, after the fence: the deletions need not lengthen it).
    pub async fn consume(
        &self,
        shard: &str,
        table: usize,
        after: Option<i64>,
        defer: bool,
    ) -> Result<Round> {
        let t = &self.ctx.tables[table];
        let Some(log) = self.logs.get(&(shard.to_string(), t.name.clone())) else {
            // Removed already (complete or cancel got past this shard).
            return Ok(Round::default());
        };
        let b = self.backend_any(shard)?;
        let cursor = after.map(|s| vec![Value::Int(s)]);
        let batch = retry(
            &format!("{shard}: reading change log of {}", t.name),
            || b.read_batch(log, "k", cursor.as_ref(), &KeyFilter::All, self.log_batch),
        )
        .await?;
        let seq_i = log.column_index("seq").context("change log without seq")?;
        let npk = log.columns.iter().filter(|c| is_pk_col(&c.name)).count();
        let mut round = Round {
            entries: batch.rows.len(),
            ..Round::default()
        };
        // Per move: the distinct primary keys to re-read, and the direction.
        let mut work: BTreeMap<usize, (bool, Vec<PkValues>, HashSet<String>)> = BTreeMap::new();
        for (row, key) in batch.rows.iter().zip(&batch.keys) {
            let seq = match row.get(seq_i) {
                Some(Value::Int(s)) => *s,
                Some(Value::UInt(s)) => *s as i64,
                other => anyhow::bail!("shard {shard}: change log seq {other:?}"),
            };
            round.seqs.push(seq);
            round.last_seq = Some(round.last_seq.map_or(seq, |l: i64| l.max(seq)));
            let Some(mi) = self.move_of(key)? else {
                continue;
            };
            let m = &self.moves[mi];
            let forward = !self.flipped[mi] && m.source == shard;
            let reverse = self.flipped[mi] && m.destination == shard;
            if !forward && !reverse {
                continue;
            }
            let pk: PkValues = (0..npk)
                .map(|i| {
                    log.column_index(&format!("p{i}"))
                        .and_then(|c| row.get(c).cloned())
                        .unwrap_or(Value::Null)
                })
                .collect();
            let e = work
                .entry(mi)
                .or_insert_with(|| (forward, Vec::new(), HashSet::new()));
            if e.2.insert(pk_id(&pk)) {
                e.1.push(pk);
            }
        }
        let mut counts = CaptureCounts {
            max_seq: round.last_seq.unwrap_or(0),
            entries: round.entries as u64,
            ..CaptureCounts::default()
        };
        for (mi, (forward, pks, _)) in work {
            let n = pks.len() as u64;
            self.apply(mi, table, forward, &pks).await?;
            if forward {
                counts.forward += n;
            } else {
                counts.reverse += n;
            }
            round.touched.insert(mi, pks);
        }
        crate::failpoint::hit("after_apply");
        if !defer && !round.seqs.is_empty() {
            self.delete_entries(shard, table, &round.seqs).await?;
        }
        if round.entries > 0 {
            retry("catalog: recording catch-up", || {
                self.catalog
                    .record_capture(self.job, shard, &t.name, counts)
            })
            .await?;
        }
        Ok(round)
    }

    pub async fn delete_entries(&self, shard: &str, table: usize, seqs: &[i64]) -> Result<()> {
        let t = &self.ctx.tables[table];
        let log = self
            .logs
            .get(&(shard.to_string(), t.name.clone()))
            .with_context(|| format!("shard {shard}: no change log for {}", t.name))?;
        let b = self.backend_any(shard)?;
        let pks: Vec<PkValues> = seqs.iter().map(|s| vec![Value::Int(*s)]).collect();
        for chunk in pks.chunks(1000) {
            retry(
                &format!("{shard}: trimming change log of {}", t.name),
                || b.delete(log, chunk),
            )
            .await?;
        }
        Ok(())
    }

    fn backend_any(&self, shard: &str) -> Result<Arc<dyn Backend>> {
        self.ctx
            .shard(Side::From, shard)
            .or_else(|| self.ctx.shard(Side::To, shard))
            .cloned()
            .with_context(|| format!("shard {shard} is not connected"))
    }

    /// Makes the other side of move `mi` match this side for these primary keys: forward from
    /// source to destination, reverse from destination to source.
    pub async fn apply(
        &self,
        mi: usize,
        table: usize,
        forward: bool,
        pks: &[PkValues],
    ) -> Result<()> {
        let m = &self.moves[mi];
        let t = &self.ctx.tables[table];
        let (from, to) = if forward {
            (
                self.backend(Side::From, &m.source)?,
                self.backend(Side::To, &m.destination)?,
            )
        } else {
            (
                self.backend(Side::To, &m.destination)?,
                self.backend(Side::From, &m.source)?,
            )
        };
        // Source and destination have the same columns (preflight); the source's definition
        // is the one copy writes with.
        let schema = self
            .ctx
            .schema(Side::From, &m.source, &t.name)
            .with_context(|| format!("shard {}: table {} not described", m.source, t.name))?;
        let key_i = schema
            .column_index(&t.key)
            .with_context(|| format!("table {} has no column {}", t.name, t.key))?;
        let pk_i: Vec<usize> = schema
            .primary_key
            .iter()
            .filter_map(|c| schema.column_index(c))
            .collect();
        let rows = retry(&format!("{}: re-reading {}", from.shard(), t.name), || {
            from.fetch(schema, pks)
        })
        .await?;
        let mut keep = Vec::new();
        let mut present = HashSet::new();
        for row in rows {
            let belongs = match row.get(key_i).and_then(Value::as_key) {
                Some(k) => self.move_of(&k)? == Some(mi),
                None => false,
            };
            if belongs {
                let pk: PkValues = pk_i.iter().map(|&i| row[i].clone()).collect();
                present.insert(pk_id(&pk));
                keep.push(row);
            }
        }
        let gone: Vec<PkValues> = pks
            .iter()
            .filter(|pk| !present.contains(&pk_id(pk)))
            .cloned()
            .collect();
        retry(
            &format!("{}: applying changes to {}", to.shard(), t.name),
            || to.write_quiet(schema, &keep, &gone),
        )
        .await?;
        Ok(())
    }

    /// Consumes every log of a shard until each read comes back short (the backlog seen at
    /// the start is applied). Returns the entries applied and the sequence numbers read per
    /// table (deleted unless `defer`), and the keys touched per move.
    pub async fn drain(&self, shard: &str, defer: bool) -> Result<Drained> {
        let mut out = Drained::default();
        for ti in 0..self.ctx.tables.len() {
            let mut after = None;
            loop {
                let r = self.consume(shard, ti, after, defer).await?;
                if !defer {
                    // Catch-up and reverse sync count against the job's rate cap; a fenced
                    // drain (deferred) never waits on a throttle.
                    crate::throttle::for_job(self.job)
                        .pace(r.entries as u64, None)
                        .await;
                }
                out.entries += r.entries;
                for (mi, pks) in r.touched {
                    out.touched
                        .entry(mi)
                        .or_default()
                        .entry(ti)
                        .or_default()
                        .extend(pks);
                }
                if defer {
                    out.seqs.entry(ti).or_default().extend(&r.seqs);
                }
                // Deferred entries stay in the log: read on past them.
                after = if defer { r.last_seq.or(after) } else { None };
                if r.entries < self.log_batch {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Removes capture (logs and their triggers) from one shard.
    pub async fn remove_capture(&self, shard: &str, b: &Arc<dyn Backend>) -> Result<()> {
        for t in &self.ctx.tables {
            if let Some(schema) = self.schema(shard, &t.name) {
                let cap = triggers::capture(b.dialect(), schema, &t.key)?;
                ddl(b, shard, &cap.remove).await?;
            }
        }
        Ok(())
    }

    /// Removes the guards (and, with `shared`, the fence table and ring tables) from a shard.
    pub async fn remove_guards(&self, shard: &str, b: &Arc<dyn Backend>) -> Result<()> {
        let mut shared = Vec::new();
        for t in &self.ctx.tables {
            if let Some(schema) = self.schema(shard, &t.name) {
                let g = self.guard(b, schema, &t.key)?;
                ddl(b, shard, &g.remove).await?;
                shared = g.remove_shared;
            }
        }
        ddl(b, shard, &shared).await?;
        Ok(())
    }
}

fn is_pk_col(name: &str) -> bool {
    name.len() > 1 && name.starts_with('p') && name[1..].chars().all(|c| c.is_ascii_digit())
}

/// What a drain applied.
#[derive(Debug, Default)]
pub struct Drained {
    pub entries: usize,
    /// Sequence numbers read per table index (only with `defer`).
    pub seqs: BTreeMap<usize, Vec<i64>>,
    /// Primary keys applied, per move index, per table index.
    pub touched: HashMap<usize, BTreeMap<usize, Vec<PkValues>>>,
}

/// Runs capture or guard DDL, retried like every other statement: the statements are
/// idempotent, and a connection dropped mid-install otherwise failed the whole job. Each runs
/// under the lock timeout, retried while an application transaction holds the table
/// ([`crate::lockwait`]).
async fn ddl(b: &Arc<dyn Backend>, shard: &str, stmts: &[String]) -> Result<()> {
    crate::lockwait::bounded(
        &format!("shard {shard}: installing or removing triggers"),
        || b.run_ddl(stmts),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_pk_columns_are_recognised() {
        assert!(is_pk_col("p0"));
        assert!(is_pk_col("p12"));
        assert!(!is_pk_col("op"));
        assert!(!is_pk_col("p"));
        assert!(!is_pk_col("seq"));
    }
}
