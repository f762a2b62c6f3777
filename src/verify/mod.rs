//! Verification of moves: chunked SHA-1 checksums of the canonical row encoding, source against
//! destination, narrowed to rows and columns on a mismatch; repair; and the audit of a finished
//! layout (`audit`). Documented in docs/verification.md.
//!
//! # How a move's table is verified
//! The move's rows (old owner = the move's source, new owner = its destination: selected by the
//! SQL filter where the map allows, and routed in Rust for every row unless that filter is exact,
//! see `sql_filter_is_exact`) are read in primary-key order in chunks, the two sides by two
//! free-running tasks (`stream`): a chunk is the primary-key range `(after, last]` of up to K
//! source rows;
//! the destination is read over the same range, so extra destination rows show. Each side's
//! chunk checksum is sha1 over the canonical encodings ([`canonical`]) of its rows in order.
//! K adapts toward `Options::target_chunk_ms` per chunk. Every chunk is recorded in the catalog
//! (`verify_chunks`, `verify_progress`) before the next one starts, so a killed verification
//! resumes after its last recorded chunk.
//!
//! # Interface for the online cutover (stable)
//! ```ignore
//! let v = verify::Verifier { ctx: &ctx, catalog: &catalog, job: &job_id,
//!                            options: verify::Options::default(), stop: None,
//!                            progress: None };
//! // Once after the copy, outside the fence: a full pass (resumable).
//! let r = verify::verify_move(&v, &mv, verify::Scope::Full).await?;
//! // Under the fence: only the chunks holding keys touched since (table -> primary keys,
//! // in primary-key column order, as `Backend::read_batch` returns them).
//! let r = verify::verify_move(&v, &mv, verify::Scope::Touched(&touched)).await?;
//! if !r.ok { /* lower the fence, Stop::Mismatch */ }
//! ```
//! `Scope::Touched` reuses the chunk checksums recorded by the last full pass and recomputes
//! only the chunks whose range holds a touched key (both sides), so its cost follows the number
//! of touched keys, not the table. Without a finished full pass for a table it runs (or
//! finishes) the full pass. A mismatch is not an error: the report says `ok: false`, and the
//! caller decides (the `verify` command exits 3). The report is stored in the catalog.
//!
//! Locating a touched key's chunk compares primary keys in Rust: integers numerically, text by
//! bytes. For text primary keys under a non-binary collation, a key could be placed in a
//! neighbouring chunk; such tables should get a `Scope::Full` before the flip.

pub mod audit;
pub mod canonical;
mod chunk;
pub mod report;
mod stream;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use sha1::{Digest, Sha1};

use crate::backend::PkValues;
use crate::catalog::{Catalog, ChunkRow};
use crate::error::Stop;
use crate::failpoint;
use crate::hashing::HashKind;
use crate::ident::Dialect;
use crate::map::Bound;
use crate::plan::{Move, Segments};
use crate::preflight::{key_filter, Context, Side};
use crate::signals::StopFlag;
use canonical::Class;
use chunk::{Read, TableJob, TableSide};
pub use report::{Diff, Differing, MoveReport, TableReport};

/// Primary keys touched since the last full pass, per table.
pub type Touched = BTreeMap<String, Vec<PkValues>>;

#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Every chunk (resuming an unfinished pass, else a new pass).
    Full,
    /// Only the chunks holding these keys; the other chunks' recorded checksums stand.
    Touched(&'a Touched),
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Chunk size K adapts so that a chunk takes about this long to read and compare.
    pub target_chunk_ms: u64,
    /// K of a new pass.
    pub initial_chunk_rows: usize,
    pub min_chunk_rows: usize,
    pub max_chunk_rows: usize,
    /// When false, K stays `initial_chunk_rows` (reproducible chunk boundaries).
    pub adapt: bool,
    /// Primary keys listed per kind of difference and table.
    pub max_listed: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            target_chunk_ms: 500,
            initial_chunk_rows: 1000,
            min_chunk_rows: 100,
            max_chunk_rows: 200_000,
            adapt: true,
            max_listed: 20,
        }
    }
}

