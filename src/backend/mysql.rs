//! The MySQL/MariaDB backend.
//!
//! Reads use the binary protocol and decode by column type: integers natively (signed or
//! unsigned), FLOAT as f32 and DOUBLE as f64 bit for bit, binary strings as bytes, text as
//! UTF-8 (the connection is utf8mb4). Types whose exact form is their text (DECIMAL, temporal
//! types, ENUM/SET, JSON, UUID, INET) are read with `CAST(col AS CHAR)` and written back as
//! strings, which the server parses exactly; BIT and YEAR travel as unsigned integers.
//!
//! Sessions run with `time_zone='+00:00'` (TIMESTAMP values read and written in UTC), utf8mb4,
//! and a strict sql_mode with `NO_AUTO_VALUE_ON_ZERO`, so that a copied id 0 stays 0 instead of
//! drawing a new AUTO_INCREMENT value. `NO_ZERO_DATE` is left out so zero dates copy as they are.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use async_trait::async_trait;
use futures_util::stream::BoxStream;
use sqlx::mysql::{MySqlArguments, MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{Arguments, Executor, Row};

use super::sql::{self, check_table};
use super::{
    Backend, Batch, Column, EncodeSpec, EncodedBatch, Index, KeyFilter, PkValues, TableSchema,
    Value,
};
use crate::ident::Dialect;
use crate::map::Key;
use crate::verify::canonical::ValueRef;

mod quiet;

const D: Dialect = Dialect::Mysql;
/// The protocol's limit on placeholders in one prepared statement.
const MAX_PARAMS: usize = 65_535;
const SESSION: &str = "SET time_zone = '+00:00', \
    sql_mode = 'STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO'";

pub struct Mysql {
    shard: String,
    pool: MySqlPool,
}

pub async fn connect(shard: &str, url: &str) -> Result<Arc<dyn Backend>> {
    // The parse error could quote the URL, so it is not passed on.
    let opts = MySqlConnectOptions::from_str(url)
        .map_err(|_| anyhow!("shard {shard}: not a valid mysql:// URL"))?
        .charset("utf8mb4")
        .timezone(Some("+00:00".to_string()));
    // One direct attempt first: the pool would retry a refused connection until its acquire
    // timeout, and retrying is the caller's decision (execution backs off on transient errors).
    // Not a bare TCP probe as for PostgreSQL: MariaDB counts a connection closed before its
    // handshake in `Aborted_connects` (and towards blocking the host, `max_connect_errors`).
    sqlx::Connection::close(
        <sqlx::mysql::MySqlConnection as sqlx::Connection>::connect_with(&opts)
            .await
            .map_err(|e| anyhow!("shard {shard}: cannot connect to MySQL/MariaDB: {e}"))?,
    )
    .await
    .ok();
    let pool = MySqlPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(SESSION).await?;
                Ok(())
            })
        })
        .connect_with(opts)
        .await
        .map_err(|e| anyhow!("shard {shard}: cannot connect to MySQL/MariaDB: {e}"))?;
    super::closing::register_mysql(&pool);
    Ok(Arc::new(Mysql {
        shard: shard.to_string(),
        pool,
    }))
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Wire {
    Signed,
    Unsigned,
    F32,
    F64,
    Bytes,
    Str,
    /// `CAST(col AS UNSIGNED)`: BIT, YEAR.
    AsUnsigned,
    /// `CAST(col AS CHAR)`: the exact text form.
    AsText,
}

fn wire(ty: &str) -> Wire {
    let base = ty.split(['(', ' ']).next().unwrap_or("");
    let unsigned = ty.contains("unsigned");
    match base {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" => {
            if unsigned {
                Wire::Unsigned
            } else {
                Wire::Signed
            }
        }
        "float" => Wire::F32,
        "double" | "real" => Wire::F64,
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => Wire::Bytes,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => Wire::Str,
        "bit" | "year" => Wire::AsUnsigned,
        _ => Wire::AsText,
    }
}

fn select_expr(c: &Column) -> String {
    let q = D.quote(&c.name);
    match wire(&c.data_type) {
        Wire::AsText => format!("CAST({q} AS CHAR)"),
        Wire::AsUnsigned => format!("CAST({q} AS UNSIGNED)"),
        _ => q,
    }
}

