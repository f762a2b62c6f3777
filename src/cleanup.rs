//! The two ends of an online job: `complete` (after every flip) and `cancel` (before any).
//! Both are idempotent: every step is re-runnable and recorded in the catalog.

use std::collections::{BTreeSet, HashSet};

use anyhow::{Context as _, Result};
use indicatif::HumanCount;

use crate::backend::{Backend, PkValues, TableSchema};
use crate::capture::Online;
use crate::error::Stop;
use crate::job::JobState;
use crate::preflight::{key_filter, Side};
use crate::retry::retry;
use crate::verify;

/// Rows deleted per transaction (and per recorded cursor) by `complete` and `cancel`.
/// 10,000: with 1,000, the catalog record per batch took a third of the time.
const CLEANUP_BATCH: usize = 10_000;

/// The same where one `DELETE` over a key range takes a batch (an exact filter): it holds
/// no key list, so a batch costs a read of its keys, the statement and the catalog record,
/// and fewer, larger batches spend less on the last two.
const CLEANUP_BATCH_RANGE: usize = 50_000;

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
            let started = std::time::Instant::now();
            let mut deleted = 0u64;
            for t in &self.ctx.tables {
                let cur = self
                    .catalog
                    .cleanup_cursor(self.job, &m.id, &t.name)
                    .await?;
                if cur.as_ref().is_some_and(|c| c.1) {
                    continue;
                }
                let after: Option<PkValues> = match cur.and_then(|c| c.0) {
                    Some(j) => Some(serde_json::from_str(&j).context("cleanup cursor")?),
                    None => None,
                };
                let schema = self
                    .ctx
                    .schema(Side::From, &m.source, &t.name)
                    .with_context(|| format!("shard {}: {} not described", m.source, t.name))?;
                let target = Target {
                    mi,
                    shard: &m.source,
                    backend: src.as_ref(),
                    schema,
                    key: &t.key,
                };
                let mut beat = crate::progress::Heartbeat::new();
                self.delete_moved(&target, after, async |cursor, done, n| {
                    deleted += n;
                    beat.beat(|| {
                        format!(
                            "complete: move {} ({} -> {}): {} old copies deleted so far",
                            m.id,
                            m.source,
                            m.destination,
                            HumanCount(deleted)
                        )
                    });
                    crate::failpoint::hit("cleanup_batch");
                    let cursor = match cursor {
                        Some(l) => Some(serde_json::to_string(l)?),
                        None => None,
                    };
                    self.catalog
                        .record_cleanup(self.job, &m.id, &t.name, cursor.as_deref(), done, n)
                        .await
                })
                .await?;
            }
            crate::progress::say_at(format!(
                "complete: move {} ({} -> {}): {} old copies deleted in {:.1} s",
                m.id,
                m.source,
                m.destination,
                HumanCount(deleted),
                started.elapsed().as_secs_f64()
            ));
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
            let started = std::time::Instant::now();
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
            if still.is_empty() {
                let rows: u64 = report
                    .iter()
                    .flat_map(|r| &r.tables)
                    .map(|t| t.rows_source)
                    .sum();
                crate::progress::say_at(format!(
                    "complete: move {} ({} -> {}): {} rows verified before deleting, in {:.1} s",
                    m.id,
                    m.source,
                    m.destination,
                    HumanCount(rows),
                    started.elapsed().as_secs_f64()
                ));
            }
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
            let mut deleted = 0u64;
            for t in &self.ctx.tables {
                if created.contains(&(m.destination.clone(), t.name.clone())) {
                    continue;
                }
                let Some(schema) = self.ctx.schema(Side::To, &m.destination, &t.name) else {
                    continue;
                };
                let target = Target {
                    mi,
                    shard: &m.destination,
                    backend: dst.as_ref(),
                    schema,
                    key: &t.key,
                };
                self.delete_moved(&target, None, async |_, _, n| {
                    deleted += n;
                    Ok(())
                })
                .await?;
            }
            crate::progress::say_at(format!(
                "cancel: move {} ({} -> {}): {} copied rows deleted at {}",
                m.id,
                m.source,
                m.destination,
                HumanCount(deleted),
                m.destination
            ));
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

/// `RESHARD_CLEANUP_BATCH`: rows per cleanup batch, for tests that need many batches of a few
/// rows (tests/complete_deletes.rs).
fn batch_override() -> Option<usize> {
    std::env::var("RESHARD_CLEANUP_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
}

/// A table at one shard whose rows of one move `complete` or `cancel` deletes.
struct Target<'a> {
    /// The move's index in [`Online::moves`].
    mi: usize,
    shard: &'a str,
    backend: &'a dyn Backend,
    schema: &'a TableSchema,
    key: &'a str,
}

impl Online<'_> {
    /// Deletes the rows of move `t.mi` in `t`'s table after the cursor `after`, in primary-key
    /// order, [`CLEANUP_BATCH`] rows per transaction ([`CLEANUP_BATCH_RANGE`] by range), quiet (the guards let reshard through).
    /// After each batch, `record(cursor, finished, deleted)`.
    ///
    /// Where the move's SQL filter selects exactly its rows (`verify::filter_is_exact_on`),
    /// each batch is one `DELETE` over its primary-key range and the filter, not a list of
    /// keys. Otherwise every row read is routed with both maps and only the move's are
    /// deleted, by key.
    async fn delete_moved(
        &self,
        t: &Target<'_>,
        mut after: Option<PkValues>,
        mut record: impl AsyncFnMut(Option<&PkValues>, bool, u64) -> Result<()>,
    ) -> Result<()> {
        let m = &self.moves[t.mi];
        let filter = key_filter(&m.segments);
        let exact = t
            .schema
            .columns
            .iter()
            .find(|c| c.name == t.key)
            .is_some_and(|c| {
                verify::filter_is_exact_on(&self.ctx.plan, m, t.backend.dialect(), &c.data_type)
            });
        // Only the primary key and the shard key are read: the rest of a row is not needed
        // to delete it.
        let keys = key_columns(t.schema, t.key);
        let pk_i: Vec<usize> = keys
            .primary_key
            .iter()
            .filter_map(|c| keys.column_index(c))
            .collect();
        let size = batch_override().unwrap_or(if exact {
            CLEANUP_BATCH_RANGE
        } else {
            CLEANUP_BATCH
        });
        loop {
            let batch = retry(&format!("{}: reading {}", t.shard, t.schema.name), || {
                t.backend
                    .read_batch(&keys, t.key, after.as_ref(), &filter, size)
            })
            .await?;
            let what = format!("{}: deleting the rows of move {}", t.shard, m.id);
            let n = if exact {
                match &batch.last {
                    Some(last) => {
                        crate::lockwait::bounded(&what, || {
                            t.backend.delete_range_quiet(
                                t.schema,
                                t.key,
                                (after.as_ref(), Some(last)),
                                &filter,
                            )
                        })
                        .await?
                    }
                    None => 0,
                }
            } else {
                let mut gone = Vec::new();
                for (row, k) in batch.rows.iter().zip(&batch.keys) {
                    if self.move_of(k)? == Some(t.mi) {
                        gone.push(pk_i.iter().map(|&i| row[i].clone()).collect::<Vec<_>>());
                    }
                }
                crate::lockwait::bounded(&what, || t.backend.delete_keys_quiet(t.schema, &gone))
                    .await?
            };
            let done = batch.rows.len() < size;
            record(batch.last.as_ref(), done, n).await?;
            if done {
                return Ok(());
            }
            after = batch.last;
        }
    }
}