pub struct Verifier<'a> {
    /// Connections and schemas (`preflight::connect` + `describe_all`).
    pub ctx: &'a Context,
    pub catalog: &'a Catalog,
    pub job: &'a str,
    pub options: Options,
    /// Checked between chunks: a requested stop ends with `Stop::Interrupted`.
    pub stop: Option<&'a StopFlag>,
    /// Told the source rows of every chunk recorded by a full pass (`reshard verify` shows it).
    pub progress: Option<&'a crate::progress::Progress>,
    /// Each chunk's source rows are charged to the job's throttle in this process (its rate
    /// cap, and the load and lag holds), and the next chunk waits on it. False under a fence,
    /// which never waits on a throttle.
    pub paced: bool,
}

/// Verifies one move (every table), records progress and the report in the catalog, and
/// returns the report. See the module documentation.
pub async fn verify_move(v: &Verifier<'_>, m: &Move, scope: Scope<'_>) -> Result<MoveReport> {
    let mut report = MoveReport {
        job: v.job.to_string(),
        move_id: m.id.clone(),
        source: m.source.clone(),
        destination: m.destination.clone(),
        scope: match scope {
            Scope::Full => "full",
            Scope::Touched(_) => "touched",
        }
        .into(),
        ok: true,
        tables: Vec::new(),
    };
    for t in &v.ctx.tables {
        let tj = table_job(v, m, &t.name, &t.key)?;
        let computed = match scope {
            Scope::Full => full_pass(v, m, &tj).await?,
            Scope::Touched(touched) => {
                let pks = touched.get(&t.name).map(Vec::as_slice).unwrap_or(&[]);
                touched_pass(v, m, &tj, pks).await?
            }
        };
        let tr = table_report(v, m, &t.name, computed).await?;
        report.ok &= tr.mismatched_chunks == 0;
        report.tables.push(tr);
    }
    v.catalog
        .verify_save_report(
            v.job,
            Some(&m.id),
            report.ok,
            &serde_json::to_string(&report)?,
        )
        .await?;
    Ok(report)
}

/// Rewrites the differing and missing rows of every mismatched chunk from the source and
/// deletes the move's extra destination rows there, then recomputes those chunks. Returns the
/// new report (the caller checks `ok`).
pub async fn repair_move(v: &Verifier<'_>, m: &Move) -> Result<(MoveReport, u64, u64)> {
    let (mut written, mut deleted) = (0, 0);
    for t in &v.ctx.tables {
        let tj = table_job(v, m, &t.name, &t.key)?;
        for c in v.catalog.verify_chunks(v.job, &m.id, &t.name).await? {
            if c.ok {
                continue;
            }
            let (after, last) = chunk_range(&c)?;
            let page = v.options.max_chunk_rows.max(1000);
            let src = Read::range(&tj, false, after.clone(), last.clone(), page, true);
            let dst = Read::range(&tj, true, after, last, page, true);
            let (src, dst) = (src.rows().await?, dst.rows().await?);
            let (w, d) = tj.repair(&src, &dst).await?;
            written += w;
            deleted += d;
            recompute(v, m, &tj, &c).await?;
        }
    }
    let mut report = MoveReport {
        job: v.job.to_string(),
        move_id: m.id.clone(),
        source: m.source.clone(),
        destination: m.destination.clone(),
        scope: "repair".into(),
        ok: true,
        tables: Vec::new(),
    };
    for t in &v.ctx.tables {
        let tr = table_report(v, m, &t.name, Work::default()).await?;
        report.ok &= tr.mismatched_chunks == 0;
        report.tables.push(tr);
    }
    v.catalog
        .verify_save_report(
            v.job,
            Some(&m.id),
            report.ok,
            &serde_json::to_string(&report)?,
        )
        .await?;
    Ok((report, written, deleted))
}

