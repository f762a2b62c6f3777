//! One backend per database, behind the [`Backend`] trait. Execution (copy, and later capture,
//! cutover and verify) only ever talks to a shard through this trait.
//!
//! Rows travel as [`Value`]s decoded by the source backend and bound by the destination backend.
//! A move's source and destination are the same kind of database (preflight refuses mixing), so
//! a backend may use whatever representation is exact for it (PostgreSQL, for instance, may move
//! every column through its lossless text form).

use std::sync::Arc;

use anyhow::Result;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ident::Dialect;
use crate::map::{Bound, Key};
use crate::shard_url::ShardUrl;
use crate::verify::canonical::{encode_ref, encode_value, Class, ValueRef};

pub mod closing;
pub mod mysql;
mod pg_copy;
pub(crate) mod pg_copy_in;
pub mod postgres;
pub mod replication;
mod sql;
pub mod sqlite;
pub mod sqlite_functions;
mod sqlite_pages;

/// A column value as read from a shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "v", rename_all = "lowercase")]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    /// f64 kept as bits so that NaN, -0.0 and every payload survive exactly.
    Float(u64),
    /// f32 (MySQL/MariaDB `FLOAT`) kept as bits: widening to f64 and back is exact for finite
    /// values but may quiet a NaN, and the destination must be bound as a 4-byte float anyway.
    Float32(u32),
    Text(String),
    Bytes(Vec<u8>),
}

impl Value {
    /// The shard key this value holds, when it can be one.
    pub fn as_key(&self) -> Option<Key> {
        crate::verify::canonical::ValueRef::from(self).as_key()
    }

    /// Approximate payload size in bytes, for progress and estimates.
    pub fn approx_size(&self) -> u64 {
        match self {
            Value::Null => 1,
            Value::Bool(_) => 1,
            Value::Float32(_) => 4,
            Value::Int(_) | Value::UInt(_) | Value::Float(_) => 8,
            Value::Text(s) => s.len() as u64,
            Value::Bytes(b) => b.len() as u64,
        }
    }

    pub fn from_f64(v: f64) -> Value {
        Value::Float(v.to_bits())
    }
}

impl From<&crate::map::Bound> for Value {
    fn from(b: &crate::map::Bound) -> Value {
        match b {
            crate::map::Bound::Int(v) => Value::Int(*v),
            crate::map::Bound::Text(s) => Value::Text(s.clone()),
        }
    }
}

/// Primary-key values of one row, in primary-key column order: the copy cursor.
pub type PkValues = Vec<Value>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// The type as the database spells it (normalized to lower case), e.g. `bigint`,
    /// `numeric(10,2)`, `varchar(255)`. Preflight compares these between source and destination.
    pub data_type: String,
    pub nullable: bool,
    /// The default expression as the database reports it, if any.
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub name: String,
    pub columns: Vec<String>,
    pub unique: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    pub name: String,
    pub columns: Vec<Column>,
    /// Primary-key column names in key order. Never empty: preflight refuses tables without one.
    pub primary_key: Vec<String>,
    /// Secondary indexes (the primary key's own index excluded).
    pub indexes: Vec<Index>,
}

impl TableSchema {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// A predicate on the shard-key column pushed into SQL to skip rows that cannot move. It may
/// admit more rows than move; execution routes every row in Rust regardless.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyFilter {
    All,
    /// Key in any of the half-open intervals `[from, to)` (None unbounded).
    Ranges(Vec<(Option<Bound>, Option<Bound>)>),
    /// Integer key with `key mod modulus` (mathematical, never negative) in `residues`.
    Residues {
        modulus: u64,
        residues: Vec<u64>,
    },
}

/// One page of rows in primary-key order.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Every row read, columns in `TableSchema::columns` order.
    pub rows: Vec<Vec<Value>>,
    /// The shard-key value of each row (same order as `rows`).
    pub keys: Vec<Key>,
    /// Primary key of the last row read: the cursor to continue after. None when no rows.
    pub last: Option<PkValues>,
    /// Approximate payload bytes read, for progress and estimates.
    pub bytes: u64,
}

/// What a verification read encodes: output column `c` is the table's column `order[c]`,
/// encoded as `classes[c]` (the source's column order, whatever this side's is).
pub struct EncodeSpec<'a> {
    pub order: &'a [usize],
    pub classes: &'a [Class],
    /// Where the page's buffers come from (and go back to once hashed).
    pub pool: &'a BatchPool,
    /// Whether each row's shard key is wanted (`EncodedBatch::keys`): not when the read's
    /// filter selects exactly the rows wanted, so that none is routed again.
    pub keys: bool,
}

