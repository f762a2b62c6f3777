//! The SQLite backend.
//!
//! SQLite is dynamically typed: a column's declared type is only an affinity, and each value has
//! its own storage class. Values are therefore copied with their storage class (INTEGER as i64,
//! REAL as the f64's bits, TEXT, BLOB, NULL), which is exact whatever the declared types say.
//!
//! The journal mode is left as the shard has it: it is persistent, and switching a user's
//! database to WAL would change how their application shares the file. Concurrent writers wait
//! on `busy_timeout` instead of failing.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use async_trait::async_trait;
use futures_util::stream::BoxStream;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqlitePool, SqliteRow};
use sqlx::{Arguments, Row, TypeInfo, ValueRef};

use super::sql::{self, check_table};
use super::sqlite_pages::{self, Pages};
use super::{
    Backend, Batch, Column, EncodeSpec, EncodedBatch, Index, KeyFilter, PkValues, TableSchema,
    Value,
};
use crate::ident::Dialect;
use crate::map::Key;

const D: Dialect = Dialect::Sqlite;
/// SQLite's default SQLITE_MAX_VARIABLE_NUMBER since 3.32.
const MAX_PARAMS: usize = 32_766;

pub struct Sqlite {
    shard: String,
    pool: SqlitePool,
    /// Page reads without sqlx's per-row thread hand-off (see `sqlite_pages`); None for a
    /// database that is not a plain file.
    pages: Option<Arc<Pages>>,
}

/// Rows the worker thread may read ahead of the task consuming them (see `connect`).
const ROW_BUFFER: usize = 4096;

pub async fn connect(shard: &str, url: &str) -> Result<Arc<dyn Backend>> {
    // The parse error could quote the URL, so it is not passed on.
    let opts = SqliteConnectOptions::from_str(url)
        .map_err(|_| anyhow!("shard {shard}: not a valid sqlite: URL"))?
        .create_if_missing(true)
        .busy_timeout(Duration::from_secs(30))
        // sqlx runs each connection on a worker thread that hands rows over one by one through
        // a bounded channel (50 by default): the reader and the worker then wake each other up
        // for nearly every row, which costs more than reading it. A deeper buffer lets the
        // worker run ahead of a page-sized read.
        .row_buffer_size(ROW_BUFFER);
    let path = opts.get_filename().to_path_buf();
    // The guards route hash maps with reshard's SQL functions; every connection needs them.
    let pool = super::sqlite_functions::pool_options()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(opts)
        .await
        .map_err(|e| anyhow!("shard {shard}: cannot open the SQLite database: {e}"))?;
    Ok(Arc::new(Sqlite {
        shard: shard.to_string(),
        pool,
        // After the pool: it created the file if it was missing.
        pages: Pages::for_file(&path),
    }))
}

fn bind(args: &mut SqliteArguments<'static>, v: &Value) -> Result<()> {
    let r = match v {
        Value::Null => args.add(Option::<i64>::None),
        Value::Bool(b) => args.add(i64::from(*b)),
        Value::Int(i) => args.add(*i),
        Value::UInt(u) => args.add(
            i64::try_from(*u).map_err(|_| anyhow!("{u} does not fit SQLite's 64-bit integer"))?,
        ),
        Value::Float(bits) => args.add(f64::from_bits(*bits)),
        Value::Float32(bits) => args.add(f64::from(f32::from_bits(*bits))),
        Value::Text(s) => args.add(s.clone()),
        Value::Bytes(b) => args.add(b.clone()),
    };
    r.map_err(|e| anyhow!("cannot bind a value: {e}"))
}

/// Decodes a column by the value's own storage class.
fn decode(row: &SqliteRow, i: usize) -> Result<Value> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    Ok(match raw.type_info().name() {
        "INTEGER" => Value::Int(row.try_get_unchecked::<i64, _>(i)?),
        "REAL" => Value::from_f64(row.try_get_unchecked::<f64, _>(i)?),
        "BLOB" => Value::Bytes(row.try_get_unchecked::<Vec<u8>, _>(i)?),
        _ => match row.try_get_unchecked::<String, _>(i) {
            Ok(s) => Value::Text(s),
            Err(_) => anyhow::bail!("column {i} holds TEXT that is not valid UTF-8"),
        },
    })
}

