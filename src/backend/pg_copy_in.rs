//! The copy's writes on PostgreSQL through `COPY ... FROM STDIN` (text format), the server's
//! own bulk path: no statement is planned per batch and no value is cast by an expression,
//! only each column type's input function runs, the same one `CAST(text AS type)` runs, so
//! the rows stored are the ones the upsert would store.
//!
//! COPY inserts and never updates, so it is only tried for rows the destination is expected
//! not to hold (a copy batch; preflight refused a destination holding the move's keys). A batch
//! written and committed by a run killed before it recorded its cursor is copied again by the
//! next run: that COPY meets its own rows, fails on the primary key as a whole (nothing of it
//! is kept) and the batch goes through the upsert instead, which overwrites them. Either way
//! the batch is one transaction with the bypass flag set, like every other write of reshard's.

use anyhow::{Context as _, Result};
use sqlx::PgPool;

use super::sql;
use super::{TableSchema, Value};
use crate::ident::Dialect;

const D: Dialect = Dialect::Postgres;

/// The SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";

/// Appends `rows` in COPY's text format: tab-separated, `\N` for NULL, and backslash, tab,
/// newline and carriage return escaped (so no value can end the data early).
pub(super) fn encode(rows: &[Vec<Value>], out: &mut Vec<u8>) {
    for row in rows {
        for (i, v) in row.iter().enumerate() {
            if i > 0 {
                out.push(b'\t');
            }
            match super::postgres::text_form(v) {
                None => out.extend_from_slice(b"\\N"),
                Some(s) => escape_into(s.as_bytes(), out),
            }
        }
        out.push(b'\n');
    }
}

fn escape_into(s: &[u8], out: &mut Vec<u8>) {
    for &b in s {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// Whether `e` is the server refusing a row whose key is already there.
pub(crate) fn is_unique_violation(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<sqlx::Error>()
            .and_then(|e| e.as_database_error())
            .and_then(|d| d.code())
            .is_some_and(|code| code == UNIQUE_VIOLATION)
    })
}

/// Whether the connected role may set `session_replication_role`: a superuser, or (from
/// PostgreSQL 15) a role granted `SET` on it.
pub(super) async fn may_skip_triggers(pool: &PgPool) -> Result<bool> {
    let (superuser, version): (bool, i32) = sqlx::query_as(
        "SELECT current_setting('is_superuser') = 'on', \
                current_setting('server_version_num')::int",
    )
    .fetch_one(pool)
    .await?;
    if superuser || version < 150000 {
        return Ok(superuser);
    }
    let granted: bool =
        sqlx::query_scalar("SELECT has_parameter_privilege('session_replication_role', 'SET')")
            .fetch_one(pool)
            .await?;
    Ok(granted)
}

/// Inserts `rows` (every column, schema order) with one COPY in one transaction that the
/// capture triggers do not record and the guards let through. All or nothing.
///
/// With `skip_triggers` the transaction also sets `session_replication_role = replica`, as
/// logical replication's apply does, so that no row trigger fires at all. reshard's own are
/// no-ops for its writes anyway, but a BEFORE ROW trigger (the guard) makes COPY insert row
/// by row instead of in multi-row buffers, which costs more than half of its speed, and the
/// table's own triggers would rewrite or log again rows that are copies.
pub(super) async fn insert_quiet(
    pool: &PgPool,
    schema: &TableSchema,
    rows: &[Vec<Value>],
    skip_triggers: bool,
) -> Result<u64> {
    sql::check_table(&schema.name)?;
    let mut data = Vec::with_capacity(rows.len() * 64);
    encode(rows, &mut data);
    let stmt = format!(
        "COPY {} ({}) FROM STDIN",
        D.quote(&schema.name),
        sql::column_list(D, schema)
    );
    let mut tx = pool.begin().await?;
    // Transaction-local: the setting cannot leak to the pool's next user.
    sqlx::query("SELECT set_config('reshard.bypass', 'on', true)")
        .execute(&mut *tx)
        .await?;
    if skip_triggers {
        sqlx::query("SET LOCAL session_replication_role = replica")
            .execute(&mut *tx)
            .await?;
    }
    let mut copy = tx.copy_in_raw(&stmt).await?;
    if let Err(e) = copy.send(data).await {
        // The server discards what it had; the transaction rolls back when dropped.
        let _ = copy.abort("reshard: sending the batch failed").await;
        return Err(e.into());
    }
    let n = copy.finish().await?;
    tx.commit().await.context("committing the COPY")?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_could_end_a_field_or_the_data_are_escaped() {
        let rows = vec![
            vec![
                Value::Int(1),
                Value::Text("a\tb\nc\rd\\e".into()),
                Value::Null,
            ],
            vec![
                Value::Int(2),
                Value::Text("\\.".into()),
                Value::Text("\\N".into()),
            ],
            vec![
                Value::Bool(true),
                Value::Bytes(vec![0, 255]),
                Value::Text(String::new()),
            ],
        ];
        let mut out = Vec::new();
        encode(&rows, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1\ta\\tb\\nc\\rd\\\\e\t\\N\n2\t\\\\.\t\\\\N\nt\t\\\\x00ff\t\n"
        );
    }
}
