//! The two ends of an online job: `complete` (after every flip) and `cancel` (before any).
//! Both are idempotent: every step is re-runnable and recorded in the catalog.

use std::collections::HashSet;

use anyhow::{Context as _, Result};

use crate::backend::{PkValues, Value};
use crate::capture::Online;
use crate::job::JobState;
use crate::preflight::{key_filter, Side};
use crate::retry::retry;

const CLEANUP_BATCH: usize = 1000;

impl Online<'_> {
    /// Completes a job whose moves have all flipped: capture and logs dropped everywhere, the
    /// moved rows deleted from their old owners in batches (cursor in the catalog), guards
    /// kept where a fence row is up (old owners: they refuse stale writers) and dropped
    /// elsewhere, then routing becomes the plan's `to` map.
    pub async fn complete(&self) -> Result<i64> {
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
                let pk_i: Vec<usize> = schema
                    .primary_key
                    .iter()
                    .filter_map(|c| schema.column_index(c))
                    .collect();
                loop {
                    let batch = retry(&format!("{}: reading {}", m.source, t.name), || {
                        src.read_batch(schema, &t.key, after.as_ref(), &filter, CLEANUP_BATCH)
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

    /// Cancels a job before any flip: fences lowered, capture and guards removed, the rows
    /// the job copied deleted from destinations, the tables it created dropped.
    pub async fn cancel(&self, created: &[(String, String)]) -> Result<()> {
        if let Some(mi) = (0..self.moves.len()).find(|&i| self.flipped[i]) {
            return Err(crate::error::Stop::Refused(format!(
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
                self.backend(side, name)?
                    .set_fence(self.pairs[mi], &m.id, false)
                    .await?;
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
                let pk_i: Vec<usize> = schema
                    .primary_key
                    .iter()
                    .filter_map(|c| schema.column_index(c))
                    .collect();
                let mut after: Option<PkValues> = None;
                loop {
                    let batch = retry(&format!("{}: reading {}", m.destination, t.name), || {
                        dst.read_batch(schema, &t.key, after.as_ref(), &filter, CLEANUP_BATCH)
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
                b.run_ddl(&[format!("DROP TABLE IF EXISTS {q}")]).await?;
            }
        }
        self.catalog
            .set_job_state(self.job, JobState::Cancelled, None)
            .await?;
        Ok(())
    }
}