/// One column of a row, borrowed from it (strings and bytes are not copied).
fn value_ref(row: &MySqlRow, i: usize, w: Wire) -> Result<ValueRef<'_>> {
    Ok(match w {
        Wire::Signed => row
            .try_get_unchecked::<Option<i64>, _>(i)?
            .map_or(ValueRef::Null, ValueRef::Int),
        Wire::Unsigned | Wire::AsUnsigned => row
            .try_get_unchecked::<Option<u64>, _>(i)?
            .map_or(ValueRef::Null, ValueRef::UInt),
        Wire::F32 => row
            .try_get::<Option<f32>, _>(i)?
            .map_or(ValueRef::Null, |f| ValueRef::Float32(f.to_bits())),
        Wire::F64 => row
            .try_get::<Option<f64>, _>(i)?
            .map_or(ValueRef::Null, |f| ValueRef::Float(f.to_bits())),
        Wire::Bytes => row
            .try_get_unchecked::<Option<&[u8]>, _>(i)?
            .map_or(ValueRef::Null, ValueRef::Bytes),
        Wire::Str | Wire::AsText => row
            .try_get_unchecked::<Option<&str>, _>(i)?
            .map_or(ValueRef::Null, ValueRef::Text),
    })
}

fn bind(args: &mut MySqlArguments, v: &Value) -> Result<()> {
    let r = match v {
        Value::Null => args.add(Option::<String>::None),
        Value::Bool(b) => args.add(*b),
        Value::Int(i) => args.add(*i),
        Value::UInt(u) => args.add(*u),
        Value::Float(bits) => args.add(f64::from_bits(*bits)),
        Value::Float32(bits) => args.add(f32::from_bits(*bits)),
        Value::Text(s) => args.add(s.clone()),
        Value::Bytes(b) => args.add(b.clone()),
    };
    r.map_err(|e| anyhow!("cannot bind a value: {e}"))
}

fn bind_all(vals: &[Value]) -> Result<MySqlArguments> {
    let mut args = MySqlArguments::default();
    for v in vals {
        bind(&mut args, v)?;
    }
    Ok(args)
}

impl Mysql {
    /// The rows of `(after, upto]` passing `filter`, at most `limit`, in primary-key order,
    /// each handed to `on_row` as it streams in (a page is never buffered whole).
    async fn stream_range(
        &self,
        schema: &TableSchema,
        key_column: &str,
        (after, upto): (Option<&PkValues>, Option<&PkValues>),
        filter: &KeyFilter,
        limit: usize,
        mut on_row: impl FnMut(&MySqlRow) -> Result<()>,
    ) -> Result<()> {
        use futures_util::TryStreamExt;
        let list: Vec<String> = schema.columns.iter().map(select_expr).collect();
        let (q, vals) = sql::range_select(
            D,
            schema,
            key_column,
            (after, upto),
            filter,
            limit,
            &list.join(", "),
        )?;
        let ctx = || self.ctx("read", &schema.name);
        let mut stream = sqlx::query_with(&q, bind_all(&vals)?).fetch(&self.pool);
        while let Some(r) = stream.try_next().await.with_context(ctx)? {
            on_row(&r).with_context(ctx)?;
        }
        Ok(())
    }

    fn ctx(&self, what: &str, table: &str) -> String {
        format!("shard {}: {what} {table}", self.shard)
    }
}

