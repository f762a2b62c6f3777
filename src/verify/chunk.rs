//! One table of one move: reading a primary-key range on both sides, the move's rows only,
//! their canonical encodings and sha1, and narrowing a mismatch down to rows and columns.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use sha1::{Digest, Sha1};

use super::canonical::{class_of, encode_row, encode_value, Class};
use super::report::{pk_json, Diff, Differing};
use crate::backend::{
    Backend, BatchPool, EncodeSpec, EncodedBatch, KeyFilter, PkValues, TableSchema, Value,
};
use crate::map::Partitioner;
use crate::retry::retry;

/// Everything needed to read and compare one table of one move.
pub(crate) struct TableSide {
    pub backend: Arc<dyn Backend>,
    pub schema: TableSchema,
    pub classes: Vec<Class>,
    /// For each column of the source schema, its position in this side's rows.
    pub perm: Vec<usize>,
}

/// Owned (no borrows), so that each side's reads can run in a task of their own.
pub(crate) struct TableJob {
    pub table: String,
    pub key: String,
    pub filter: KeyFilter,
    pub from: Arc<Partitioner>,
    pub to: Arc<Partitioner>,
    /// (index of the move's source in `from`, of its destination in `to`).
    pub pair: (usize, usize),
    pub src: TableSide,
    pub dst: TableSide,
    /// Column names in source order, and positions of the primary-key columns.
    pub columns: Vec<String>,
    pub pk_idx: Vec<usize>,
    /// Page buffers reused by both sides' reads.
    pub pool: BatchPool,
    /// The SQL filter selects exactly the move's rows: rows are not routed again in Rust (see
    /// `verify::sql_filter_is_exact`).
    pub exact: bool,
}

impl TableSide {
    pub fn new(backend: Arc<dyn Backend>, schema: TableSchema, src: &TableSchema) -> Result<Self> {
        let d = backend.dialect();
        let mut perm = Vec::new();
        let mut classes = Vec::new();
        for c in &src.columns {
            let Some(i) = schema.column_index(&c.name) else {
                bail!(
                    "shard {}: table {} has no column {}",
                    backend.shard(),
                    schema.name,
                    c.name
                );
            };
            perm.push(i);
            classes.push(class_of(d, &schema.columns[i].data_type));
        }
        Ok(TableSide {
            backend,
            schema,
            classes,
            perm,
        })
    }
}

/// The move's rows of one side in a range: sha1 over their canonical encodings, hashed as each
/// page arrives (in the reading task, so the two sides hash on separate cores), and, when read
/// with values (to narrow a mismatch down, or to repair), the rows and their encodings.
pub(crate) struct Rows {
    /// Empty unless read with values.
    pub rows: Vec<Vec<Value>>,
    /// Empty unless read with values: the rows' encodings concatenated; row i's ends at
    /// `ends[i]`.
    enc: Vec<u8>,
    ends: Vec<usize>,
    /// Over every move row's encoding, in order.
    hash: Sha1,
    /// The move's rows read.
    count: usize,
    /// Primary key (source column order) of the last row READ (moving or not).
    pub last_read: Option<PkValues>,
    /// Rows read, moving or not (a page shorter than its limit is the last).
    pub read: usize,
    /// Their encodings' bytes, moving or not: what a page of this many rows holds in memory.
    pub bytes: u64,
}

impl Rows {
    fn new() -> Self {
        Rows {
            rows: Vec::new(),
            enc: Vec::new(),
            ends: Vec::new(),
            hash: Sha1::new(),
            count: 0,
            last_read: None,
            read: 0,
            bytes: 0,
        }
    }

    /// The move's rows read.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Row `i`'s canonical encoding (rows read with values only).
    pub fn enc(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.enc[start..self.ends[i]]
    }

    /// sha1 over the rows' encodings in order.
    pub fn sha1(&self) -> String {
        hex(&self.hash.clone().finalize())
    }
}

