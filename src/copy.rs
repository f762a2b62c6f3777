//! The batched copy of one move: per table, keyset pages in primary-key order at the source;
//! the rows whose (old owner, new owner) is the move's (source, destination), routed in Rust for
//! every row; an idempotent upsert at the destination; then the cursor recorded in the catalog.
//!
//! A crash after the upsert and before the cursor record re-reads and re-upserts that batch on
//! resume: same rows, same result. Memory is two batches: the one being written and the next,
//! read meanwhile.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result};

use crate::backend::postgres::{pipe, Postgres};
use crate::backend::{Backend, PkValues, TableSchema};
use crate::catalog::Catalog;
use crate::failpoint;
use crate::ident::Dialect;
use crate::job::MoveState;
use crate::plan::Move;
use crate::preflight::{key_filter, Context, Side};
use crate::progress::Progress;
use crate::retry::retry;
use crate::signals::StopFlag;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Copied,
    /// Stopped between batches because a stop was requested.
    Stopped,
}

pub struct CopyJob<'a> {
    pub ctx: &'a Context,
    pub catalog: &'a Catalog,
    pub job: &'a str,
    /// The first batch's size; with the job's `--batch-time`, later ones adapt
    /// (src/batch_size.rs).
    pub batch_size: usize,
    pub progress: &'a Progress,
    pub stop: &'a StopFlag,
    /// `--read-from replica`: pages are read from a replica of the source that has replayed
    /// past capture's install point (src/replica_read.rs).
    pub read_from_replica: bool,
}