fn table_job(v: &Verifier<'_>, m: &Move, table: &str, key: &str) -> Result<Arc<TableJob>> {
    let ctx = v.ctx;
    let src_b = ctx
        .shard(Side::From, &m.source)
        .with_context(|| format!("shard {} is not connected", m.source))?
        .clone();
    let dst_b = ctx
        .shard(Side::To, &m.destination)
        .with_context(|| format!("shard {} is not connected", m.destination))?
        .clone();
    let src_s = ctx
        .schema(Side::From, &m.source, table)
        .with_context(|| format!("shard {}: table {table} does not exist", m.source))?
        .clone();
    let dst_s = ctx
        .schema(Side::To, &m.destination, table)
        .with_context(|| format!("shard {}: table {table} does not exist", m.destination))?
        .clone();
    let pk_idx = src_s
        .primary_key
        .iter()
        .map(|c| {
            src_s
                .column_index(c)
                .with_context(|| format!("table {table}: no primary-key column {c}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let columns = src_s.columns.iter().map(|c| c.name.clone()).collect();
    let (src, dst) = (
        TableSide::new(src_b, src_s.clone(), &src_s)?,
        TableSide::new(dst_b, dst_s, &src_s)?,
    );
    let key_i = src_s
        .column_index(key)
        .with_context(|| format!("table {table}: no shard-key column {key}"))?;
    let exact = src.backend.dialect() != Dialect::Sqlite
        && src.classes[key_i] == Class::Integer
        && dst.classes[key_i] == Class::Integer
        && sql_filter_is_exact(&ctx.plan, m);
    Ok(Arc::new(TableJob {
        table: table.to_string(),
        key: key.to_string(),
        filter: key_filter(&m.segments),
        from: ctx.from.clone(),
        to: ctx.to.clone(),
        pair: ctx.move_indices(m),
        dst,
        src,
        columns,
        pk_idx,
        pool: Default::default(),
        exact,
    }))
}

/// Whether the move's SQL filter (`preflight::key_filter`) selects exactly the move's rows, so
/// that they need not be routed again in Rust (~5% of a PostgreSQL pass's CPU): integer range
/// or identity-modulo segments, which SQL computes exactly on an integer key column (the
/// caller checks the column on both sides; not SQLite, where a column of integer affinity
/// may still hold text), and the planner's own segments for these maps, which
/// `tests/plan_props.rs` checks are exact (a key is in a move's segments if and only if it
/// moves between its shards). A plan whose segments were edited keeps the routing. Were a
/// filter ever too wide, the rows it let through would show as extra source rows: a loud
/// mismatch, never a silent one.
pub(crate) fn sql_filter_is_exact(plan: &crate::plan::Plan, m: &Move) -> bool {
    let computable = match &m.segments {
        Segments::Ranges { ranges } => ranges.iter().all(|r| {
            [&r.from, &r.to]
                .iter()
                .all(|b| matches!(b, None | Some(Bound::Int(_))))
        }),
        Segments::Residues { hash, .. } => *hash == HashKind::Identity,
        _ => false,
    };
    computable
        && crate::planner::plan(&plan.from, &plan.to).is_ok_and(|p| {
            p.moves.iter().any(|d| {
                d.source == m.source && d.destination == m.destination && d.segments == m.segments
            })
        })
}

/// Whether, on a shard of `dialect` whose shard-key column is declared `key_type`, the move's
/// SQL filter selects exactly the move's rows (see [`sql_filter_is_exact`] for the rule).
pub(crate) fn filter_is_exact_on(
    plan: &crate::plan::Plan,
    m: &Move,
    dialect: Dialect,
    key_type: &str,
) -> bool {
    dialect != Dialect::Sqlite
        && canonical::class_of(dialect, key_type) == Class::Integer
        && sql_filter_is_exact(plan, m)
}

fn parse_pk(j: Option<&str>) -> Result<Option<PkValues>> {
    match j {
        Some(s) => Ok(Some(
            serde_json::from_str(s).context("unreadable primary key in the catalog")?,
        )),
        None => Ok(None),
    }
}

fn chunk_range(c: &ChunkRow) -> Result<(Option<PkValues>, Option<PkValues>)> {
    Ok((
        parse_pk(c.after_json.as_deref())?,
        parse_pk(c.last_json.as_deref())?,
    ))
}

fn check_stop(v: &Verifier<'_>) -> Result<()> {
    if v.stop.is_some_and(|s| s.requested()) {
        return Err(Stop::Interrupted {
            resume: format!("reshard verify {}", v.job),
        }
        .into());
    }
    Ok(())
}

/// Chunks computed by one call, and how many of them were read a second time (with values)
/// because their first checksums differed.
#[derive(Debug, Default, Clone, Copy)]
struct Work {
    chunks: u64,
    reread: u64,
}

impl Work {
    fn add(&mut self, reread: bool) {
        self.chunks += 1;
        self.reread += u64::from(reread);
    }
}

/// Runs (or resumes) the full pass of one table.
async fn full_pass(v: &Verifier<'_>, m: &Move, tj: &Arc<TableJob>) -> Result<Work> {
    let o = &v.options;
    let progress = v.catalog.verify_progress(v.job, &m.id, &tj.table).await?;
    let (after, mut no, k) = match progress {
        Some(p) if !p.done => (
            parse_pk(p.cursor_json.as_deref())?,
            p.next_chunk,
            (p.chunk_rows.max(1) as usize).clamp(o.min_chunk_rows, o.max_chunk_rows),
        ),
        _ => {
            let k = o.initial_chunk_rows.max(1);
            v.catalog
                .verify_start_pass(v.job, &m.id, &tj.table, k as i64)
                .await?;
            (None, 0, k)
        }
    };
    let mut work = Work::default();
    // What the copy read at the source: what a new pass will read, give or take the writes
    // since.
    let expected = match after {
        Some(_) => None,
        None => v
            .catalog
            .cursors(v.job, &m.id)
            .await?
            .into_iter()
            .find(|c| c.table == tj.table)
            .map(|c| c.rows_read),
    };
    let opts = o.clone();
    let mut chunks = stream::Chunks::start(tj, after, (k, expected), move |p| next_k(p, &opts));
    loop {
        check_stop(v)?;
        let ch = chunks
            .next()
            .await
            .context("a verification read task ended abnormally")??;
        let (c, reread) = make_chunk(
            no,
            ch.after.as_ref(),
            ch.last.as_ref(),
            tj,
            &ch.src,
            &ch.dst,
            o,
        )
        .await?;
        v.catalog
            .verify_record_chunk(v.job, &m.id, &tj.table, &c, true, ch.next_k as i64)
            .await?;
        if let Some(p) = v.progress {
            p.add_rows(&m.id, c.src_rows as u64);
        }
        failpoint::hit("verify_chunk");
        pace(v, c.src_rows).await;
        work.add(reread);
        no += 1;
        if ch.last.is_none() {
            return Ok(work);
        }
    }
}

/// A page's encodings are held in memory whole (one per side at a time, and one more kept for
/// reuse): chunks of wide rows are made smaller than this many bytes. 16 MiB: verifying 10^6
/// rows of ~300 bytes on PostgreSQL peaked at 139 MB resident with 64 MiB pages, 51 MB with
/// 16 MiB, 32 MB with 8 MiB, at the same speed.
const MAX_PAGE_BYTES: u64 = 16 << 20;

/// The next chunk's size after source page `p` (unchanged without `adapt`): toward
/// `target_chunk_ms`, under [`MAX_PAGE_BYTES`], shrinking toward the end ([`taper`]).
fn next_k(p: &stream::Page, o: &Options) -> usize {
    if !o.adapt {
        return p.k;
    }
    let mut k = adapt(p.k, p.took.as_millis() as u64, o);
    if p.read > 0 {
        let per_row = (p.bytes / p.read as u64).max(1);
        k = k
            .min((MAX_PAGE_BYTES / per_row) as usize)
            .max(o.min_chunk_rows.max(1));
    }
    taper(k, p.left, o)
}

/// Halves the chunk size while it is more than half of the rows `left`, down to the first
/// chunk's size: the last chunk's destination read, which nothing overlaps, stays short
/// (with 200,000-row chunks it was a fifth of a 10^6-row pass). An estimate that ran out
/// (`left` 0: rows were added since) changes nothing.
fn taper(k: usize, left: Option<u64>, o: &Options) -> usize {
    match left {
        Some(left) if left > 0 && k as u64 > left / 2 => {
            let floor = o.initial_chunk_rows.max(o.min_chunk_rows).max(1);
            ((left / 2) as usize).max(floor).min(k)
        }
        _ => k,
    }
}

fn adapt(k: usize, elapsed_ms: u64, o: &Options) -> usize {
    let target = o.target_chunk_ms.max(1) as f64;
    let ratio = (target / elapsed_ms.max(1) as f64).clamp(0.5, 2.0);
    ((k as f64 * ratio) as usize).clamp(o.min_chunk_rows.max(1), o.max_chunk_rows.max(1))
}

/// The chunk `(after, last]` from both sides' encodings. A mismatch is narrowed down to rows,
/// which needs the rows themselves: both sides are read again with values, and the chunk is
/// judged on that reading (a difference caught up in between is not reported). Returns the
/// chunk, and whether it was read again.
async fn make_chunk(
    no: i64,
    after: Option<&PkValues>,
    last: Option<&PkValues>,
    tj: &Arc<TableJob>,
    src: &chunk::Rows,
    dst: &chunk::Rows,
    o: &Options,
) -> Result<(ChunkRow, bool)> {
    let (mut ss, mut ds) = (src.sha1(), dst.sha1());
    let reread = ss != ds;
    let (mut src_rows, mut dst_rows) = (src.len(), dst.len());
    let mut diff_json = None;
    if reread {
        let page = o.max_chunk_rows.max(1000);
        let s = Read::range(tj, false, after.cloned(), last.cloned(), page, true);
        let d = Read::range(tj, true, after.cloned(), last.cloned(), page, true);
        let (s, d) = (s.rows().await?, d.rows().await?);
        (ss, ds) = (s.sha1(), d.sha1());
        (src_rows, dst_rows) = (s.len(), d.len());
        if ss != ds {
            diff_json = Some(serde_json::to_string(&tj.narrow(&s, &d, o.max_listed))?);
        }
    }
    let c = ChunkRow {
        chunk_no: no,
        after_json: after.map(serde_json::to_string).transpose()?,
        last_json: last.map(serde_json::to_string).transpose()?,
        src_rows: src_rows as i64,
        dst_rows: dst_rows as i64,
        ok: ss == ds,
        src_sha1: ss,
        dst_sha1: ds,
        diff_json,
    };
    Ok((c, reread))
}

/// Computes a recorded chunk again; true when it was read a second time (see [`make_chunk`]).
async fn recompute(v: &Verifier<'_>, m: &Move, tj: &Arc<TableJob>, c: &ChunkRow) -> Result<bool> {
    let (after, last) = chunk_range(c)?;
    let page = v.options.max_chunk_rows.max(1000);
    let src = Read::range(tj, false, after.clone(), last.clone(), page, false);
    let dst = Read::range(tj, true, after.clone(), last.clone(), page, false);
    let (src, dst) = (src.rows().await?, dst.rows().await?);
    let (nc, reread) = make_chunk(
        c.chunk_no,
        after.as_ref(),
        last.as_ref(),
        tj,
        &src,
        &dst,
        &v.options,
    )
    .await?;
    let k = v
        .catalog
        .verify_progress(v.job, &m.id, &tj.table)
        .await?
        .map_or(v.options.initial_chunk_rows as i64, |p| p.chunk_rows);
    v.catalog
        .verify_record_chunk(v.job, &m.id, &tj.table, &nc, false, k)
        .await?;
    failpoint::hit("verify_chunk");
    pace(v, nc.src_rows).await;
    Ok(reread)
}

async fn pace(v: &Verifier<'_>, rows: i64) {
    if v.paced {
        crate::throttle::for_job(v.job)
            .pace(rows.max(0) as u64, v.stop)
            .await;
    }
}

/// Recomputes the chunks holding `pks`; falls back to the full pass when none is finished.
async fn touched_pass(
    v: &Verifier<'_>,
    m: &Move,
    tj: &Arc<TableJob>,
    pks: &[PkValues],
) -> Result<Work> {
    let p = v.catalog.verify_progress(v.job, &m.id, &tj.table).await?;
    if !p.is_some_and(|p| p.done) {
        return full_pass(v, m, tj).await;
    }
    let chunks = v.catalog.verify_chunks(v.job, &m.id, &tj.table).await?;
    let ranges: Vec<(Option<PkValues>, Option<PkValues>)> =
        chunks.iter().map(chunk_range).collect::<Result<_>>()?;
    let mut which = BTreeSet::new();
    for pk in pks {
        // Chunks are consecutive ranges: the first whose upper end is >= pk.
        let i = ranges.partition_point(|(_, last)| match last {
            Some(l) => chunk::cmp_pk(l, pk) == std::cmp::Ordering::Less,
            None => false,
        });
        if i < chunks.len() {
            which.insert(i);
        }
    }
    // Chunks that mismatched before are recomputed too: they may have been caught up since.
    for (i, c) in chunks.iter().enumerate() {
        if !c.ok {
            which.insert(i);
        }
    }
    let mut work = Work::default();
    for &i in &which {
        check_stop(v)?;
        work.add(recompute(v, m, tj, &chunks[i]).await?);
    }
    Ok(work)
}

/// The table's report from its recorded chunks.
async fn table_report(v: &Verifier<'_>, m: &Move, table: &str, work: Work) -> Result<TableReport> {
    let chunks = v.catalog.verify_chunks(v.job, &m.id, table).await?;
    let mut tr = TableReport {
        table: table.to_string(),
        chunks_computed: work.chunks,
        chunks_reread: work.reread,
        ..Default::default()
    };
    let mut h = Sha1::new();
    for c in &chunks {
        tr.chunks += 1;
        tr.rows_source += c.src_rows as u64;
        tr.rows_destination += c.dst_rows as u64;
        h.update(c.src_sha1.as_bytes());
        if !c.ok {
            tr.mismatched_chunks += 1;
            if let Some(d) = &c.diff_json {
                let d: Diff = serde_json::from_str(d).context("unreadable chunk diff")?;
                tr.diff.merge(d, v.options.max_listed);
            }
        }
    }
    tr.source_checksum = chunk::hex(&h.finalize());
    Ok(tr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(k: usize, took_ms: u64, read: usize, bytes: u64, left: Option<u64>) -> stream::Page {
        stream::Page {
            k,
            took: std::time::Duration::from_millis(took_ms),
            read,
            bytes,
            left,
        }
    }

    #[test]
    fn chunk_size_follows_time_memory_and_what_is_left() {
        let o = Options::default();
        // Fast pages double, slow ones halve.
        assert_eq!(next_k(&page(1000, 10, 1000, 30_000, None), &o), 2000);
        assert_eq!(
            next_k(&page(100_000, 2000, 100_000, 3 << 20, None), &o),
            50_000
        );
        // 10 KB rows: at most 16 MiB per page, however fast.
        assert_eq!(next_k(&page(8000, 10, 8000, 80_000_000, None), &o), 1677);
        // Near the end, half of what is left.
        assert_eq!(
            next_k(&page(100_000, 10, 100_000, 3 << 20, Some(150_000)), &o),
            75_000
        );
        // Fixed chunks stay fixed.
        let fixed = Options {
            adapt: false,
            ..Options::default()
        };
        assert_eq!(next_k(&page(40, 10, 40, 80_000_000, Some(10)), &fixed), 40);
    }

    fn example(name: &str) -> crate::plan::Plan {
        let path = format!("{}/plans/{name}/plan.json", env!("CARGO_MANIFEST_DIR"));
        crate::plan::Plan::load(std::path::Path::new(&path)).unwrap()
    }

    #[test]
    fn exact_filters_are_the_planners_integer_ranges_and_residues() {
        for (name, exact) in [
            ("range-split", true),
            ("modulo-4-to-8", true),
            ("modulo-4-to-5-md5", false),
            ("ring-add", false),
            ("modulo-to-ring", false),
        ] {
            let plan = example(name);
            assert!(!plan.moves.is_empty());
            for m in &plan.moves {
                assert_eq!(sql_filter_is_exact(&plan, m), exact, "{name} {}", m.id);
            }
        }
        // Segments edited by hand (here: widened) are not trusted: rows are routed again.
        let plan = example("range-split");
        let mut m = plan.moves[0].clone();
        let Segments::Ranges { ranges } = &mut m.segments else {
            panic!("range-split has ranges");
        };
        ranges[0].from = None;
        assert!(!sql_filter_is_exact(&plan, &m));
    }

    #[test]
    fn chunks_shrink_toward_the_expected_end() {
        let o = Options::default();
        assert_eq!(o.initial_chunk_rows, 1000);
        assert_eq!(taper(200_000, None, &o), 200_000);
        // The estimate ran out: rows were added since the copy.
        assert_eq!(taper(200_000, Some(0), &o), 200_000);
        assert_eq!(taper(200_000, Some(1_000_000), &o), 200_000);
        assert_eq!(taper(200_000, Some(300_000), &o), 150_000);
        assert_eq!(taper(200_000, Some(1_500), &o), 1_000);
        // Never grows a chunk.
        assert_eq!(taper(500, Some(600), &o), 500);
    }
}
