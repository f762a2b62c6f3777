//! The two ends of an online job: `complete` (after every flip) and `cancel` (before any).
//! Both are idempotent: every step is re-runnable and recorded in the catalog.

use std::collections::{BTreeSet, HashSet};

use anyhow::{Context as _, Result};

use crate::backend::{PkValues, TableSchema, Value};
use crate::capture::Online;
use crate::error::Stop;
use crate::job::JobState;
use crate::preflight::{key_filter, Side};
use crate::retry::retry;
use crate::verify;

/// Rows deleted per transaction (and per recorded cursor) by `complete` and `cancel`.
/// 10,000: with 1,000, the catalog record per batch took a third of the time.
const CLEANUP_BATCH: usize = 10_000;

/// `schema` narrowed to its primary-key columns and the shard key, in table order.
fn key_columns(schema: &TableSchema, key: &str) -> TableSchema {
    let mut out = schema.clone();
    out.columns
        .retain(|c| c.name == key || schema.primary_key.contains(&c.name));
    out.indexes.clear();
    out
}

/// Full verification passes `complete` runs at most per move before it calls a difference
/// real (see [`Online::verify_before_delete`]).
pub const COMPLETE_VERIFY_PASSES: usize = 3;

/// Every difference a report lists: (table, primary key as `pk_json` text, what differs). The
/// lists hold up to `max_listed`; beyond them a table gets one entry with no key, named the same
/// in every pass so that it persists as a difference.
fn differences(r: &verify::MoveReport) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for t in &r.tables {
        let d = &t.diff;
        let mut add = |pk: String, what: String| out.insert((t.table.clone(), pk, what));
        for pk in &d.missing {
            add(pk.to_string(), "missing at the new owner".into());
        }
        for pk in &d.extra {
            add(pk.to_string(), "only at the new owner".into());
        }
        for x in &d.differing {
            add(
                x.pk.to_string(),
                format!("differs ({})", x.columns.join(",")),
            );
        }
        let listed = (d.missing.len() + d.extra.len() + d.differing.len()) as u64;
        if d.missing_count + d.extra_count + d.differing_count > listed {
            add(String::new(), "differences beyond the listed ones".into());
        }
    }
    out
}