impl CopyJob<'_> {
    pub async fn run_move(&self, m: &Move) -> Result<Outcome> {
        let state = self
            .catalog
            .moves(self.job)
            .await?
            .into_iter()
            .find(|r| r.id == m.id)
            .with_context(|| format!("move {} is not in the catalog", m.id))?
            .state;
        match MoveState::parse(&state) {
            Some(MoveState::Pending | MoveState::Copying) => {}
            Some(_) => return Ok(Outcome::Copied),
            None => anyhow::bail!("move {}: unknown state {state:?} in the catalog", m.id),
        }
        self.catalog
            .set_move_state(self.job, &m.id, MoveState::Copying, None)
            .await?;
        self.progress.set_state(&m.id, MoveState::Copying.as_str());
        let src = self
            .ctx
            .shard(Side::From, &m.source)
            .with_context(|| format!("shard {} is not connected", m.source))?
            .clone();
        let dst = self
            .ctx
            .shard(Side::To, &m.destination)
            .with_context(|| format!("shard {} is not connected", m.destination))?
            .clone();
        // Capture is installed on every shard before any copy starts, so the primary's
        // position taken now is past the install point.
        let src = if self.read_from_replica {
            let r = crate::replica_read::open(
                &self.ctx.plan,
                self.catalog,
                self.job,
                &m.id,
                &src,
                self.stop,
            );
            match r.await? {
                Some(r) => r,
                None => return Ok(Outcome::Stopped),
            }
        } else {
            src
        };
        let cursors = self.catalog.cursors(self.job, &m.id).await?;
        for t in &self.ctx.tables {
            let cur = cursors.iter().find(|c| c.table == t.name);
            if cur.is_some_and(|c| c.done) {
                continue;
            }
            let after: Option<PkValues> = match cur.and_then(|c| c.cursor_json.as_deref()) {
                Some(j) => Some(serde_json::from_str(j).with_context(|| {
                    format!(
                        "move {}: table {}: unreadable cursor in the catalog",
                        m.id, t.name
                    )
                })?),
                None => None,
            };
            let schema = self
                .ctx
                .schema(Side::From, &m.source, &t.name)
                .with_context(|| format!("shard {}: table {} not described", m.source, t.name))?
                .clone();
            let out = self
                .copy_table(m, &src, &dst, &schema, &t.key, after)
                .await
                .with_context(|| format!("move {} table {}", m.id, t.name))?;
            if out == Outcome::Stopped {
                return Ok(Outcome::Stopped);
            }
        }
        self.catalog
            .set_move_state(self.job, &m.id, MoveState::Copied, None)
            .await?;
        self.progress.set_state(&m.id, MoveState::Copied.as_str());
        Ok(Outcome::Copied)
    }

    /// An event of move `m`; failing to record it only warns.
    async fn note(&self, m: &Move, kind: &str, what: &str) {
        let e = self.catalog.event(self.job, Some(&m.id), kind, what);
        if let Err(e) = e.await {
            crate::progress::say(format!("reshard: warning: {e:#}"));
        }
    }

    /// An event when the adaptive size has doubled or halved since the last one.
    async fn tell_size(
        &self,
        m: &Move,
        table: &str,
        size: usize,
        asked: usize,
        took: std::time::Duration,
        target: std::time::Duration,
    ) {
        let what = format!(
            "{table}: batch size {size} rows ({asked} rows took {} ms; target {} ms)",
            took.as_millis(),
            target.as_millis()
        );
        self.note(m, "batch_size", &what).await;
    }

    /// Whether move `m`'s rows of `schema` go through the COPY pipe between two PostgreSQL
    /// shards (src/backend/postgres/pipe.rs): the move's SQL filter selects exactly its rows,
    /// so none needs routing in Rust, and the primary key is all integers.
    fn pipe_for<'b>(
        &self,
        m: &Move,
        (src, dst): (&'b Arc<dyn Backend>, &'b Arc<dyn Backend>),
        schema: &TableSchema,
        key: &str,
    ) -> Option<(&'b Postgres, &'b Postgres)> {
        if std::env::var_os("RESHARD_NO_PIPE").is_some() {
            return None;
        }
        let (s, d) = (src.as_postgres()?, dst.as_postgres()?);
        let key_type = &schema.columns.iter().find(|c| c.name == key)?.data_type;
        let exact =
            crate::verify::filter_is_exact_on(&self.ctx.plan, m, Dialect::Postgres, key_type);
        (exact && pipe::pipeable(schema)).then_some((s, d))
    }

    /// [`Self::copy_table`] through the COPY pipe: each batch streams from the source into the
    /// destination in one transaction there, then its cursor is recorded. A batch that a killed
    /// run wrote and did not record meets its own rows, fails whole on the primary key, and is
    /// read and written again through the upsert.
    async fn copy_table_piped(
        &self,
        m: &Move,
        (s, d): (&Postgres, &Postgres),
        schema: &TableSchema,
        key: &str,
        mut after: Option<PkValues>,
    ) -> Result<Outcome> {
        let filter = key_filter(&m.segments);
        let throttle = crate::throttle::for_job(self.job);
        let mut size = self.batch_size;
        let mut told = size;
        self.note(
            m,
            "copy_path",
            &format!(
                "{}: COPY piped from {} to {}",
                schema.name, m.source, m.destination
            ),
        )
        .await;
        loop {
            if self.stop.requested() {
                return Ok(Outcome::Stopped);
            }
            throttle.pace(size as u64, Some(self.stop)).await;
            let started = Instant::now();
            failpoint::hit("before_upsert");
            let what = format!("{} -> {}: copying {}", m.source, m.destination, schema.name);
            let piped = retry(&what, || {
                s.pipe_to(d, schema, key, after.as_ref(), &filter, size)
            })
            .await;
            let piped = match piped {
                Ok(p) => p,
                Err(e) if crate::backend::pg_copy_in::is_unique_violation(&e) => {
                    self.rewrite_batch(m, (s, d), schema, key, after.as_ref(), size)
                        .await?
                }
                Err(e) => return Err(e),
            };
            failpoint::hit("after_upsert");
            let done = piped.rows < size as u64;
            let cursor = match &piped.last {
                Some(last) => Some(serde_json::to_string(last)?),
                None => None,
            };
            let elapsed = started.elapsed();
            retry("catalog: recording progress", || {
                self.catalog.record_batch(
                    self.job,
                    &m.id,
                    &schema.name,
                    cursor.as_deref(),
                    done,
                    piped.rows,
                    piped.rows,
                    piped.bytes,
                    elapsed.as_millis() as u64,
                )
            })
            .await?;
            failpoint::hit("after_cursor");
            if let Some(target) = throttle.batch_time() {
                let asked = size;
                size = crate::batch_size::next(asked, started.elapsed(), target);
                if crate::batch_size::worth_telling(told, size) {
                    told = size;
                    self.tell_size(m, &schema.name, size, asked, started.elapsed(), target)
                        .await;
                }
            }
            self.progress.add_rows(&m.id, piped.rows);
            if done || piped.last.is_none() {
                return Ok(Outcome::Copied);
            }
            after = piped.last;
        }
    }

    /// One batch of the pipe written again through the upsert (see
    /// [`Self::copy_table_piped`]): the same rows, every one overwritten.
    async fn rewrite_batch(
        &self,
        m: &Move,
        (s, d): (&Postgres, &Postgres),
        schema: &TableSchema,
        key: &str,
        after: Option<&PkValues>,
        size: usize,
    ) -> Result<pipe::Piped> {
        self.note(
            m,
            "batch_rewritten",
            &format!(
                "{}: a batch already at {} (written by a run stopped before recording it) \
                 written again through the upsert",
                schema.name, m.destination
            ),
        )
        .await;
        let filter = key_filter(&m.segments);
        let batch = retry(&format!("{}: reading {}", m.source, schema.name), || {
            s.read_batch(schema, key, after, &filter, size)
        })
        .await?;
        retry(
            &format!("{}: writing {}", m.destination, schema.name),
            || d.write_quiet(schema, &batch.rows, &[]),
        )
        .await?;
        Ok(pipe::Piped {
            rows: batch.rows.len() as u64,
            bytes: batch.bytes,
            last: batch.last,
        })
    }

    async fn copy_table(
        &self,
        m: &Move,
        src: &Arc<dyn Backend>,
        dst: &Arc<dyn Backend>,
        schema: &TableSchema,
        key: &str,
        mut after: Option<PkValues>,
    ) -> Result<Outcome> {
        if let Some(pair) = self.pipe_for(m, (src, dst), schema, key) {
            return self.copy_table_piped(m, pair, schema, key, after).await;
        }
        let filter = key_filter(&m.segments);
        let (si, di) = self.ctx.move_indices(m);
        let throttle = crate::throttle::for_job(self.job);
        // Each page's size is charged to the job's rate cap before it is read: the cap paces
        // what the sources are asked for, the last page included.
        // Returns the page, the size it was asked for, and how long the read took (pacing
        // excluded): with the write's time, what the next size adapts to.
        let read_page = |after: Option<PkValues>, size: usize| {
            let (filter, throttle) = (&filter, &throttle);
            async move {
                throttle.pace(size as u64, Some(self.stop)).await;
                let t = Instant::now();
                let page = retry(&format!("{}: reading {}", m.source, schema.name), || {
                    src.read_batch(schema, key, after.as_ref(), filter, size)
                })
                .await?;
                anyhow::Ok((page, size, t.elapsed()))
            }
        };
        let mut size = self.batch_size;
        let mut told = size;
        // The next page is read while this one is written and recorded: the source's read and
        // the destination's write overlap. Only the write and the cursor are durable steps, and
        // they stay in order.
        let mut ahead = None;
        loop {
            if self.stop.requested() {
                return Ok(Outcome::Stopped);
            }
            let started = Instant::now();
            let (batch, asked, read_took) = match ahead.take() {
                Some(b) => b,
                None => read_page(after.clone(), size).await?,
            };
            let read = batch.rows.len();
            let mut kept = Vec::new();
            for (row, k) in batch.rows.into_iter().zip(&batch.keys) {
                let from = self.ctx.from.owner_index(k);
                let to = self.ctx.to.owner_index(k);
                match (from, to) {
                    (Ok(s), Ok(d)) => {
                        if s == si && d == di {
                            kept.push(row);
                        }
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        anyhow::bail!("shard {}: a row cannot be routed: {e}", m.source)
                    }
                }
            }
            failpoint::hit("before_upsert");
            let done = read < asked;
            let cursor = match &batch.last {
                Some(last) => Some(serde_json::to_string(last)?),
                None => None,
            };
            let bytes = if read == 0 {
                0
            } else {
                batch.bytes * kept.len() as u64 / read as u64
            };
            let write = async {
                let w = Instant::now();
                if !kept.is_empty() {
                    retry(
                        &format!("{}: writing {}", m.destination, schema.name),
                        // Quiet: the destination's capture is for reverse sync after the flip,
                        // not for reshard's own copy.
                        || dst.insert_new_quiet(schema, &kept),
                    )
                    .await?;
                }
                failpoint::hit("after_upsert");
                let elapsed = started.elapsed().as_millis() as u64;
                retry("catalog: recording progress", || {
                    self.catalog.record_batch(
                        self.job,
                        &m.id,
                        &schema.name,
                        cursor.as_deref(),
                        done,
                        read as u64,
                        kept.len() as u64,
                        bytes,
                        elapsed,
                    )
                })
                .await?;
                failpoint::hit("after_cursor");
                anyhow::Ok(w.elapsed())
            };
            let next = async {
                match (done, &batch.last) {
                    (false, Some(_)) => read_page(batch.last.clone(), size).await.map(Some),
                    _ => Ok(None),
                }
            };
            let (written, next) = tokio::join!(write, next);
            let took = read_took + written?;
            // Read each batch: `reshard throttle --batch-time` changes it while the job runs.
            if let Some(target) = throttle.batch_time() {
                size = crate::batch_size::next(asked, took, target);
                size = crate::batch_size::cap_bytes(size, batch.bytes, read);
                if crate::batch_size::worth_telling(told, size) {
                    told = size;
                    self.tell_size(m, &schema.name, size, asked, took, target)
                        .await;
                }
            }
            self.progress.add_rows(&m.id, kept.len() as u64);
            if done {
                return Ok(Outcome::Copied);
            }
            ahead = next?;
            after = batch.last;
        }
    }
}