/// Encoded pages kept for reuse. A page's buffer is megabytes; allocated afresh for every page,
/// writing it page-faulted its memory in each time (~6% of PostgreSQL verification's CPU in
/// the kernel, `perf record` of `reshard verify` on 10^6 rows).
#[derive(Debug, Default)]
pub struct BatchPool(std::sync::Mutex<Vec<EncodedBatch>>);

impl BatchPool {
    /// An empty batch, with the capacity of one given back earlier when there is one.
    pub fn take(&self) -> EncodedBatch {
        let spare = self.0.lock().map(|mut v| v.pop()).unwrap_or_default();
        let mut b = spare.unwrap_or_default();
        b.enc.clear();
        b.ends.clear();
        b.keys.clear();
        b.last = None;
        b
    }

    /// Keeps `b`'s buffers for a later [`Self::take`].
    pub fn give(&self, b: EncodedBatch) {
        if let Ok(mut v) = self.0.lock() {
            // Two readers (source and destination) per table hold a page each at a time.
            if v.len() < 2 {
                v.push(b);
            }
        }
    }
}

/// A page read for checksumming: each row's canonical encoding and shard key, without the
/// rows themselves (see [`Backend::read_encoded`]).
#[derive(Debug, Default)]
pub struct EncodedBatch {
    /// The rows' encodings concatenated; row i's ends at `ends[i]`.
    pub enc: Vec<u8>,
    pub ends: Vec<usize>,
    pub keys: Vec<Key>,
    /// Primary key of the last row read. None when no rows.
    pub last: Option<PkValues>,
}

impl EncodedBatch {
    /// Appends one row read as borrowed values: `col(i)` is the table's column `i` (a backend's
    /// bulk read path). `limit` (the page size) sizes the buffer from the first row.
    /// Inlined into PostgreSQL's COPY loop (as a call, each borrowed value went through the
    /// stack: 15-20% more CPU per verified row); MariaDB calls [`Self::push_row_outlined`].
    #[inline(always)]
    pub(crate) fn push_row<'r>(
        &mut self,
        (order, classes): (&[usize], &[Class]),
        (schema, key_idx, pk_idx): (&TableSchema, Option<usize>, &[usize]),
        limit: usize,
        col: impl Fn(usize) -> Result<ValueRef<'r>>,
    ) -> Result<()> {
        for (c, &i) in order.iter().enumerate() {
            encode_ref(classes[c], col(i)?, &mut self.enc);
        }
        if self.ends.is_empty() {
            // The buffer is not regrown (and copied) ~20 times over a page.
            self.enc
                .reserve(self.enc.len().saturating_mul(limit).min(64 << 20));
        }
        self.ends.push(self.enc.len());
        if let Some(key_idx) = key_idx {
            let key = col(key_idx)?;
            self.keys.push(match key.as_key() {
                Some(k) => k,
                None => sql::key_from(schema, key_idx, &key.into())?,
            });
        }
        // Overwritten in place: only the last row's stays, and most keys are integers, which
        // neither allocate nor free here.
        let last = self.last.get_or_insert_with(Vec::new);
        last.resize(pk_idx.len(), Value::Null);
        for (slot, &i) in last.iter_mut().zip(pk_idx) {
            *slot = col(i)?.into();
        }
        Ok(())
    }

    /// [`Self::push_row`] as a call of its own: inlined into sqlx's MySQL row stream it made
    /// MariaDB's verification ~15% slower (`bench/verify.sh mysql`, same run).
    #[inline(never)]
    pub(crate) fn push_row_outlined<'r>(
        &mut self,
        cols: (&[usize], &[Class]),
        key: (&TableSchema, Option<usize>, &[usize]),
        limit: usize,
        col: impl Fn(usize) -> Result<ValueRef<'r>>,
    ) -> Result<()> {
        self.push_row(cols, key, limit, col)
    }

    /// Encodes a batch read as [`Value`]s (the default read path).
    pub fn from_batch(b: Batch, spec: &EncodeSpec<'_>) -> Self {
        let mut out = EncodedBatch {
            keys: if spec.keys { b.keys } else { Vec::new() },
            last: b.last,
            ..EncodedBatch::default()
        };
        for row in &b.rows {
            for (c, &i) in spec.order.iter().enumerate() {
                encode_value(spec.classes[c], &row[i], &mut out.enc);
            }
            out.ends.push(out.enc.len());
        }
        out
    }
}

#[async_trait]
pub trait Backend: Send + Sync {
    fn dialect(&self) -> Dialect;

    /// This shard as a PostgreSQL one, for the copy that pipes COPY between two of them
    /// (src/backend/postgres/pipe.rs).
    fn as_postgres(&self) -> Option<&postgres::Postgres> {
        None
    }

    /// The shard's name in the map (never its URL).
    fn shard(&self) -> &str;

    async fn ping(&self) -> Result<()>;