/// Feeds `h` the rows `i` (row i of `enc` ends at `ends[i]`) for which `keep(i)`, in order;
/// returns how many. Consecutive kept rows go in with one update: the whole page when whole
/// key ranges move (the common case).
fn hash_rows(
    enc: &[u8],
    ends: &[usize],
    h: &mut Sha1,
    mut keep: impl FnMut(usize) -> Result<bool>,
) -> Result<usize> {
    let (mut kept, mut run_start, mut run_end, mut start) = (0, 0, 0, 0);
    for (i, &end) in ends.iter().enumerate() {
        if keep(i)? {
            if run_end != start {
                h.update(&enc[run_start..run_end]);
                run_start = start;
            }
            run_end = end;
            kept += 1;
        }
        start = end;
    }
    h.update(&enc[run_start..run_end]);
    Ok(kept)
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl TableJob {
    fn in_move(&self, k: &crate::map::Key) -> Result<bool> {
        match (self.from.owner_index(k), self.to.owner_index(k)) {
            (Ok(s), Ok(d)) => Ok((s, d) == self.pair),
            (Err(e), _) | (_, Err(e)) => bail!("table {}: a row cannot be routed: {e}", self.table),
        }
    }

    fn keep(&self, side: &TableSide, batch: crate::backend::Batch, out: &mut Rows) -> Result<()> {
        let identity = side.perm.iter().enumerate().all(|(c, &i)| c == i);
        for (mut row, k) in batch.rows.into_iter().zip(&batch.keys) {
            if !self.exact && !self.in_move(k)? {
                continue;
            }
            // `perm` is a permutation: each value is moved out exactly once.
            let ordered: Vec<Value> = if identity {
                row
            } else {
                side.perm
                    .iter()
                    .map(|&i| std::mem::replace(&mut row[i], Value::Null))
                    .collect()
            };
            let start = out.enc.len();
            encode_row(&side.classes, &ordered, &mut out.enc);
            out.hash.update(&out.enc[start..]);
            out.bytes += (out.enc.len() - start) as u64;
            out.count += 1;
            out.ends.push(out.enc.len());
            out.rows.push(ordered);
        }
        Ok(())
    }

    /// Hashes the page's move rows into `out`, then gives the page's buffers back.
    fn keep_encoded(&self, batch: EncodedBatch, out: &mut Rows) -> Result<()> {
        out.count += hash_rows(&batch.enc, &batch.ends, &mut out.hash, |i| {
            if self.exact {
                Ok(true)
            } else {
                self.in_move(&batch.keys[i])
            }
        })?;
        out.bytes += batch.enc.len() as u64;
        self.pool.give(batch);
        Ok(())
    }

    fn spec<'a>(&'a self, side: &'a TableSide) -> EncodeSpec<'a> {
        EncodeSpec {
            order: &side.perm,
            classes: &side.classes,
            pool: &self.pool,
            keys: !self.exact,
        }
    }

    /// One page of one side's move rows in `(after, upto]`: encodings only, or (`values`) the
    /// rows too. Returns the page's size and last primary key read.
    async fn read_page(
        &self,
        side: &TableSide,
        (after, upto): (Option<&PkValues>, Option<&PkValues>),
        limit: usize,
        values: bool,
        out: &mut Rows,
    ) -> Result<(usize, Option<PkValues>)> {
        let what = format!("{}: reading {}", side.backend.shard(), self.table);
        let b = &side.backend;
        if values {
            let batch = retry(&what, || {
                b.read_range(&side.schema, &self.key, after, upto, &self.filter, limit)
            })
            .await?;
            let page = (batch.rows.len(), batch.last.clone());
            self.keep(side, batch, out)?;
            Ok(page)
        } else {
            let spec = self.spec(side);
            let batch = retry(&what, || {
                b.read_encoded(
                    &side.schema,
                    &self.key,
                    (after, upto),
                    &self.filter,
                    limit,
                    &spec,
                )
            })
            .await?;
            let page = (batch.ends.len(), batch.last.clone());
            self.keep_encoded(batch, out)?;
            Ok(page)
        }
    }

    /// Reads at most `limit` rows after `after` at the source (one page): the next chunk.
    pub async fn read_source_page(&self, after: Option<&PkValues>, limit: usize) -> Result<Rows> {
        let mut out = Rows::new();
        let (n, last) = self
            .read_page(&self.src, (after, None), limit, false, &mut out)
            .await?;
        out.last_read = last;
        out.read = n;
        Ok(out)
    }

    /// Every move row of one side in `(after, upto]`, paged; with `values`, the rows too.
    pub async fn read_range(
        &self,
        dst: bool,
        after: Option<&PkValues>,
        upto: Option<&PkValues>,
        page: usize,
        values: bool,
    ) -> Result<Rows> {
        let side = if dst { &self.dst } else { &self.src };
        let mut out = Rows::new();
        let mut cur: Option<PkValues> = after.cloned();
        loop {
            let (n, last) = self
                .read_page(side, (cur.as_ref(), upto), page, values, &mut out)
                .await
                .with_context(|| format!("table {}", self.table))?;
            out.read += n;
            // A page ending exactly at `upto` is the last one: no empty read after it.
            if n < page || last.is_none() || (upto.is_some() && last.as_ref() == upto) {
                break;
            }
            cur = last;
        }
        Ok(out)
    }

    fn pk_enc(&self, src_side: bool, row: &[Value]) -> Vec<u8> {
        let side = if src_side { &self.src } else { &self.dst };
        let mut e = Vec::new();
        for &i in &self.pk_idx {
            encode_value(side.classes[i], &row[i], &mut e);
        }
        e
    }

    fn pk_values(&self, row: &[Value]) -> PkValues {
        self.pk_idx.iter().map(|&i| row[i].clone()).collect()
    }

    /// Row-level differences between the two sides of a chunk (source order, capped lists).
    pub fn narrow(&self, src: &Rows, dst: &Rows, cap: usize) -> Diff {
        let mut diff = Diff::default();
        let mut at_dst: HashMap<Vec<u8>, usize> = HashMap::with_capacity(dst.rows.len());
        for (i, r) in dst.rows.iter().enumerate() {
            at_dst.insert(self.pk_enc(false, r), i);
        }
        let mut seen = vec![false; dst.rows.len()];
        for (i, r) in src.rows.iter().enumerate() {
            match at_dst.get(&self.pk_enc(true, r)) {
                None => {
                    diff.missing_count += 1;
                    if diff.missing.len() < cap {
                        diff.missing.push(pk_json(&self.pk_values(r)));
                    }
                }
                Some(&j) => {
                    seen[j] = true;
                    if src.enc(i) == dst.enc(j) {
                        continue;
                    }
                    let cols: Vec<String> = (0..self.columns.len())
                        .filter(|&c| {
                            let mut a = Vec::new();
                            encode_value(self.src.classes[c], &r[c], &mut a);
                            let mut b = Vec::new();
                            encode_value(self.dst.classes[c], &dst.rows[j][c], &mut b);
                            a != b
                        })
                        .map(|c| self.columns[c].clone())
                        .collect();
                    diff.differing_count += 1;
                    if diff.differing.len() < cap {
                        diff.differing.push(Differing {
                            pk: pk_json(&self.pk_values(r)),
                            columns: cols,
                        });
                    }
                }
            }
        }
        for (j, r) in dst.rows.iter().enumerate() {
            if !seen[j] {
                diff.extra_count += 1;
                if diff.extra.len() < cap {
                    diff.extra.push(pk_json(&self.pk_values(r)));
                }
            }
        }
        diff
    }

    /// Repairs one range: source rows missing or differing at the destination are written
    /// again (source wins); destination rows of the move absent at the source are deleted.
    /// Returns (rows written, rows deleted).
    pub async fn repair(&self, src: &Rows, dst: &Rows) -> Result<(u64, u64)> {
        let mut at_dst: HashMap<Vec<u8>, usize> = HashMap::new();
        for (i, r) in dst.rows.iter().enumerate() {
            at_dst.insert(self.pk_enc(false, r), i);
        }
        let mut seen = vec![false; dst.rows.len()];
        let mut write = Vec::new();
        for (i, r) in src.rows.iter().enumerate() {
            match at_dst.get(&self.pk_enc(true, r)) {
                Some(&j) => {
                    seen[j] = true;
                    if src.enc(i) != dst.enc(j) {
                        write.push(r.clone());
                    }
                }
                None => write.push(r.clone()),
            }
        }
        let delete: Vec<PkValues> = dst
            .rows
            .iter()
            .enumerate()
            .filter(|(j, _)| !seen[*j])
            .map(|(_, r)| self.pk_values(r))
            .collect();
        // Rows travel in the destination's column order.
        let dst_rows: Vec<Vec<Value>> = write
            .iter()
            .map(|r| {
                let mut out = vec![Value::Null; self.dst.schema.columns.len()];
                for (c, &i) in self.dst.perm.iter().enumerate() {
                    out[i] = r[c].clone();
                }
                out
            })
            .collect();
        let b = &self.dst.backend;
        if !dst_rows.is_empty() {
            retry(&format!("{}: repairing {}", b.shard(), self.table), || {
                b.upsert(&self.dst.schema, &dst_rows)
            })
            .await?;
        }
        if !delete.is_empty() {
            retry(&format!("{}: repairing {}", b.shard(), self.table), || {
                b.delete(&self.dst.schema, &delete)
            })
            .await?;
        }
        Ok((dst_rows.len() as u64, delete.len() as u64))
    }
}

/// One side's read running in a task of its own: the source's and the destination's rows are
/// decoded and encoded on separate cores. Aborted when dropped unawaited (the other side
/// failed, or the pass stopped), so no read outlives its pass.
pub(crate) struct Read(tokio::task::JoinHandle<Result<Rows>>);

impl Drop for Read {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Read {
    /// One side's move rows in `(after, upto]` (see [`TableJob::read_range`]).
    pub fn range(
        tj: &Arc<TableJob>,
        dst: bool,
        after: Option<PkValues>,
        upto: Option<PkValues>,
        page: usize,
        values: bool,
    ) -> Read {
        let tj = tj.clone();
        Read(tokio::spawn(async move {
            tj.read_range(dst, after.as_ref(), upto.as_ref(), page, values)
                .await
        }))
    }

    pub async fn rows(mut self) -> Result<Rows> {
        (&mut self.0)
            .await
            .context("a verification read task ended abnormally")?
    }
}

/// Total order on primary-key values as the databases order integers (and, for binary
/// collations, text): used to find the chunk holding a touched key.
pub(crate) fn cmp_pk(a: &PkValues, b: &PkValues) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    for (x, y) in a.iter().zip(b) {
        let o = match (x, y) {
            (Value::Int(p), Value::Int(q)) => p.cmp(q),
            (Value::UInt(p), Value::UInt(q)) => p.cmp(q),
            (Value::Int(p), Value::UInt(q)) => (*p as i128).cmp(&(*q as i128)),
            (Value::UInt(p), Value::Int(q)) => (*p as i128).cmp(&(*q as i128)),
            (Value::Text(p), Value::Text(q)) => p.as_bytes().cmp(q.as_bytes()),
            (Value::Bytes(p), Value::Bytes(q)) => p.cmp(q),
            (Value::Bool(p), Value::Bool(q)) => p.cmp(q),
            (Value::Float(p), Value::Float(q)) => f64::from_bits(*p).total_cmp(&f64::from_bits(*q)),
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Null, _) => Ordering::Less,
            (_, Value::Null) => Ordering::Greater,
            // Mixed kinds: compare their text forms; keys of one column share a kind in practice.
            _ => format!("{x:?}").cmp(&format!("{y:?}")),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn hashing_runs_is_hashing_the_kept_rows(
            rows in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..6), any::<bool>()),
                0..40,
            ),
        ) {
            let (mut enc, mut ends) = (Vec::new(), Vec::new());
            for (bytes, _) in &rows {
                enc.extend_from_slice(bytes);
                ends.push(enc.len());
            }
            let mut h = Sha1::new();
            let kept = hash_rows(&enc, &ends, &mut h, |i| Ok(rows[i].1)).unwrap();
            let mut want = Sha1::new();
            for (bytes, keep) in &rows {
                if *keep {
                    want.update(bytes);
                }
            }
            prop_assert_eq!(kept, rows.iter().filter(|r| r.1).count());
            prop_assert_eq!(h.finalize(), want.finalize());
        }
    }

    #[test]
    fn a_routing_error_stops_the_page() {
        let mut h = Sha1::new();
        let e = hash_rows(b"ab", &[1, 2], &mut h, |i| {
            if i == 1 {
                anyhow::bail!("cannot be routed")
            }
            Ok(true)
        });
        assert!(e.is_err());
    }
}