impl Online<'_> {
    /// Completes a job whose moves have all flipped: capture and logs dropped everywhere, the
    /// moved rows deleted from their old owners in batches (cursor in the catalog), guards
    /// kept where a fence row is up (old owners: they refuse stale writers) and dropped
    /// elsewhere, then routing becomes the plan's `to` map.
    ///
    /// With `verify`, every move is verified first (see [`Online::verify_before_delete`]); a
    /// mismatch stops with `Stop::Mismatch` (exit 3) before anything is deleted. A complete
    /// resumed after its deletions began does not verify again: the old copies are partly gone.
    pub async fn complete(&self, verify: bool) -> Result<i64> {
        let state = self.catalog.job(self.job).await?.map(|j| j.state);
        if verify && state.as_deref() != Some(JobState::Completing.as_str()) {
            self.verify_before_delete().await?;
        }
        self.catalog
            .set_job_state(self.job, JobState::Completing, None)
            .await?;
        for (shard, b) in self.shards() {
            self.remove_capture(&shard, &b).await?;
        }
        crate::failpoint::hit("complete_capture_removed");
        for (mi, m) in self.moves.iter().enumerate() {
            let src = self.backend(Side::From, &m.source)?;
            let filter = key_filter(&m.segments);
            for t in &self.ctx.tables {
                let cur = self
                    .catalog
                    .cleanup_cursor(self.job, &m.id, &t.name)
                    .await?;
                if cur.as_ref().is_some_and(|c| c.1) {
                    continue;
                }
                let mut after: Option<PkValues> = match cur.and_then(|c| c.0) {
                    Some(j) => Some(serde_json::from_str(&j).context("cleanup cursor")?),
                    None => None,
                };
                let schema = self
                    .ctx
                    .schema(Side::From, &m.source, &t.name)
                    .with_context(|| format!("shard {}: {} not described", m.source, t.name))?;
                // Only the primary key and the shard key are read: the rest of a row is not
                // needed to delete it.
                let keys = key_columns(schema, &t.key);
                let pk_i: Vec<usize> = keys
                    .primary_key
                    .iter()
                    .filter_map(|c| keys.column_index(c))
                    .collect();
                loop {
                    let batch = retry(&format!("{}: reading {}", m.source, t.name), || {
                        src.read_batch(&keys, &t.key, after.as_ref(), &filter, CLEANUP_BATCH)
                    })
                    .await?;
                    let mut gone = Vec::new();
                    for (row, k) in batch.rows.iter().zip(&batch.keys) {
                        if self.move_of(k)? == Some(mi) {
                            gone.push(pk_i.iter().map(|&i| row[i].clone()).collect::<Vec<_>>());
                        }
                    }
                    retry(&format!("{}: deleting moved rows", m.source), || {
                        src.write_quiet(schema, &[], &gone)
                    })
                    .await?;
                    crate::failpoint::hit("cleanup_batch");
                    let done = batch.rows.len() < CLEANUP_BATCH;
                    let cursor = match &batch.last {
                        Some(l) => Some(serde_json::to_string(l)?),
                        None => None,
                    };
                    self.catalog
                        .record_cleanup(
                            self.job,
                            &m.id,
                            &t.name,
                            cursor.as_deref(),
                            done,
                            gone.len() as u64,
                        )
                        .await?;
                    if done {
                        break;
                    }
                    after = batch.last;
                }
            }
        }
        // Old owners keep their guards (fence rows up); shards that are only new owners
        // have nothing to refuse.
        let sources: HashSet<&str> = self.moves.iter().map(|m| m.source.as_str()).collect();
        for (shard, b) in self.shards() {
            if sources.contains(shard.as_str()) {
                self.catalog
                    .set_install(self.job, &shard, "guard kept")
                    .await?;
            } else {
                self.remove_guards(&shard, &b).await?;
                self.catalog
                    .set_install(self.job, &shard, "removed")
                    .await?;
            }
        }
        self.catalog.complete(self.job, &self.ctx.plan.to).await
    }

    /// Checks, before `complete` deletes anything, that each move's rows at the old owner equal
    /// those at the new owner: the reverse backlog is applied, then a full checksum pass runs
    /// (row counts and every row). The new owner is live, so a pass can catch a row mid-write:
    /// a difference whose key has an entry waiting in the new owner's change log is such a
    /// write, and only a difference that every pass (up to [`COMPLETE_VERIFY_PASSES`], the
    /// backlog applied before each) sees again without one counts. Damage done behind reshard's back, such as rows
    /// deleted at the new owner with the triggers bypassed, persists and is refused.
    pub async fn verify_before_delete(&self) -> Result<()> {
        let verifier = verify::Verifier {
            ctx: self.ctx,
            catalog: self.catalog,
            job: self.job,
            options: verify::Options {
                max_listed: 1000,
                ..verify::Options::default()
            },
            stop: None,
            progress: None,
            // Nothing is fenced yet: the passes wait on the job's throttle.
            paced: true,
        };
        for m in &self.moves {
            let mut persistent: Option<BTreeSet<(String, String, String)>> = None;
            let mut report = None;
            for _ in 0..COMPLETE_VERIFY_PASSES {
                self.drain(&m.destination, false).await?;
                let r = verify::verify_move(&verifier, m, verify::Scope::Full).await?;
                let mut seen = differences(&r);
                if !seen.is_empty() {
                    // A row written at the new owner since the drain has its entry waiting in
                    // the new owner's change log (nothing else consumes it while complete holds
                    // the lease): that difference is a write in flight, not damage.
                    let mut pending = BTreeSet::new();
                    for (ti, t) in self.ctx.tables.iter().enumerate() {
                        for pk in self.pending(&m.destination, ti).await? {
                            pending.insert((t.name.clone(), pk));
                        }
                    }
                    seen.retain(|(t, pk, _)| !pending.contains(&(t.clone(), pk.clone())));
                }
                let still: BTreeSet<(String, String, String)> = match persistent {
                    None => seen,
                    Some(p) => p.intersection(&seen).cloned().collect(),
                };
                let done = still.is_empty();
                persistent = Some(still);
                report = Some(r);
                if done {
                    break;
                }
            }
            let still = persistent.unwrap_or_default();
            if !still.is_empty() {
                let listed: Vec<String> = still
                    .iter()
                    .take(5)
                    .map(|(t, pk, what)| format!("{t} {pk} {what}"))
                    .collect();
                let summary = report.map(|r| r.render_text()).unwrap_or_default();
                return Err(Stop::Mismatch(format!(
                    "move {} ({} -> {}): {} row(s) differ between the old and the new owner in \
                     every pass (first: {}); nothing was deleted and the job stays in dual \
                     write. See them with: reshard verify {} --move {}\n{summary}",
                    m.id,
                    m.source,
                    m.destination,
                    still.len(),
                    listed
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.job,
                    m.id,
                ))
                .into());
            }
        }
        Ok(())
    }

    /// Cancels a job before any flip: fences lowered, capture and guards removed, the rows
    /// the job copied deleted from destinations, the tables it created dropped.
    pub async fn cancel(&self, created: &[(String, String)]) -> Result<()> {
        if let Some(mi) = (0..self.moves.len()).find(|&i| self.flipped[i]) {
            return Err(Stop::Refused(format!(
                "move {} has flipped; roll it back first (reshard rollback {})",
                self.moves[mi].id, self.job
            ))
            .into());
        }
        self.catalog
            .set_job_state(self.job, JobState::Cancelling, None)
            .await?;
        for (mi, m) in self.moves.iter().enumerate() {
            for side in [Side::From, Side::To] {
                let name = if side == Side::From {
                    &m.source
                } else {
                    &m.destination
                };
                let b = self.backend(side, name)?;
                crate::cutover::set_fence(b.as_ref(), self.pairs[mi], &m.id, false).await?;
            }
        }
        for (shard, b) in self.shards() {
            self.remove_capture(&shard, &b).await?;
            self.remove_guards(&shard, &b).await?;
            self.catalog
                .set_install(self.job, &shard, "removed")
                .await?;
        }
        crate::failpoint::hit("cancel_removed");
        let created: HashSet<(String, String)> = created.iter().cloned().collect();
        for (mi, m) in self.moves.iter().enumerate() {
            let dst = self.backend(Side::To, &m.destination)?;
            let filter = key_filter(&m.segments);
            for t in &self.ctx.tables {
                if created.contains(&(m.destination.clone(), t.name.clone())) {
                    continue;
                }
                let Some(schema) = self.ctx.schema(Side::To, &m.destination, &t.name) else {
                    continue;
                };
                let keys = key_columns(schema, &t.key);
                let pk_i: Vec<usize> = keys
                    .primary_key
                    .iter()
                    .filter_map(|c| keys.column_index(c))
                    .collect();
                let mut after: Option<PkValues> = None;
                loop {
                    let batch = retry(&format!("{}: reading {}", m.destination, t.name), || {
                        dst.read_batch(&keys, &t.key, after.as_ref(), &filter, CLEANUP_BATCH)
                    })
                    .await?;
                    let gone: Vec<Vec<Value>> = batch
                        .rows
                        .iter()
                        .zip(&batch.keys)
                        .filter(|(_, k)| matches!(self.move_of(k), Ok(Some(i)) if i == mi))
                        .map(|(row, _)| pk_i.iter().map(|&i| row[i].clone()).collect())
                        .collect();
                    retry(&format!("{}: deleting copied rows", m.destination), || {
                        dst.delete(schema, &gone)
                    })
                    .await?;
                    if batch.rows.len() < CLEANUP_BATCH {
                        break;
                    }
                    after = batch.last;
                }
            }
        }
        for (shard, table) in &created {
            if let Some(b) = self.ctx.shard(Side::To, shard) {
                let q = b.dialect().quote(table);
                let drop = [format!("DROP TABLE IF EXISTS {q}")];
                crate::lockwait::bounded(&format!("shard {shard}: dropping {table}"), || {
                    b.run_ddl(&drop)
                })
                .await?;
            }
        }
        self.catalog
            .set_job_state(self.job, JobState::Cancelled, None)
            .await?;
        Ok(())
    }
}
