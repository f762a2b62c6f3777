//! The PostgreSQL backend.
//!
//! Values travel in PostgreSQL's own text form (`col::text` out, `CAST(text AS type)` in) except
//! for integers, floats (binary, bit for bit), booleans, bytea and plain strings, which are
//! decoded natively. Pages are read with binary `COPY` (`pg_copy`). The text form is
//! lossless for every built-in type given the session settings made at connect: `TimeZone=UTC`
//! (timestamptz), `extra_float_digits=3` (shortest exact float text), `bytea_output=hex`,
//! `DateStyle=ISO` and `IntervalStyle=postgres`.
//!
//! Writes bind one `text[]` per column and run one
//! `INSERT ... SELECT ... FROM UNNEST(...) ON CONFLICT DO UPDATE`: a single prepared statement
//! per batch, no SQL parsing per row, no placeholder limit (see `examples/bench_backend.rs`).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Arguments, Row};

use super::pg_copy;
use super::sql::{self, check_table, check_type};
use super::{
    Backend, Batch, Column, EncodeSpec, EncodedBatch, Index, KeyFilter, PkValues, TableSchema,
    Value,
};
use crate::ident::Dialect;
use crate::map::Key;

const D: Dialect = Dialect::Postgres;

mod bounded;
pub mod pipe;
mod quiet;

pub struct Postgres {
    shard: String,
    pool: PgPool,
    /// Whether this role may set `session_replication_role` (src/backend/pg_copy_in.rs),
    /// asked once.
    replica_role: tokio::sync::OnceCell<bool>,
}

pub async fn connect(shard: &str, url: &str) -> Result<Arc<dyn Backend>> {
    // The parse error could quote the URL, so it is not passed on.
    let opts = PgConnectOptions::from_str(url)
        .map_err(|_| anyhow!("shard {shard}: not a valid postgres:// URL"))?
        .application_name("reshard")
        .options([
            ("TimeZone", "UTC"),
            ("extra_float_digits", "3"),
            ("bytea_output", "hex"),
            ("DateStyle", "ISO,MDY"),
            ("IntervalStyle", "postgres"),
        ]);
    // The pool retries a refused connection until its acquire timeout, and retrying is the
    // caller's decision (execution backs off on transient errors): a refused TCP connection is
    // reported at once. Any other failure (authentication, a missing database) the pool reports
    // at once itself. (A full connection here cost every command one more TLS handshake; a
    // connection that sends nothing is not logged by PostgreSQL.)
    if opts.get_socket().is_none() {
        refused_check(shard, opts.get_host(), opts.get_port()).await?;
    }
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(opts)
        .await
        .map_err(|e| anyhow!("shard {shard}: cannot connect to PostgreSQL: {e}"))?;
    super::closing::register_pg(&pool);
    Ok(Arc::new(Postgres {
        shard: shard.to_string(),
        pool,
        replica_role: tokio::sync::OnceCell::new(),
    }))
}

/// Fails at once when nothing listens at `host:port` (connection refused), naming the shard
/// and never the URL.
async fn refused_check(shard: &str, host: &str, port: u16) -> Result<()> {
    tokio::net::TcpStream::connect((host, port))
        .await
        .map(drop)
        .map_err(|e| anyhow!("shard {shard}: cannot connect to PostgreSQL: {e}"))
}

/// How a column is read.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Wire {
    I16,
    I32,
    I64,
    /// Binary float4/float8: the IEEE bits exactly (NaN payloads and -0.0 included), without
    /// formatting and parsing text per value.
    F32,
    F64,
    Bool,
    Bytes,
    Str,
    /// `col::text`, decoded as a string.
    AsText,
}

fn wire(ty: &str) -> Wire {
    match ty {
        "smallint" => Wire::I16,
        "integer" => Wire::I32,
        "bigint" => Wire::I64,
        "real" => Wire::F32,
        "double precision" => Wire::F64,
        "boolean" => Wire::Bool,
        "bytea" => Wire::Bytes,
        "text" => Wire::Str,
        t if t.starts_with("character varying") => Wire::Str,
        _ => Wire::AsText,
    }
}