impl Sqlite {
    fn ctx(&self, what: &str, table: &str) -> String {
        format!("shard {}: {what} {table}", self.shard)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum FenceState {
    /// No fence table (nothing installed, or already removed) or no row for the pair.
    Absent,
    Is(bool),
}

async fn fence_state(
    conn: &mut sqlx::SqliteConnection,
    pair: crate::triggers::FencePair,
) -> Result<FenceState> {
    if !has_fence_table(conn).await? {
        return Ok(FenceState::Absent);
    }
    let cur: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT CAST(fenced AS INTEGER) FROM {} WHERE src = ? AND dst = ?",
        D.quote(crate::triggers::FENCE_TABLE)
    ))
    .bind(pair.0 as i64)
    .bind(pair.1 as i64)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(cur.map_or(FenceState::Absent, |v| FenceState::Is(v != 0)))
}

async fn has_fence_table(conn: &mut sqlx::SqliteConnection) -> Result<bool> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?")
            .bind(crate::triggers::FENCE_TABLE)
            .fetch_one(&mut *conn)
            .await?;
    Ok(n > 0)
}

async fn upsert_in(
    conn: &mut sqlx::SqliteConnection,
    schema: &TableSchema,
    rows: &[Vec<Value>],
) -> Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let ncols = schema.columns.len();
    let non_pk: Vec<String> = schema
        .columns
        .iter()
        .filter(|c| !schema.primary_key.contains(&c.name))
        .map(|c| format!("{0} = excluded.{0}", D.quote(&c.name)))
        .collect();
    let action = if non_pk.is_empty() {
        "NOTHING".to_string()
    } else {
        format!("UPDATE SET {}", non_pk.join(", "))
    };
    let per = sql::chunk_rows(ncols, MAX_PARAMS, 500);
    let mut n = 0;
    for chunk in rows.chunks(per) {
        let q = format!(
            "INSERT INTO {} ({}) VALUES {} ON CONFLICT ({}) DO {action}",
            D.quote(&schema.name),
            sql::column_list(D, schema),
            sql::values_groups(chunk.len(), ncols),
            sql::pk_list(D, schema)
        );
        let mut args = SqliteArguments::default();
        for row in chunk {
            if row.len() != ncols {
                anyhow::bail!(
                    "row has {} values, table {} {ncols} columns",
                    row.len(),
                    schema.name
                );
            }
            for v in row {
                bind(&mut args, v)?;
            }
        }
        n += sqlx::query_with(&q, args)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    }
    Ok(n)
}

async fn delete_in(
    conn: &mut sqlx::SqliteConnection,
    schema: &TableSchema,
    pks: &[PkValues],
) -> Result<u64> {
    let npk = schema.primary_key.len();
    let per = sql::chunk_rows(npk, MAX_PARAMS, 500);
    let mut n = 0;
    for chunk in pks.chunks(per) {
        let q = format!(
            "DELETE FROM {} WHERE ({}) IN (VALUES {})",
            D.quote(&schema.name),
            sql::pk_list(D, schema),
            sql::values_groups(chunk.len(), npk)
        );
        let mut args = SqliteArguments::default();
        for pk in chunk {
            if pk.len() != npk {
                anyhow::bail!(
                    "primary key with {} values for table {}",
                    pk.len(),
                    schema.name
                );
            }
            for v in pk {
                bind(&mut args, v)?;
            }
        }
        n += sqlx::query_with(&q, args)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    }
    Ok(n)
}

fn not_a_key(table: &str) -> anyhow::Error {
    anyhow!("table {table}: a shard key is NULL or not an integer or text")
}

fn page_query(
    schema: &TableSchema,
    key_column: &str,
    bounds: (Option<&PkValues>, Option<&PkValues>),
    filter: &KeyFilter,
    limit: usize,
) -> Result<(String, Vec<Value>)> {
    let select = sql::column_list(D, schema);
    sql::range_select(D, schema, key_column, bounds, filter, limit, &select)
}