    /// Runs a query of reshard's own (never one with input spliced in) that returns one row of
    /// integer columns, NULL as None: counts and ages for `status` (src/backlog.rs).
    async fn int_row(&self, sql: &str) -> Result<Vec<Option<i64>>>;

    /// The table's definition, or None when the table does not exist.
    async fn describe(&self, table: &str) -> Result<Option<TableSchema>>;

    /// Creates the table with its columns, NOT NULL, defaults and primary key, but without
    /// secondary indexes (those are built after the copy, which is faster).
    async fn create_table(&self, schema: &TableSchema) -> Result<()>;

    /// The names of the table's CHECK constraints (none when the table does not exist):
    /// `--create-tables` does not copy them, so preflight refuses to create a table that has
    /// any rather than drop them without a word.
    async fn check_constraints(&self, table: &str) -> Result<Vec<String>>;

    /// Creates the secondary indexes that do not exist yet.
    async fn create_indexes(&self, schema: &TableSchema) -> Result<()>;

    /// Up to `limit` rows with primary key greater than `after` (all rows when None), in
    /// primary-key order, restricted by `filter` on the column `key_column`. Keyset pagination:
    /// never OFFSET.
    async fn read_batch(
        &self,
        schema: &TableSchema,
        key_column: &str,
        after: Option<&PkValues>,
        filter: &KeyFilter,
        limit: usize,
    ) -> Result<Batch> {
        // Every backend pages with the same predicate; only `read_range` is backend-specific.
        self.read_range(schema, key_column, after, None, filter, limit)
            .await
    }

    /// Writes rows (columns in schema order) with an idempotent upsert on the primary key, in
    /// one transaction: replaying the same rows leaves the same table.
    async fn upsert(&self, schema: &TableSchema, rows: &[Vec<Value>]) -> Result<u64>;

    /// Deletes the rows with these primary keys, in one transaction.
    async fn delete(&self, schema: &TableSchema, pks: &[PkValues]) -> Result<u64>;

    /// Calls `f(key, rows, bytes)` for each distinct shard-key value of rows matching `filter`,
    /// streaming; used to count what each move will copy without reading whole rows.
    async fn key_counts(
        &self,
        schema: &TableSchema,
        key_column: &str,
        filter: &KeyFilter,
        f: &mut (dyn FnMut(Key, u64, u64) + Send),
    ) -> Result<()>;

    /// Like [`Backend::read_batch`], bounded above as well: up to `limit` rows with primary key
    /// in `(after, upto]` (either end open when None), in primary-key order. Verification reads
    /// the destination over exactly the source chunk's key range with it.
    async fn read_range(
        &self,
        schema: &TableSchema,
        key_column: &str,
        after: Option<&PkValues>,
        upto: Option<&PkValues>,
        filter: &KeyFilter,
        limit: usize,
    ) -> Result<Batch>;

    /// [`Backend::read_range`] for checksumming: the same rows, each as its canonical
    /// encoding under `spec`. Backends that can encode without building [`Value`]s override it
    /// (PostgreSQL from COPY's bytes, MariaDB from borrowed values); the encodings must be
    /// those of this default (`tests/backend_trait.rs` checks it on every backend).
    async fn read_encoded(
        &self,
        schema: &TableSchema,
        key_column: &str,
        bounds: (Option<&PkValues>, Option<&PkValues>),
        filter: &KeyFilter,
        limit: usize,
        spec: &EncodeSpec<'_>,
    ) -> Result<EncodedBatch> {
        let b = self
            .read_range(schema, key_column, bounds.0, bounds.1, filter, limit)
            .await?;
        Ok(EncodedBatch::from_batch(b, spec))
    }

    // --- Online migration (docs/online.md) ---

    /// Runs statements from [`crate::triggers`] in order, each on its own (they are idempotent).
    async fn run_ddl(&self, stmts: &[String]) -> Result<()>;

    /// The current rows with these primary keys, columns in schema order; absent keys are
    /// left out. Catch-up re-reads rows through this instead of trusting logged images.
    async fn fetch(&self, schema: &TableSchema, pks: &[PkValues]) -> Result<Vec<Vec<Value>>>;

    /// The copy's write of a batch the destination is expected not to hold yet: quiet like
    /// [`Backend::write_quiet`], through the backend's bulk path where it has one, and
    /// through the upsert when some row is there after all (a batch a killed run wrote but
    /// did not record), so that the result is always the upsert's.
    async fn insert_new_quiet(&self, schema: &TableSchema, rows: &[Vec<Value>]) -> Result<()> {
        self.write_quiet(schema, rows, &[]).await
    }