fn select_list(schema: &TableSchema) -> String {
    schema
        .columns
        .iter()
        .map(|c| {
            let q = D.quote(&c.name);
            if wire(&c.data_type) == Wire::AsText {
                format!("{q}::text")
            } else {
                q
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Unchecked gets: the select list was built from the same declared types (`wire`), so the
/// per-value type-compatibility check sqlx would repeat for every row cannot fail.
fn decode(row: &PgRow, i: usize, w: Wire) -> Result<Value> {
    Ok(match w {
        Wire::I16 => row
            .try_get_unchecked::<Option<i16>, _>(i)?
            .map_or(Value::Null, |v| Value::Int(v.into())),
        Wire::I32 => row
            .try_get_unchecked::<Option<i32>, _>(i)?
            .map_or(Value::Null, |v| Value::Int(v.into())),
        Wire::I64 => row
            .try_get_unchecked::<Option<i64>, _>(i)?
            .map_or(Value::Null, Value::Int),
        Wire::F32 => row
            .try_get_unchecked::<Option<f32>, _>(i)?
            .map_or(Value::Null, |f| Value::Float32(f.to_bits())),
        Wire::F64 => row
            .try_get_unchecked::<Option<f64>, _>(i)?
            .map_or(Value::Null, Value::from_f64),
        Wire::Bool => row
            .try_get_unchecked::<Option<bool>, _>(i)?
            .map_or(Value::Null, Value::Bool),
        Wire::Bytes => row
            .try_get_unchecked::<Option<Vec<u8>>, _>(i)?
            .map_or(Value::Null, Value::Bytes),
        Wire::Str | Wire::AsText => row
            .try_get_unchecked::<Option<String>, _>(i)?
            .map_or(Value::Null, Value::Text),
    })
}

/// The PostgreSQL text form of a value, cast back to the column type when written.
pub(super) fn text_form(v: &Value) -> Option<String> {
    use std::fmt::Write;
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(if *b { "t" } else { "f" }.into()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        Value::Float(bits) => Some(float_text(f64::from_bits(*bits))),
        Value::Float32(bits) => Some(float_text(f32::from_bits(*bits).into())),
        Value::Text(s) => Some(s.clone()),
        Value::Bytes(b) => {
            let mut s = String::with_capacity(2 + 2 * b.len());
            s.push_str("\\x");
            for byte in b {
                let _ = write!(s, "{byte:02x}");
            }
            Some(s)
        }
    }
}

fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        // Rust prints the shortest string that reads back to the same f64.
        format!("{f:?}")
    }
}

/// The type a cursor or range value is cast to. Integers compare as bigint and strings as
/// text, so that a range bound wider than the column (a big integer, a long string) is neither
/// an error nor silently truncated by the cast.
fn cast_type(ty: &str) -> &str {
    match ty {
        "smallint" | "integer" => "bigint",
        t if t.starts_with("character") => "text",
        t => t,
    }
}

/// A `bigint` count of a COPY tuple (NULL as 0).
fn count_field(field: Option<&[u8]>) -> Result<u64> {
    match pg_copy::value_ref(Wire::I64, field) {
        Ok(crate::verify::canonical::ValueRef::Int(v)) => Ok(v as u64),
        Ok(_) => Ok(0),
        Err(e) => Err(anyhow!("a count: {e}")),
    }
}

/// Values bound through `pg_copy`'s settings (COPY takes no parameters): each placeholder
/// reads one back, cast to its column's type.
#[derive(Default)]
struct Settings {
    vals: Vec<Value>,
    /// A type no value may be cast to (reported by [`Settings::values`]).
    bad_type: Option<String>,
}

impl Settings {
    fn placeholder(&mut self) -> impl FnMut(Value, &str) -> String + '_ {
        |v, ty| {
            if check_type(ty).is_err() {
                self.bad_type = Some(ty.to_string());
            }
            self.vals.push(v);
            pg_copy::setting(self.vals.len(), cast_type(ty))
        }
    }

    fn values(self) -> Result<Vec<Value>> {
        if let Some(t) = self.bad_type {
            check_type(&t)?;
        }
        Ok(self.vals)
    }
}

impl Postgres {
    /// The rows of `(after, upto]` passing `filter`, at most `limit`, in primary-key order,
    /// through `COPY ... TO STDOUT (FORMAT binary)` (see [`pg_copy`]): each tuple's fields
    /// (select-list order: the schema's columns) go to `on_tuple`.
    async fn copy_range(
        &self,
        schema: &TableSchema,
        key_column: &str,
        (after, upto): (Option<&PkValues>, Option<&PkValues>),
        filter: &KeyFilter,
        limit: usize,
        on_tuple: impl FnMut(&pg_copy::Fields<'_>) -> Result<()>,
    ) -> Result<()> {
        check_table(&schema.name)?;
        let mut bound = Settings::default();
        let w = sql::where_clause_range(
            D,
            schema,
            key_column,
            after,
            upto,
            filter,
            &mut bound.placeholder(),
        )?;
        let query = format!(
            "SELECT {} FROM {} WHERE {w} ORDER BY {} LIMIT {}",
            select_list(schema),
            D.quote(&schema.name),
            sql::pk_list(D, schema),
            limit
        );
        self.copy_query(&query, &bound.values()?, schema.columns.len(), on_tuple)
            .await
            .with_context(|| self.ctx("read", &schema.name))
    }

    /// Runs `query` (of `n_fields` columns, its values as [`Settings`] placeholders bound to
    /// `vals`) through binary `COPY ... TO STDOUT`, handing each tuple to `on_tuple`.
    async fn copy_query(
        &self,
        query: &str,
        vals: &[Value],
        n_fields: usize,
        on_tuple: impl FnMut(&pg_copy::Fields<'_>) -> Result<()>,
    ) -> Result<()> {
        let copy = format!("COPY ({query}) TO STDOUT (FORMAT binary)");
        // One transaction: the settings and the COPY on one server session (see pg_copy).
        let mut tx = self.pool.begin().await?;
        if !vals.is_empty() {
            let texts: Vec<Option<String>> = vals.iter().map(text_form).collect();
            sqlx::query(pg_copy::BIND_SETTINGS)
                .bind(texts)
                .execute(&mut *tx)
                .await?;
        }
        pg_copy::read(&mut tx, &copy, n_fields, on_tuple).await?;
        tx.commit().await?;
        Ok(())
    }

    fn ctx(&self, what: &str, table: &str) -> String {
        format!("shard {}: {what} {table}", self.shard)
    }

    async fn relation(&self, table: &str) -> Result<Option<sqlx::postgres::types::Oid>> {
        sqlx::query_scalar(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = $1 AND n.nspname = current_schema() AND c.relkind IN ('r', 'p')",
        )
        .bind(table)
        .fetch_optional(&self.pool)
        .await
        .with_context(|| self.ctx("describe", table))
    }
}

/// `SELECT CAST(u.c0 AS t0), ... FROM UNNEST($1::text[], ...) AS u(c0, ...)` over `cols`.
fn unnest_select(schema: &TableSchema, cols: &[usize]) -> Result<String> {
    let mut casts = Vec::new();
    let mut arrays = Vec::new();
    let mut names = Vec::new();
    for (n, &i) in cols.iter().enumerate() {
        let ty = &schema.columns[i].data_type;
        check_type(ty)?;
        casts.push(format!("CAST(u.c{n} AS {ty})"));
        arrays.push(format!("${}::text[]", n + 1));
        names.push(format!("c{n}"));
    }
    Ok(format!(
        "SELECT {} FROM UNNEST({}) AS u({})",
        casts.join(", "),
        arrays.join(", "),
        names.join(", ")
    ))
}

fn column_arrays(rows: &[Vec<Value>], cols: &[usize], table: &str) -> Result<PgArguments> {
    let mut arrays: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(rows.len()); cols.len()];
    for row in rows {
        for (n, &i) in cols.iter().enumerate() {
            let v = row
                .get(i)
                .ok_or_else(|| anyhow!("a row for table {table} has too few values"))?;
            arrays[n].push(text_form(v));
        }
    }
    let mut args = PgArguments::default();
    for a in arrays {
        args.add(a)
            .map_err(|e| anyhow!("cannot bind a column: {e}"))?;
    }
    Ok(args)
}

fn upsert_stmt(schema: &TableSchema, rows: &[Vec<Value>]) -> Result<Option<(String, PgArguments)>> {
    check_table(&schema.name)?;
    if rows.is_empty() {
        return Ok(None);
    }
    let all: Vec<usize> = (0..schema.columns.len()).collect();
    let non_pk: Vec<String> = schema
        .columns
        .iter()
        .filter(|c| !schema.primary_key.contains(&c.name))
        .map(|c| format!("{0} = EXCLUDED.{0}", D.quote(&c.name)))
        .collect();
    let action = if non_pk.is_empty() {
        "NOTHING".to_string()
    } else {
        format!("UPDATE SET {}", non_pk.join(", "))
    };
    let q = format!(
        "INSERT INTO {} ({}) {} ON CONFLICT ({}) DO {action}",
        D.quote(&schema.name),
        sql::column_list(D, schema),
        unnest_select(schema, &all)?,
        sql::pk_list(D, schema)
    );
    let args = column_arrays(rows, &all, &schema.name)?;
    Ok(Some((q, args)))
}

fn delete_stmt(schema: &TableSchema, pks: &[PkValues]) -> Result<Option<(String, PgArguments)>> {
    check_table(&schema.name)?;
    if pks.is_empty() {
        return Ok(None);
    }
    let pk_idx = sql::pk_indexes(schema)?;
    // The cursors hold primary-key values only: lay them out as rows of the pk columns.
    let positions: Vec<usize> = (0..pk_idx.len()).collect();
    let mut sub = schema.clone();
    sub.columns = pk_idx.iter().map(|&i| schema.columns[i].clone()).collect();
    let q = format!(
        "DELETE FROM {} WHERE ({}) IN ({})",
        D.quote(&schema.name),
        sql::pk_list(D, schema),
        unnest_select(&sub, &positions)?
    );
    let args = column_arrays(pks, &positions, &schema.name)?;
    Ok(Some((q, args)))
}

#[async_trait]
impl Backend for Postgres {
    fn dialect(&self) -> Dialect {
        D
    }

    fn as_postgres(&self) -> Option<&Postgres> {
        Some(self)
    }

    fn shard(&self) -> &str {
        &self.shard
    }

    async fn position(&self) -> Result<Option<String>> {
        super::replication::pg_position(&self.shard, &self.pool).await
    }

    async fn replayed(&self, pos: &str) -> Result<super::replication::Replayed> {
        super::replication::pg_replayed(&self.shard, &self.pool, pos).await
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
        sqlx::query_scalar(
            "SELECT c.conname::text FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid \
             JOIN pg_namespace n ON n.oid = r.relnamespace \
             WHERE r.relname = $1 AND n.nspname = current_schema() AND c.contype = 'c' \
             ORDER BY 1",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .with_context(|| self.ctx("read the CHECK constraints of", table))
    }

    async fn describe(&self, table: &str) -> Result<Option<TableSchema>> {
        check_table(table)?;
        let Some(oid) = self.relation(table).await? else {
            return Ok(None);
        };
        let ctx = || self.ctx("describe", table);
        let cols = sqlx::query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                    pg_get_expr(d.adbin, d.adrelid) \
             FROM pg_attribute a \
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
        )
        .bind(oid)
        .fetch_all(&self.pool)
        .await
        .with_context(ctx)?;
        let mut columns = Vec::new();
        for r in &cols {
            let ty: String = r.try_get(1)?;
            columns.push(Column {
                name: r.try_get(0)?,
                data_type: ty.to_lowercase(),
                nullable: !r.try_get::<bool, _>(2)?,
                default: r.try_get(3)?,
            });
        }
        let primary_key: Vec<String> = sqlx::query_scalar(
            "SELECT a.attname::text FROM pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord",
        )
        .bind(oid)
        .fetch_all(&self.pool)
        .await
        .with_context(ctx)?;
        // Expression and partial indexes are not representable in `Index`: left out rather
        // than reported wrong.
        let idx = sqlx::query(
            "SELECT c.relname::text, i.indisunique, \
                    ARRAY(SELECT a.attname::text \
                          FROM unnest((i.indkey::int2[])[0:i.indnkeyatts - 1]) \
                               WITH ORDINALITY AS k(attnum, ord) \
                          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                          ORDER BY k.ord) \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = $1 AND NOT i.indisprimary \
               AND i.indexprs IS NULL AND i.indpred IS NULL \
             ORDER BY c.relname",
        )
        .bind(oid)
        .fetch_all(&self.pool)
        .await
        .with_context(ctx)?;
        let mut indexes = Vec::new();
        for r in &idx {
            indexes.push(Index {
                name: r.try_get(0)?,
                unique: r.try_get(1)?,
                columns: r.try_get(2)?,
            });
        }
        Ok(Some(TableSchema {
            name: table.to_string(),
            columns,
            primary_key,
            indexes,
        }))
    }

    async fn create_table(&self, schema: &TableSchema) -> Result<()> {
        // A serial column's default names the source's sequence, which the destination lacks:
        // declare it serial there, which creates the sequence and the same default.
        let mut s = schema.clone();
        for c in &mut s.columns {
            if let Some(def) = &c.default {
                if def.starts_with("nextval(") {
                    let serial = match c.data_type.as_str() {
                        "smallint" => Some("smallserial"),
                        "integer" => Some("serial"),
                        "bigint" => Some("bigserial"),
                        _ => None,
                    };
                    if let Some(t) = serial {
                        c.data_type = t.into();
                        c.default = None;
                    }
                }
            }
        }
        let ddl = sql::create_table_sql(D, &s)?;
        sqlx::query(&ddl)
            .execute(&self.pool)
            .await
            .with_context(|| self.ctx("create table", &schema.name))?;
        Ok(())
    }

    async fn create_indexes(&self, schema: &TableSchema) -> Result<()> {
        check_table(&schema.name)?;
        for ix in &schema.indexes {
            let cols: Vec<String> = ix.columns.iter().map(|c| D.quote(c)).collect();
            let ddl = format!(
                "CREATE {}INDEX IF NOT EXISTS {} ON {} ({})",
                if ix.unique { "UNIQUE " } else { "" },
                D.quote(&ix.name),
                D.quote(&schema.name),
                cols.join(", ")
            );
            sqlx::query(&ddl)
                .execute(&self.pool)
                .await
                .with_context(|| self.ctx(&format!("create index {} on", ix.name), &schema.name))?;
        }
        Ok(())
    }

    async fn upsert(&self, schema: &TableSchema, rows: &[Vec<Value>]) -> Result<u64> {
        let Some((q, args)) = upsert_stmt(schema, rows)? else {
            return Ok(0);
        };
        // One statement: atomic on its own, so no explicit transaction round trips.
        let n = sqlx::query_with(&q, args)
            .execute(&self.pool)
            .await
            .with_context(|| self.ctx("upsert into", &schema.name))?
            .rows_affected();
        Ok(n)
    }

    async fn delete(&self, schema: &TableSchema, pks: &[PkValues]) -> Result<u64> {
        let Some((q, args)) = delete_stmt(schema, pks)? else {
            return Ok(0);
        };
        let n = sqlx::query_with(&q, args)
            .execute(&self.pool)
            .await
            .with_context(|| self.ctx("delete from", &schema.name))?
            .rows_affected();
        Ok(n)
    }

    async fn key_counts(
        &self,
        schema: &TableSchema,
        key_column: &str,
        filter: &KeyFilter,
        f: &mut (dyn FnMut(Key, u64, u64) + Send),
    ) -> Result<()> {
        check_table(&schema.name)?;
        let key_ty = schema
            .columns
            .iter()
            .find(|c| c.name == key_column)
            .map(|c| c.data_type.clone())
            .ok_or_else(|| anyhow!("table {} has no column {key_column:?}", schema.name))?;
        let mut bound = Settings::default();
        let w = sql::filter_sql(D, schema, key_column, filter, &mut bound.placeholder())?
            .unwrap_or_else(|| "1=1".into());
        check_type(&key_ty)?;
        let k = D.quote(key_column);
        let w0 = wire(&key_ty);
        let key_expr = if w0 == Wire::AsText {
            format!("{k}::text")
        } else {
            k.clone()
        };
        let q = format!(
            "SELECT {key_expr}, COUNT(*), SUM(pg_column_size(t.*))::bigint FROM {} AS t \
             WHERE {w} GROUP BY {k}",
            D.quote(&schema.name)
        );
        // Through COPY like page reads: one result row per distinct key (often one per row),
        // and sqlx's row stream cost ~0.7 µs of CPU each (a 10^6-key dry run: 1.0 s).
        self.copy_query(&q, &bound.values()?, 3, |fields| {
            let key = pg_copy::value_ref(w0, fields[0])
                .map_err(|e| anyhow!("column {key_column}: {e}"))?
                .as_key()
                .ok_or_else(|| {
                    anyhow!(
                        "table {}: a shard key is NULL or not an integer or text",
                        schema.name
                    )
                })?;
            f(key, count_field(fields[1])?, count_field(fields[2])?);
            Ok(())
        })
        .await
        .with_context(|| self.ctx("count keys of", &schema.name))
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
        let wires: Vec<Wire> = schema.columns.iter().map(|c| wire(&c.data_type)).collect();
        let mut batch = Batch::default();
        self.copy_range(schema, key_column, (after, upto), filter, limit, |f| {
            let row = pg_copy::row(&wires, f)?;
            batch.keys.push(sql::key_of(schema, key_idx, &row)?);
            batch.bytes += row.iter().map(Value::approx_size).sum::<u64>();
            batch.rows.push(row);
            Ok(())
        })
        .await?;
        batch.last = batch
            .rows
            .last()
            .map(|r| pk_idx.iter().map(|&i| r[i].clone()).collect());
        Ok(batch)
    }

    /// Encodes straight from the COPY tuples' bytes: no [`Value`] per column.
    async fn read_encoded(
        &self,
        schema: &TableSchema,
        key_column: &str,
        bounds: (Option<&PkValues>, Option<&PkValues>),
        filter: &KeyFilter,
        limit: usize,
        spec: &EncodeSpec<'_>,
    ) -> Result<EncodedBatch> {
        let key_idx = sql::key_index(schema, key_column)?;
        let pk_idx = sql::pk_indexes(schema)?;
        let wires: Vec<Wire> = schema.columns.iter().map(|c| wire(&c.data_type)).collect();
        let mut out = spec.pool.take();
        self.copy_range(schema, key_column, bounds, filter, limit, |f| {
            out.push_row(
                (spec.order, spec.classes),
                (schema, spec.keys.then_some(key_idx), &pk_idx),
                limit,
                // Inlined: as a call, its result came back through the stack and each field
                // stalled on reading it (store forwarding), ~1/6 of this loop's time.
                #[inline(always)]
                |i| {
                    pg_copy::value_ref(wires[i], f[i])
                        .map_err(|e| anyhow!("column {}: {e}", schema.columns[i].name))
                },
            )
        })
        .await?;
        Ok(out)
    }

    async fn run_ddl(&self, stmts: &[String]) -> Result<()> {
        for st in stmts {
            let r: Result<()> = async {
                let (mut tx, pid) = self.begin_bounded().await?;
                let watch = self.watch(pid);
                let res = sqlx::Executor::execute(&mut *tx, st.as_str()).await;
                self.end_bounded(tx, st, res, watch).await.map(drop)
            }
            .await;
            r.with_context(|| format!("shard {}: installing/removing triggers", self.shard))?;
        }
        Ok(())
    }

    async fn fetch(&self, schema: &TableSchema, pks: &[PkValues]) -> Result<Vec<Vec<Value>>> {
        check_table(&schema.name)?;
        if pks.is_empty() {
            return Ok(Vec::new());
        }
        let pk_idx = sql::pk_indexes(schema)?;
        let positions: Vec<usize> = (0..pk_idx.len()).collect();
        let mut sub = schema.clone();
        sub.columns = pk_idx.iter().map(|&i| schema.columns[i].clone()).collect();
        let q = format!(
            "SELECT {} FROM {} WHERE ({}) IN ({})",
            select_list(schema),
            D.quote(&schema.name),
            sql::pk_list(D, schema),
            unnest_select(&sub, &positions)?
        );
        let args = column_arrays(pks, &positions, &schema.name)?;
        let rows = sqlx::query_with(&q, args)
            .fetch_all(&self.pool)
            .await
            .with_context(|| self.ctx("read", &schema.name))?;
        let wires: Vec<Wire> = schema.columns.iter().map(|c| wire(&c.data_type)).collect();
        rows.iter()
            .map(|r| {
                wires
                    .iter()
                    .enumerate()
                    .map(|(i, w)| decode(r, i, *w))
                    .collect::<Result<Vec<Value>>>()
            })
            .collect::<Result<_>>()
            .with_context(|| self.ctx("read", &schema.name))
    }

    async fn insert_new_quiet(&self, schema: &TableSchema, rows: &[Vec<Value>]) -> Result<()> {
        self.insert_new_quiet_impl(schema, rows).await
    }

    async fn write_quiet(
        &self,
        schema: &TableSchema,
        upserts: &[Vec<Value>],
        deletes: &[PkValues],
    ) -> Result<()> {
        self.write_quiet_impl(schema, upserts, deletes).await
    }

    async fn delete_keys_quiet(&self, schema: &TableSchema, keys: &[PkValues]) -> Result<u64> {
        self.delete_keys_quiet_impl(schema, keys).await
    }

    async fn delete_range_quiet(
        &self,
        schema: &TableSchema,
        key_column: &str,
        bounds: (Option<&PkValues>, Option<&PkValues>),
        filter: &KeyFilter,
    ) -> Result<u64> {
        self.delete_range_quiet_impl(schema, key_column, bounds, filter)
            .await
    }

    async fn raise_fence(
        &self,
        pair: crate::triggers::FencePair,
        move_id: &str,
        wait: Duration,
    ) -> Result<()> {
        let ctx = || format!("shard {}: raising the fence of move {move_id}", self.shard);
        // The fence budget, and never longer than any other fence statement may wait.
        let wait = wait.min(crate::lockwait::timeout());
        self.update_fence(pair, move_id, true, wait)
            .await
            .with_context(ctx)
    }

    async fn set_fence(
        &self,
        pair: crate::triggers::FencePair,
        move_id: &str,
        on: bool,
    ) -> Result<()> {
        if self.relation(crate::triggers::FENCE_TABLE).await?.is_none() {
            return Ok(());
        }
        // A plain (non-locking) read first: when the row already says so, no UPDATE waits
        // behind writers holding the row's share lock (a refused writer's open transaction).
        let cur: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT CAST(fenced AS BIGINT) FROM {} WHERE src = $1 AND dst = $2",
            D.quote(crate::triggers::FENCE_TABLE)
        ))
        .bind(pair.0 as i32)
        .bind(pair.1 as i32)
        .fetch_optional(&self.pool)
        .await?;
        if cur == Some(on as i64) {
            return Ok(());
        }
        self.update_fence(pair, move_id, on, crate::lockwait::timeout())
            .await
            .with_context(|| format!("shard {}: setting the fence of move {move_id}", self.shard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_exactly() {
        for f in [0.1 + 0.2, -0.0, 5e-324, f64::MAX, 1e300, 1.0] {
            assert_eq!(float_text(f).parse::<f64>().unwrap().to_bits(), f.to_bits());
        }
        assert_eq!(float_text(f64::NAN), "NaN");
        assert_eq!(float_text(f64::NEG_INFINITY), "-Infinity");
    }

    #[test]
    fn bytes_use_hex() {
        assert_eq!(
            text_form(&Value::Bytes(vec![0, 255, 16])).as_deref(),
            Some("\\x00ff10")
        );
    }
}