/// Whether a CREATE TABLE statement declares a CHECK constraint: the keyword CHECK, outside
/// quotes, followed by `(`.
fn has_check(sql: &str) -> bool {
    let mut quote: Option<char> = None;
    let chars: Vec<char> = sql.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if matches!(c, '\'' | '"' | '`' | '[') => {
                quote = Some(if c == '[' { ']' } else { c })
            }
            None => {
                let word: String = chars[i..].iter().take(5).collect();
                let before = i.checked_sub(1).map(|j| chars[j]);
                if word.eq_ignore_ascii_case("check")
                    && !before.is_some_and(|b| b.is_alphanumeric() || b == '_')
                {
                    let rest = chars[i + 5..].iter().find(|c| !c.is_whitespace());
                    if rest == Some(&'(') {
                        return true;
                    }
                }
            }
        }
        i += 1;
    }
    false
}

#[async_trait]
impl Backend for Sqlite {
    fn dialect(&self) -> Dialect {
        D
    }

    fn shard(&self) -> &str {
        &self.shard
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .with_context(|| format!("shard {}: ping", self.shard))
    }

    async fn int_row(&self, sql: &str) -> Result<Vec<Option<i64>>> {
        let row = sqlx::query(sql)
            .fetch_one(&self.pool)
            .await
            .with_context(|| format!("shard {}: {sql}", self.shard))?;
        (0..sqlx::Row::len(&row))
            .map(|i| {
                sqlx::Row::try_get::<Option<i64>, _>(&row, i)
                    .with_context(|| format!("shard {}: column {i} of {sql}", self.shard))
            })
            .collect()
    }

    async fn check_constraints(&self, table: &str) -> Result<Vec<String>> {
        // SQLite keeps no catalog of constraints: the table's CREATE statement says.
        let sql: Option<String> =
            sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?")
                .bind(table)
                .fetch_optional(&self.pool)
                .await
                .with_context(|| self.ctx("read the definition of", table))?;
        Ok(sql
            .filter(|s| has_check(s))
            .map(|_| vec!["CHECK in its CREATE TABLE".to_string()])
            .unwrap_or_default())
    }