    /// reshard's own write (copy, catch-up, reverse sync, cleanup): upserts then deletes in one
    /// transaction that the capture triggers do not record and the guards let through.
    /// PostgreSQL/MariaDB set the bypass session flag; SQLite, which has none, drops the
    /// table's guard triggers inside the transaction, removes the log rows its own write
    /// produced (SQLite's single writer makes them exactly ours) and re-creates the guards.
    async fn write_quiet(
        &self,
        schema: &TableSchema,
        upserts: &[Vec<Value>],
        deletes: &[PkValues],
    ) -> Result<()>;

    /// complete's and cancel's delete of `keys`, quiet like [`Backend::write_quiet`]; returns
    /// the rows deleted. PostgreSQL and MariaDB bound its lock waits as
    /// [`Backend::delete_range_quiet`] does; this default (SQLite) waits out the busy timeout.
    async fn delete_keys_quiet(&self, schema: &TableSchema, keys: &[PkValues]) -> Result<u64> {
        self.write_quiet(schema, &[], keys).await?;
        Ok(keys.len() as u64)
    }

    /// complete's delete of moved rows at their old owner: the rows with primary key in
    /// `(after, upto]` (`bounds`, either end open when None) that pass `filter`, quiet like
    /// [`Backend::write_quiet`]; returns the rows deleted. The caller passes a filter that
    /// selects exactly the move's rows (`verify::filter_is_exact_on`): PostgreSQL and MariaDB
    /// then delete with one statement instead of a list of keys. This default, for backends
    /// with no exact filter (SQLite), reads the keys and deletes them by key, 10,000 at a time.
    async fn delete_range_quiet(
        &self,
        schema: &TableSchema,
        key_column: &str,
        bounds: (Option<&PkValues>, Option<&PkValues>),
        filter: &KeyFilter,
    ) -> Result<u64> {
        const PAGE: usize = 10_000;
        let pk_i = sql::pk_indexes(schema)?;
        let mut after = bounds.0.cloned();
        let mut n = 0;
        loop {
            let b = self
                .read_range(schema, key_column, after.as_ref(), bounds.1, filter, PAGE)
                .await?;
            let pks: Vec<PkValues> = b
                .rows
                .iter()
                .map(|r| pk_i.iter().map(|&i| r[i].clone()).collect())
                .collect();
            n += self.delete_keys_quiet(schema, &pks).await?;
            if b.rows.len() < PAGE {
                return Ok(n);
            }
            after = b.last;
        }
    }

    /// Raises the fence of one move (its (old owner, new owner) row of `_reshard_fence`),
    /// committed, waiting at most `wait` for in-flight writers of the move's keys (lock
    /// timeout: an error, the fence is not up). Lowered again with [`Backend::set_fence`].
    async fn raise_fence(
        &self,
        pair: crate::triggers::FencePair,
        move_id: &str,
        wait: std::time::Duration,
    ) -> Result<()>;

    /// Sets a fence row outright, in its own short transaction: lowering after a crash or an
    /// aborted cutover, keeping the stale-writer guard up. A no-op without a fence table.
    async fn set_fence(
        &self,
        pair: crate::triggers::FencePair,
        move_id: &str,
        on: bool,
    ) -> Result<()>;

    /// Where this server, as a primary, is in its replication stream now (PostgreSQL: the WAL
    /// LSN; MariaDB: the binlog GTID position). None where there is no such thing (SQLite).
    async fn position(&self) -> Result<Option<String>> {
        Ok(None)
    }

    /// Whether this server, as a replica, has replayed past `pos` (a primary's `position`).
    async fn replayed(&self, _pos: &str) -> Result<replication::Replayed> {
        Ok(replication::Replayed::NotReplica)
    }
}

/// Connects to a shard. The URL is resolved here (env: lookups, overrides) and never appears in
/// an error message.
pub async fn connect(shard: &str, url: &ShardUrl) -> Result<Arc<dyn Backend>> {
    let raw = url.resolve(shard).map_err(anyhow::Error::msg)?;
    match crate::shard_url::dialect_of(&raw) {
        Some(Dialect::Sqlite) => sqlite::connect(shard, &raw).await,
        Some(Dialect::Postgres) => postgres::connect(shard, &raw).await,
        Some(Dialect::Mysql) => mysql::connect(shard, &raw).await,
        None => anyhow::bail!("shard {shard}: unsupported URL scheme"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_json_exactly() {
        let vals = vec![
            Value::Null,
            Value::Bool(true),
            Value::Int(i64::MIN),
            Value::UInt(u64::MAX),
            Value::Float(f64::NAN.to_bits() | 0x1234),
            Value::from_f64(-0.0),
            Value::from_f64(5e-324),
            Value::Float32(f32::MIN_POSITIVE.to_bits()),
            Value::Text("é🎉\u{0}\"".into()),
            Value::Bytes((0..=255).collect()),
        ];
        let json = serde_json::to_string(&vals).unwrap();
        let back: Vec<Value> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, vals);
    }
}