async fn upsert_in(
    conn: &mut sqlx::MySqlConnection,
    schema: &TableSchema,
    rows: &[Vec<Value>],
) -> Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let ncols = schema.columns.len();
    let mut updates: Vec<String> = schema
        .columns
        .iter()
        .filter(|c| !schema.primary_key.contains(&c.name))
        .map(|c| format!("{0} = VALUES({0})", D.quote(&c.name)))
        .collect();
    if updates.is_empty() {
        // Not INSERT IGNORE: that would also turn data errors into warnings.
        let pk0 = D.quote(&schema.primary_key[0]);
        updates.push(format!("{pk0} = {pk0}"));
    }
    let per = sql::chunk_rows(ncols, MAX_PARAMS, 1000);
    let mut n = 0;
    for chunk in rows.chunks(per) {
        let q = format!(
            "INSERT INTO {} ({}) VALUES {} ON DUPLICATE KEY UPDATE {}",
            D.quote(&schema.name),
            sql::column_list(D, schema),
            sql::values_groups(chunk.len(), ncols),
            updates.join(", ")
        );
        let mut args = MySqlArguments::default();
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
    conn: &mut sqlx::MySqlConnection,
    schema: &TableSchema,
    pks: &[PkValues],
) -> Result<u64> {
    let npk = schema.primary_key.len();
    let per = sql::chunk_rows(npk, MAX_PARAMS, 1000);
    let mut n = 0;
    for chunk in pks.chunks(per) {
        let list = if npk == 1 {
            vec!["?"; chunk.len()].join(", ")
        } else {
            sql::values_groups(chunk.len(), npk)
        };
        let q = format!(
            "DELETE FROM {} WHERE ({}) IN ({list})",
            D.quote(&schema.name),
            sql::pk_list(D, schema)
        );
        let mut args = MySqlArguments::default();
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

#[async_trait]
impl Backend for Mysql {
    fn dialect(&self) -> Dialect {
        D
    }

    fn shard(&self) -> &str {
        &self.shard
    }

    async fn position(&self) -> Result<Option<String>> {
        super::replication::mysql_position(&self.shard, &self.pool).await
    }

    async fn replayed(&self, pos: &str) -> Result<super::replication::Replayed> {
        super::replication::mysql_replayed(&self.shard, &self.pool, pos).await
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
        // A JSON column is LONGTEXT with CHECK (json_valid(`col`)), named after the column:
        // the created table's JSON column brings its own.
        sqlx::query_scalar(
            "SELECT CONSTRAINT_NAME FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = ? \
             AND CHECK_CLAUSE <> CONCAT('json_valid(`', CONSTRAINT_NAME, '`)') ORDER BY 1",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .with_context(|| self.ctx("read the CHECK constraints of", table))
    }

    async fn describe(&self, table: &str) -> Result<Option<TableSchema>> {
        check_table(table)?;
        let ctx = || self.ctx("describe", table);
        let cols = sqlx::query(
            "SELECT CAST(COLUMN_NAME AS CHAR), CAST(COLUMN_TYPE AS CHAR), \
                    CAST(IS_NULLABLE AS CHAR), CAST(COLUMN_DEFAULT AS CHAR) \
             FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND TABLE_NAME IN \
               (SELECT TABLE_NAME FROM information_schema.TABLES \
                WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE') \
             ORDER BY ORDINAL_POSITION",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .with_context(ctx)?;
        if cols.is_empty() {
            return Ok(None);
        }
        // MariaDB's JSON is LONGTEXT plus CHECK (json_valid(`col`)): report it as json.
        let checks: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(CHECK_CLAUSE AS CHAR) FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = ?",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .with_context(ctx)?;
        let mut columns = Vec::new();
        for r in &cols {
            let name: String = r.try_get(0)?;
            let mut data_type = r.try_get::<String, _>(1)?.to_lowercase();
            let json_check = format!("json_valid({})", D.quote(&name));
            if data_type == "longtext" && checks.iter().any(|c| c == &json_check) {
                data_type = "json".into();
            }
            // MariaDB spells "no default" on a nullable column as the expression NULL.
            let default: Option<String> = r.try_get(3)?;
            columns.push(Column {
                name,
                data_type,
                nullable: r.try_get::<String, _>(2)? == "YES",
                default: default.filter(|d| d != "NULL"),
            });
        }
        let stats = sqlx::query(
            "SELECT CAST(INDEX_NAME AS CHAR), CAST(COLUMN_NAME AS CHAR), NON_UNIQUE, \
                    SUB_PART IS NOT NULL \
             FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? \
             ORDER BY INDEX_NAME = 'PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .with_context(ctx)?;
        let mut primary_key = Vec::new();
        let mut indexes: Vec<Index> = Vec::new();
        let mut prefixed: Vec<String> = Vec::new();
        for r in &stats {
            let index: String = r.try_get(0)?;
            let column: Option<String> = r.try_get(1)?;
            let non_unique: i64 = r.try_get_unchecked(2)?;
            let prefix: i64 = r.try_get_unchecked(3)?;
            let Some(column) = column else {
                prefixed.push(index);
                continue;
            };
            if index == "PRIMARY" {
                primary_key.push(column);
                continue;
            }
            // Prefix indexes (`col(10)`) are not representable in `Index`: left out.
            if prefix != 0 {
                prefixed.push(index.clone());
            }
            match indexes.last_mut() {
                Some(ix) if ix.name == index => ix.columns.push(column),
                _ => indexes.push(Index {
                    name: index,
                    columns: vec![column],
                    unique: non_unique == 0,
                }),
            }
        }
        indexes.retain(|ix| !prefixed.contains(&ix.name));
        Ok(Some(TableSchema {
            name: table.to_string(),
            columns,
            primary_key,
            indexes,
        }))
    }

    async fn create_table(&self, schema: &TableSchema) -> Result<()> {
        // Column types carry no character set: the table gets utf8mb4 so any text fits.
        let ddl = format!(
            "{} DEFAULT CHARSET = utf8mb4",
            sql::create_table_sql(D, schema)?
        );
        sqlx::query(&ddl)
            .execute(&self.pool)
            .await
            .with_context(|| self.ctx("create table", &schema.name))?;
        Ok(())
    }

    async fn create_indexes(&self, schema: &TableSchema) -> Result<()> {
        check_table(&schema.name)?;
        let existing: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT CAST(INDEX_NAME AS CHAR) FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
        )
        .bind(&schema.name)
        .fetch_all(&self.pool)
        .await
        .with_context(|| self.ctx("list indexes of", &schema.name))?;
        for ix in &schema.indexes {
            // MySQL has no CREATE INDEX IF NOT EXISTS everywhere; check the catalog instead.
            if existing.contains(&ix.name) {
                continue;
            }
            let cols: Vec<String> = ix.columns.iter().map(|c| D.quote(c)).collect();
            let ddl = format!(
                "CREATE {}INDEX {} ON {} ({})",
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
        let key_col = &schema.columns[sql::key_index(schema, key_column)?];
        let w0 = wire(&key_col.data_type);
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
            .map(|c| format!("COALESCE(LENGTH({}), 0)", D.quote(&c.name)))
            .collect();
        let k = D.quote(key_column);
        let q = format!(
            "SELECT {}, COUNT(*), CAST(SUM({}) AS SIGNED) FROM {} WHERE {w} GROUP BY {k}",
            select_expr(key_col),
            size.join(" + "),
            D.quote(&schema.name)
        );
        let ctx = || self.ctx("count keys of", &schema.name);
        let mut stream: BoxStream<'_, Result<MySqlRow, sqlx::Error>> =
            sqlx::query_with(&q, bind_all(&vals)?).fetch(&self.pool);
        while let Some(r) = stream.try_next().await.with_context(ctx)? {
            let key = value_ref(&r, 0, w0)?.as_key().ok_or_else(|| {
                anyhow!(
                    "table {}: a shard key is NULL or not an integer or text",
                    schema.name
                )
            })?;
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
        let wires: Vec<Wire> = schema.columns.iter().map(|c| wire(&c.data_type)).collect();
        let mut batch = Batch::default();
        self.stream_range(schema, key_column, (after, upto), filter, limit, |r| {
            let row: Vec<Value> = wires
                .iter()
                .enumerate()
                .map(|(i, w)| value_ref(r, i, *w).map(Value::from))
                .collect::<Result<_>>()?;
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

    /// Encodes from values borrowed from each row: no [`Value`] (no `String`) per column.
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
        self.stream_range(schema, key_column, bounds, filter, limit, |r| {
            out.push_row_outlined(
                (spec.order, spec.classes),
                (schema, spec.keys.then_some(key_idx), &pk_idx),
                limit,
                |i| value_ref(r, i, wires[i]),
            )
        })
        .await?;
        Ok(out)
    }

    async fn run_ddl(&self, stmts: &[String]) -> Result<()> {
        for st in stmts {
            let r: Result<()> = async {
                let mut conn = self.begin_bounded().await?;
                let res = sqlx::Executor::execute(&mut *conn, st.as_str()).await;
                self.end_bounded(conn, st, res).await
            }
            .await;
            r.with_context(|| format!("shard {}: installing/removing triggers", self.shard))?;
        }
        Ok(())
    }

    async fn fetch(&self, schema: &TableSchema, pks: &[PkValues]) -> Result<Vec<Vec<Value>>> {
        check_table(&schema.name)?;
        let npk = schema.primary_key.len();
        let wires: Vec<Wire> = schema.columns.iter().map(|c| wire(&c.data_type)).collect();
        let list: Vec<String> = schema.columns.iter().map(select_expr).collect();
        let ctx = || self.ctx("read", &schema.name);
        let mut out = Vec::new();
        for chunk in pks.chunks(sql::chunk_rows(npk, MAX_PARAMS, 1000)) {
            let set = if npk == 1 {
                vec!["?"; chunk.len()].join(", ")
            } else {
                sql::values_groups(chunk.len(), npk)
            };
            let q = format!(
                "SELECT {} FROM {} WHERE ({}) IN ({set})",
                list.join(", "),
                D.quote(&schema.name),
                sql::pk_list(D, schema)
            );
            let flat: Vec<Value> = chunk.iter().flatten().cloned().collect();
            let rows = sqlx::query_with(&q, bind_all(&flat)?)
                .fetch_all(&self.pool)
                .await
                .with_context(ctx)?;
            for r in &rows {
                out.push(
                    wires
                        .iter()
                        .enumerate()
                        .map(|(i, w)| value_ref(r, i, *w).map(Value::from))
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
        // innodb_lock_wait_timeout counts whole seconds; max_statement_time bounds the
        // statement (lock waits included) to the wait itself.
        let wait = wait.min(crate::lockwait::timeout());
        let secs = wait.as_secs_f64().clamp(0.001, 3600.0);
        let mut conn = self.begin_bounded().await.with_context(ctx)?;
        if let Err(e) = sqlx::query(&format!("SET SESSION max_statement_time = {secs:.3}"))
            .execute(&mut *conn)
            .await
        {
            conn.close_on_drop();
            return Err(anyhow::Error::new(e).context(ctx()));
        }
        let q = crate::triggers::set_fence_sql(D);
        let res = sqlx::query(&q)
            .bind(1i32)
            .bind(move_id)
            .bind(pair.0 as i32)
            .bind(pair.1 as i32)
            .execute(&mut *conn)
            .await;
        self.end_bounded(conn, &q, res).await.with_context(ctx)
    }

    async fn set_fence(
        &self,
        pair: crate::triggers::FencePair,
        move_id: &str,
        on: bool,
    ) -> Result<()> {
        let ctx = || format!("shard {}: setting the fence of move {move_id}", self.shard);
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = database() AND table_name = ?",
        )
        .bind(crate::triggers::FENCE_TABLE)
        .fetch_one(&self.pool)
        .await
        .with_context(ctx)?;
        if n == 0 {
            return Ok(());
        }
        // A plain (non-locking) read first: when the row already says so, no UPDATE waits
        // behind writers holding the row's share lock (a refused writer's open transaction).
        let cur: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT CAST(fenced AS SIGNED) FROM {} WHERE src = ? AND dst = ?",
            D.quote(crate::triggers::FENCE_TABLE)
        ))
        .bind(pair.0 as i64)
        .bind(pair.1 as i64)
        .fetch_optional(&self.pool)
        .await?;
        if cur == Some(on as i64) {
            return Ok(());
        }
        let q = crate::triggers::set_fence_sql(D);
        let r: Result<()> = async {
            let mut conn = self.begin_bounded().await?;
            let res = sqlx::query(&q)
                .bind(on as i32)
                .bind(move_id)
                .bind(pair.0 as i32)
                .bind(pair.1 as i32)
                .execute(&mut *conn)
                .await;
            self.end_bounded(conn, &q, res).await
        }
        .await;
        r.with_context(ctx)
    }
}

impl Mysql {
    /// A connection for one DDL or fence statement, its metadata-lock and row-lock waits
    /// bounded by [`crate::lockwait::timeout`] (whole seconds, rounded up: MariaDB's unit).
    async fn begin_bounded(&self) -> Result<sqlx::pool::PoolConnection<sqlx::MySql>> {
        let mut conn = self.pool.acquire().await?;
        let n = crate::lockwait::timeout_secs();
        if let Err(e) = sqlx::query(&format!(
            "SET SESSION lock_wait_timeout = {n}, innodb_lock_wait_timeout = {n}"
        ))
        .execute(&mut *conn)
        .await
        {
            conn.close_on_drop();
            return Err(e.into());
        }
        Ok(conn)
    }

    /// Restores the session's lock timeouts (or closes the connection), and turns a lock wait
    /// timeout (1205, metadata locks included; 1969, a fence raise's `max_statement_time`, which
    /// only a lock wait makes a one-row UPDATE reach) into a [`crate::lockwait::Blocked`]
    /// naming the sessions with a transaction open.
    async fn end_bounded(
        &self,
        mut conn: sqlx::pool::PoolConnection<sqlx::MySql>,
        stmt: &str,
        res: std::result::Result<sqlx::mysql::MySqlQueryResult, sqlx::Error>,
    ) -> Result<()> {
        let lock = res.as_ref().err().is_some_and(lock_timed_out);
        let holders = if lock {
            mysql_holders(&mut conn).await
        } else {
            None
        };
        let reset = sqlx::query(
            "SET SESSION lock_wait_timeout = DEFAULT, innodb_lock_wait_timeout = DEFAULT, \
             max_statement_time = DEFAULT",
        )
        .execute(&mut *conn)
        .await;
        if res.is_err() || reset.is_err() {
            conn.close_on_drop();
        }
        match res {
            Ok(_) => {
                reset?;
                Ok(())
            }
            Err(e) if lock => Err(anyhow::Error::new(e).context(crate::lockwait::Blocked {
                shard: self.shard.clone(),
                what: crate::lockwait::describe_stmt(stmt),
                holders,
            })),
            Err(e) => Err(e.into()),
        }
    }
}

/// A lock wait timeout: 1205 (row locks, and metadata locks too), or 1969, a fence raise's
/// `max_statement_time`, which only a lock wait makes a one-row UPDATE reach.
fn lock_timed_out(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .is_some_and(|e| matches!(e.number(), 1205 | 1969)),
        _ => false,
    }
}

/// The other sessions with a transaction open (InnoDB's view joined to the processlist): id,
/// command, how long the transaction has been open and the start of its current statement.
/// MariaDB names no metadata-lock holder without the METADATA_LOCK_INFO plugin, and an open
/// transaction on the table is what holds one.
async fn mysql_holders(conn: &mut sqlx::MySqlConnection) -> Option<String> {
    let q = sqlx::query_as::<_, (i64, String, i64, String)>(
        "SELECT CAST(p.ID AS SIGNED), COALESCE(p.COMMAND, ''), \
         CAST(TIMESTAMPDIFF(SECOND, t.trx_started, NOW()) AS SIGNED), \
         COALESCE(LEFT(p.INFO, 80), '') \
         FROM information_schema.INNODB_TRX t \
         JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id \
         WHERE p.ID <> CONNECTION_ID() ORDER BY t.trx_started LIMIT 5",
    )
    .fetch_all(conn);
    let rows = tokio::time::timeout(Duration::from_secs(2), q)
        .await
        .ok()?
        .ok()?;
    if rows.is_empty() {
        return None;
    }
    Some(
        rows.iter()
            .map(|(id, command, secs, info)| {
                let doing = if info.is_empty() {
                    "no statement running".to_string()
                } else {
                    format!("{info:?}")
                };
                format!("processlist id {id} ({command}, transaction open for {secs} s: {doing})")
            })
            .collect::<Vec<_>>()
            .join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wires_by_type() {
        assert_eq!(wire("bigint(20) unsigned"), Wire::Unsigned);
        assert_eq!(wire("tinyint(1)"), Wire::Signed);
        assert_eq!(wire("float"), Wire::F32);
        assert_eq!(wire("double"), Wire::F64);
        assert_eq!(wire("decimal(38,10)"), Wire::AsText);
        assert_eq!(wire("varbinary(10)"), Wire::Bytes);
        assert_eq!(wire("bit(64)"), Wire::AsUnsigned);
        assert_eq!(wire("enum('a','b')"), Wire::AsText);
        assert_eq!(wire("datetime(6)"), Wire::AsText);
    }
}