    async fn describe(&self, table: &str) -> Result<Option<TableSchema>> {
        check_table(table)?;
        let ctx = || self.ctx("describe", table);
        let exists: Option<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_schema WHERE type = 'table' AND name = ?1")
                .bind(table)
                .fetch_optional(&self.pool)
                .await
                .with_context(ctx)?;
        if exists.is_none() {
            return Ok(None);
        }
        let cols = sqlx::query(
            "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?1) ORDER BY cid",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .with_context(ctx)?;
        let mut columns = Vec::new();
        let mut pk: Vec<(i64, String)> = Vec::new();
        for r in &cols {
            let name: String = r.try_get(0)?;
            let ty: String = r.try_get(1)?;
            let notnull: i64 = r.try_get(2)?;
            let default: Option<String> = r.try_get(3)?;
            let pk_pos: i64 = r.try_get(4)?;
            if pk_pos > 0 {
                pk.push((pk_pos, name.clone()));
            }
            columns.push(Column {
                name,
                data_type: ty.to_ascii_lowercase(),
                // SQLite lets PRIMARY KEY columns (except INTEGER PRIMARY KEY) hold NULL unless
                // declared NOT NULL; report what the table enforces.
                nullable: notnull == 0,
                default,
            });
        }
        pk.sort();
        let idx = sqlx::query(
            "SELECT name, \"unique\", origin, partial FROM pragma_index_list(?1) ORDER BY name",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .with_context(ctx)?;
        let mut indexes = Vec::new();
        for r in &idx {
            let name: String = r.try_get(0)?;
            let unique: i64 = r.try_get(1)?;
            let origin: String = r.try_get(2)?;
            let partial: i64 = r.try_get(3)?;
            // The primary key is not a secondary index; partial indexes' predicates are not
            // carried by `Index`, so they are not reported rather than reported wrong.
            if origin == "pk" || partial != 0 {
                continue;
            }
            let names: Vec<Option<String>> =
                sqlx::query_scalar("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")
                    .bind(&name)
                    .fetch_all(&self.pool)
                    .await
                    .with_context(ctx)?;
            // An expression index has NULL column names: not representable, skipped.
            let Some(columns) = names.into_iter().collect::<Option<Vec<String>>>() else {
                continue;
            };
            indexes.push(Index {
                name,
                columns,
                unique: unique != 0,
            });
        }
        Ok(Some(TableSchema {
            name: table.to_string(),
            columns,
            primary_key: pk.into_iter().map(|(_, n)| n).collect(),
            indexes,
        }))
    }

    async fn create_table(&self, schema: &TableSchema) -> Result<()> {
        let ddl = sql::create_table_sql(D, schema)?;
        sqlx::query(&ddl)
            .execute(&self.pool)
            .await
            .with_context(|| self.ctx("create table", &schema.name))?;
        Ok(())
    }

    async fn create_indexes(&self, schema: &TableSchema) -> Result<()> {
        check_table(&schema.name)?;
        for ix in &schema.indexes {
            // Indexes behind UNIQUE constraints are named sqlite_autoindex_*, a reserved prefix.
            let name = if ix.name.starts_with("sqlite_") {
                format!("{}_{}_key", schema.name, ix.columns.join("_"))
            } else {
                ix.name.clone()
            };
            let cols: Vec<String> = ix.columns.iter().map(|c| D.quote(c)).collect();
            let ddl = format!(
                "CREATE {}INDEX IF NOT EXISTS {} ON {} ({})",
                if ix.unique { "UNIQUE " } else { "" },
                D.quote(&name),
                D.quote(&schema.name),
                cols.join(", ")
            );
            sqlx::query(&ddl)
                .execute(&self.pool)
                .await
                .with_context(|| self.ctx(&format!("create index {name} on"), &schema.name))?;
        }
        Ok(())
    }

    async fn upsert(&self, schema: &TableSchema, rows: &[Vec<Value>]) -> Result<u64> {
        check_table(&schema.name)?;
        if rows.is_empty() {
            return Ok(0);
        }
        let ctx = || self.ctx("upsert into", &schema.name);
        let mut tx = self.pool.begin().await.with_context(ctx)?;
        let n = upsert_in(&mut tx, schema, rows).await.with_context(ctx)?;
        tx.commit().await.with_context(ctx)?;
        Ok(n)
    }

    async fn delete(&self, schema: &TableSchema, pks: &[PkValues]) -> Result<u64> {
        check_table(&schema.name)?;
        if pks.is_empty() {
            return Ok(0);
        }
        let ctx = || self.ctx("delete from", &schema.name);
        let mut tx = self.pool.begin().await.with_context(ctx)?;
        let n = delete_in(&mut tx, schema, pks).await.with_context(ctx)?;
        tx.commit().await.with_context(ctx)?;
        Ok(n)
    }

    async fn key_counts(
        &self,
        schema: &TableSchema,
        key_column: &str,
        filter: &KeyFilter,
        f: &mut (dyn FnMut(Key, u64, u64) + Send),
    ) -> Result<()> {
        use futures_util::TryStreamExt;
        check_table(&schema.name)?;
        let mut vals = Vec::new();
        let w = sql::filter_sql(
            D,
            schema,
            key_column,
            filter,
            &mut sql::question_marks(&mut vals),
        )?
        .unwrap_or_else(|| "1=1".into());
        let size: Vec<String> = schema
            .columns
            .iter()
            .map(|c| format!("COALESCE(length(CAST({} AS BLOB)), 0)", D.quote(&c.name)))
            .collect();
        let k = D.quote(key_column);
        let q = format!(
            "SELECT {k}, COUNT(*), SUM({}) FROM {} WHERE {w} GROUP BY {k}",
            size.join(" + "),
            D.quote(&schema.name)
        );
        let ctx = || self.ctx("count keys of", &schema.name);
        if let Some(pages) = &self.pages {
            // One result row per distinct key (often every row): through sqlx each was handed
            // from its worker thread on its own (a third of `apply`'s time for 3·10^5 keys).
            let table = schema.name.clone();
            let mut rx = pages.stream(q, vals, 4096, move |r| {
                let key = Value::from(sqlite_pages::value_ref(r, 0)?)
                    .as_key()
                    .ok_or_else(|| not_a_key(&table))?;
                Ok((key, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            });
            while let Some(batch) = rx.recv().await {
                for (key, n, b) in batch.with_context(ctx)? {
                    f(key, n as u64, b as u64);
                }
            }
            return Ok(());
        }
        let mut args = SqliteArguments::default();
        for v in &vals {
            bind(&mut args, v)?;
        }
        let mut stream: BoxStream<'_, Result<SqliteRow, sqlx::Error>> =
            sqlx::query_with(&q, args).fetch(&self.pool);
        while let Some(r) = stream.try_next().await.with_context(ctx)? {
            let key = decode(&r, 0)?
                .as_key()
                .ok_or_else(|| not_a_key(&schema.name))?;
            let n: i64 = r.try_get(1)?;
            let b: i64 = r.try_get(2)?;
            f(key, n as u64, b as u64);
        }
        Ok(())
    }

    async fn read_range(
        &self,
        schema: &TableSchema,
        key_column: &str,
        after: Option<&PkValues>,
        upto: Option<&PkValues>,
        filter: &KeyFilter,
        limit: usize,
    ) -> Result<Batch> {
        let key_idx = sql::key_index(schema, key_column)?;
        let pk_idx = sql::pk_indexes(schema)?;
        let (q, vals) = page_query(schema, key_column, (after, upto), filter, limit)?;
        let ctx = || self.ctx("read", &schema.name);
        let ncols = schema.columns.len();
        let rows: Vec<Vec<Value>> = match &self.pages {
            Some(pages) => pages.query(q, vals, ncols).await.with_context(ctx)?,
            None => {
                let mut args = SqliteArguments::default();
                for v in &vals {
                    bind(&mut args, v)?;
                }
                let rows = sqlx::query_with(&q, args)
                    .fetch_all(&self.pool)
                    .await
                    .with_context(ctx)?;
                rows.iter()
                    .map(|r| (0..ncols).map(|i| decode(r, i)).collect::<Result<_>>())
                    .collect::<Result<_>>()
                    .with_context(ctx)?
            }
        };
        let mut batch = Batch::default();
        for row in rows {
            batch.keys.push(sql::key_of(schema, key_idx, &row)?);
            batch.bytes += row.iter().map(Value::approx_size).sum::<u64>();
            batch.rows.push(row);
        }
        batch.last = batch
            .rows
            .last()
            .map(|r| pk_idx.iter().map(|&i| r[i].clone()).collect());
        Ok(batch)
    }

    /// Encodes from the values SQLite hands out (no [`Value`], no `String` per column) when
    /// the database is a plain file; otherwise the default path.
    async fn read_encoded(
        &self,
        schema: &TableSchema,
        key_column: &str,
        bounds: (Option<&PkValues>, Option<&PkValues>),
        filter: &KeyFilter,
        limit: usize,
        spec: &EncodeSpec<'_>,
    ) -> Result<EncodedBatch> {
        let Some(pages) = &self.pages else {
            let b = self
                .read_range(schema, key_column, bounds.0, bounds.1, filter, limit)
                .await?;
            return Ok(EncodedBatch::from_batch(b, spec));
        };
        let key_idx = sql::key_index(schema, key_column)?;
        let pk_idx = sql::pk_indexes(schema)?;
        let (q, vals) = page_query(schema, key_column, bounds, filter, limit)?;
        // Owned copies: the rows are encoded on a blocking thread.
        let (order, classes, table) = (spec.order.to_vec(), spec.classes.to_vec(), schema.clone());
        let keys = spec.keys;
        pages
            .fold(q, vals, spec.pool.take(), move |out, r| {
                out.push_row_outlined(
                    (&order, &classes),
                    (&table, keys.then_some(key_idx), &pk_idx),
                    limit,
                    |i| sqlite_pages::value_ref(r, i),
                )
            })
            .await
            .with_context(|| self.ctx("read", &schema.name))
    }

    async fn run_ddl(&self, stmts: &[String]) -> Result<()> {
        // One transaction on one connection: DDL is transactional in SQLite, so the batch is
        // all-or-nothing, and no statement runs on a connection with an older schema.
        // Its wait for the database's write lock is bounded by the lock timeout (busy timeout
        // on this connection, restored afterwards), see crate::lockwait.
        let ctx = || format!("shard {}: installing/removing triggers", self.shard);
        let mut conn = self.pool.acquire().await.with_context(ctx)?;
        let before: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut *conn)
            .await
            .with_context(ctx)?;
        let ms = crate::lockwait::timeout().as_millis().clamp(1, 3_600_000);
        sqlx::query(&format!("PRAGMA busy_timeout = {ms}"))
            .execute(&mut *conn)
            .await
            .with_context(ctx)?;
        let res: std::result::Result<(), sqlx::Error> = async {
            let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
            for st in stmts {
                // One statement each (a trigger body's inner `;` belongs to its CREATE).
                sqlx::query(st).execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await;
        let reset = sqlx::query(&format!("PRAGMA busy_timeout = {before}"))
            .execute(&mut *conn)
            .await;
        if reset.is_err() {
            conn.close_on_drop();
        }
        match res {
            Ok(()) => Ok(()),
            Err(e) => {
                let busy = matches!(&e, sqlx::Error::Database(db)
                    if db.code().and_then(|c| c.parse::<i64>().ok()).is_some_and(|n| n & 0xff == 5));
                let e = anyhow::Error::new(e);
                let e = if busy {
                    e.context(crate::lockwait::Blocked {
                        shard: self.shard.clone(),
                        what: stmts
                            .first()
                            .map(|s| crate::lockwait::describe_stmt(s))
                            .unwrap_or_else(|| "DDL".into()),
                        holders: Some("another connection (SQLite's write lock)".into()),
                    })
                } else {
                    e
                };
                Err(e.context(ctx()))
            }
        }
    }

    async fn fetch(&self, schema: &TableSchema, pks: &[PkValues]) -> Result<Vec<Vec<Value>>> {
        check_table(&schema.name)?;
        let npk = schema.primary_key.len();
        let ctx = || self.ctx("read", &schema.name);
        let mut out = Vec::new();
        for chunk in pks.chunks(sql::chunk_rows(npk, MAX_PARAMS, 500)) {
            let q = format!(
                "SELECT {} FROM {} WHERE ({}) IN (VALUES {})",
                sql::column_list(D, schema),
                D.quote(&schema.name),
                sql::pk_list(D, schema),
                sql::values_groups(chunk.len(), npk)
            );
            let mut args = SqliteArguments::default();
            for v in chunk.iter().flatten() {
                bind(&mut args, v)?;
            }
            let rows = sqlx::query_with(&q, args)
                .fetch_all(&self.pool)
                .await
                .with_context(ctx)?;
            for r in &rows {
                out.push(
                    (0..schema.columns.len())
                        .map(|i| decode(r, i))
                        .collect::<Result<Vec<Value>>>()
                        .with_context(ctx)?,
                );
            }
        }
        Ok(out)
    }

    async fn write_quiet(
        &self,
        schema: &TableSchema,
        upserts: &[Vec<Value>],
        deletes: &[PkValues],
    ) -> Result<()> {
        check_table(&schema.name)?;
        if upserts.is_empty() && deletes.is_empty() {
            return Ok(());
        }
        let ctx = || self.ctx("write (bypassing triggers) to", &schema.name);
        // BEGIN IMMEDIATE: from here to COMMIT this is the database's only writer, so the log
        // rows above `top` are exactly the ones this write produced, and dropping the guard
        // triggers (transactional DDL) is invisible to every other connection.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .with_context(ctx)?;
        let res: Result<()> = async {
            let guards: Vec<(String, String)> = sqlx::query_as(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ? \
                 AND name LIKE '\\_rs\\_guard%' ESCAPE '\\'",
            )
            .bind(&schema.name)
            .fetch_all(&mut *tx)
            .await?;
            for (name, _) in &guards {
                sqlx::query(&format!("DROP TRIGGER {}", D.quote(name)))
                    .execute(&mut *tx)
                    .await?;
            }
            let log = crate::triggers::log_table(&schema.name);
            let has_log: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
            )
            .bind(&log)
            .fetch_one(&mut *tx)
            .await?;
            let top: Option<i64> = if has_log > 0 {
                sqlx::query_scalar(&format!(
                    "SELECT COALESCE(MAX(seq), 0) FROM {}",
                    D.quote(&log)
                ))
                .fetch_one(&mut *tx)
                .await?
            } else {
                None
            };
            upsert_in(&mut tx, schema, upserts).await?;
            delete_in(&mut tx, schema, deletes).await?;
            if let Some(top) = top {
                sqlx::query(&format!("DELETE FROM {} WHERE seq > ?", D.quote(&log)))
                    .bind(top)
                    .execute(&mut *tx)
                    .await?;
            }
            for (_, ddl) in &guards {
                sqlx::query(ddl).execute(&mut *tx).await?;
            }
            Ok(())
        }
        .await;
        res.with_context(ctx)?;
        tx.commit().await.with_context(ctx)?;
        Ok(())
    }

    async fn raise_fence(
        &self,
        pair: crate::triggers::FencePair,
        move_id: &str,
        wait: Duration,
    ) -> Result<()> {
        use sqlx::Connection;
        let ctx = || format!("shard {}: raising the fence of move {move_id}", self.shard);
        // A connection of its own: its busy timeout is the fence budget, so a writer holding
        // the database's lock makes raising fail in time instead of waiting 30 s.
        let opts = (*self.pool.connect_options())
            .clone()
            .busy_timeout(wait.max(Duration::from_millis(1)));
        let mut conn = sqlx::SqliteConnection::connect_with(&opts)
            .await
            .with_context(ctx)?;
        let res: Result<()> = async {
            super::sqlite_functions::register_sqlite_functions(&mut conn).await?;
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query(&crate::triggers::set_fence_sql(D))
                .bind(1i32)
                .bind(move_id)
                .bind(pair.0 as i64)
                .bind(pair.1 as i64)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        conn.close().await.ok();
        res.with_context(ctx)
    }

    async fn set_fence(
        &self,
        pair: crate::triggers::FencePair,
        move_id: &str,
        on: bool,
    ) -> Result<()> {
        let ctx = || format!("shard {}: setting the fence of move {move_id}", self.shard);
        // Read first, outside any lock: in WAL mode a reader never waits, while BEGIN
        // IMMEDIATE waits (up to the busy timeout) behind a writer holding the database, which
        // is exactly when an aborted cutover lowers a fence that never went up.
        let mut conn = self.pool.acquire().await.with_context(ctx)?;
        if fence_state(&mut conn, pair).await.with_context(ctx)? != FenceState::Is(!on) {
            return Ok(());
        }
        drop(conn);
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .with_context(ctx)?;
        if fence_state(&mut tx, pair).await.with_context(ctx)? != FenceState::Is(!on) {
            return Ok(());
        }
        sqlx::query(&crate::triggers::set_fence_sql(D))
            .bind(on as i32)
            .bind(move_id)
            .bind(pair.0 as i64)
            .bind(pair.1 as i64)
            .execute(&mut *tx)
            .await
            .with_context(ctx)?;
        tx.commit().await.with_context(ctx)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_constraints_are_found_outside_quotes() {
        assert!(super::has_check("CREATE TABLE t (a INT, CHECK (a > 0))"));
        assert!(super::has_check(
            "CREATE TABLE t (a INT CONSTRAINT c check(a > 0))"
        ));
        assert!(!super::has_check(
            "CREATE TABLE t (a TEXT DEFAULT 'check (x)')"
        ));
        assert!(!super::has_check(
            "CREATE TABLE t (recheck INT, \"check\" INT)"
        ));
    }
}
