//! The copy between two PostgreSQL shards when no row needs routing in Rust (the move's SQL
//! filter selects exactly its rows): the source's `COPY (SELECT ...) TO STDOUT` streams straight
//! into the destination's `COPY ... FROM STDIN`, chunk by chunk, in COPY's text format, the
//! format `pg_dump` moves data in. No value is decoded or encoded by reshard: each column's
//! output function runs at the source and its input function at the destination, as in
//! `psql \copy ... | psql \copy`, the bulk path the benchmark compares against.
//!
//! A batch is still one page in primary-key order (`ORDER BY pk LIMIT n`) and one transaction
//! at the destination, with the bypass flag and, where the role may, `session_replication_role
//! = replica` (src/backend/pg_copy_in.rs). Its cursor is the primary key of its last line, read
//! from the stream's tail; so the pipe is used only when every primary-key column is an
//! integer, whose text form needs no unescaping. A batch that a killed run wrote but did not
//! record fails here on the primary key as a whole, and the caller writes it again through the
//! upsert.

use anyhow::{anyhow, Context as _, Result};
use futures_util::StreamExt as _;

use super::{Postgres, Settings, D};
use crate::backend::sql::{self, check_table};
use crate::backend::{pg_copy, KeyFilter, PkValues, TableSchema, Value};

/// Bytes gathered from the source's messages before they are sent on to the destination.
const SEND_BYTES: usize = 256 << 10;

/// What one piped batch moved.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Piped {
    pub rows: u64,
    pub bytes: u64,
    /// The primary key of the batch's last row; None when it had none.
    pub last: Option<PkValues>,
}

/// Whether a table's rows can be piped: every primary-key column an integer.
pub fn pipeable(schema: &TableSchema) -> bool {
    schema.primary_key.iter().all(|p| {
        schema
            .columns
            .iter()
            .find(|c| &c.name == p)
            .is_some_and(|c| {
                matches!(
                    c.data_type.as_str(),
                    "smallint" | "integer" | "bigint" | "int2" | "int4" | "int8"
                )
            })
    })
}

impl Postgres {
    /// Copies up to `limit` rows after `after` passing `filter`, in primary-key order, from
    /// this shard into `dst`, quiet (see the module's notes). All or nothing at `dst`.
    pub async fn pipe_to(
        &self,
        dst: &Postgres,
        schema: &TableSchema,
        key_column: &str,
        after: Option<&PkValues>,
        filter: &KeyFilter,
        limit: usize,
    ) -> Result<Piped> {
        check_table(&schema.name)?;
        if !pipeable(schema) {
            return Err(anyhow!(
                "{}: a primary key that is not all integers",
                schema.name
            ));
        }
        let pk_idx = sql::pk_indexes(schema)?;
        let mut bound = Settings::default();
        let w = sql::where_clause_range(
            D,
            schema,
            key_column,
            after,
            None,
            filter,
            &mut bound.placeholder(),
        )?;
        let cols = sql::column_list(D, schema);
        let out = format!(
            "COPY (SELECT {cols} FROM {} WHERE {w} ORDER BY {} LIMIT {limit}) TO STDOUT",
            D.quote(&schema.name),
            sql::pk_list(D, schema),
        );
        let into = format!("COPY {} ({cols}) FROM STDIN", D.quote(&schema.name));
        let texts: Vec<Option<String>> = bound.values()?.iter().map(super::text_form).collect();
        let skip = dst.may_skip_triggers().await?;

        let mut stx = self
            .pool
            .begin()
            .await
            .with_context(|| self.ctx("read", &schema.name))?;
        if !texts.is_empty() {
            sqlx::query(pg_copy::BIND_SETTINGS)
                .bind(texts)
                .execute(&mut *stx)
                .await
                .with_context(|| self.ctx("read", &schema.name))?;
        }
        let dctx = || dst.ctx("copy into", &schema.name);
        let mut dtx = dst.pool.begin().await.with_context(dctx)?;
        sqlx::query("SELECT set_config('reshard.bypass', 'on', true)")
            .execute(&mut *dtx)
            .await
            .with_context(dctx)?;
        if skip {
            sqlx::query("SET LOCAL session_replication_role = replica")
                .execute(&mut *dtx)
                .await
                .with_context(dctx)?;
        }
        let mut tail = Tail::default();
        {
            let mut copy = dtx.copy_in_raw(&into).await.with_context(dctx)?;
            let mut stream = stx
                .copy_out_raw(&out)
                .await
                .with_context(|| self.ctx("read", &schema.name))?;
            // The source sends a message per row: sent one by one, each was a write and a
            // flush of its own, and the pipe ran at half the speed of psql's.
            let mut buf: Vec<u8> = Vec::with_capacity(SEND_BYTES + (64 << 10));
            let mut end = false;
            while !end {
                let chunk = stream.next().await;
                let sent = match chunk {
                    Some(Ok(c)) => {
                        tail.feed(&c);
                        buf.extend_from_slice(&c);
                        if buf.len() < SEND_BYTES {
                            continue;
                        }
                        let r = copy.send(buf.as_slice()).await.map(|_| ());
                        buf.clear();
                        r.map_err(anyhow::Error::from)
                    }
                    Some(Err(e)) => {
                        Err(anyhow::Error::from(e).context(self.ctx("read", &schema.name)))
                    }
                    None if buf.is_empty() => break,
                    None => {
                        end = true;
                        let r = copy.send(buf.as_slice()).await.map(|_| ());
                        buf.clear();
                        r.map_err(anyhow::Error::from)
                    }
                };
                if let Err(e) = sent {
                    // The server discards what it had; the transaction rolls back when dropped.
                    let _ = copy.abort("reshard: the source's stream failed").await;
                    return Err(e.context(dctx()));
                }
            }
            copy.finish().await.with_context(dctx)?;
        }
        stx.commit()
            .await
            .with_context(|| self.ctx("read", &schema.name))?;
        dtx.commit().await.with_context(dctx)?;
        let last = match tail.last_line() {
            Some(line) => Some(pk_of_line(line, &pk_idx)?),
            None => None,
        };
        Ok(Piped {
            rows: tail.lines,
            bytes: tail.bytes,
            last,
        })
    }
}

/// The primary key of one COPY text line: its integer fields at `pk_idx`.
fn pk_of_line(line: &[u8], pk_idx: &[usize]) -> Result<PkValues> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b'\t').collect();
    pk_idx
        .iter()
        .map(|&i| {
            let f = fields
                .get(i)
                .ok_or_else(|| anyhow!("a COPY line with {} fields", fields.len()))?;
            std::str::from_utf8(f)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .map(Value::Int)
                .ok_or_else(|| anyhow!("a primary-key field that is not an integer"))
        })
        .collect()
}

/// The end of a COPY text stream seen chunk by chunk: lines and bytes counted, and the last
/// complete line kept (every row ends in a newline; newlines inside values are escaped).
#[derive(Debug, Default)]
struct Tail {
    lines: u64,
    bytes: u64,
    /// The bytes since the last newline.
    open: Vec<u8>,
    /// The last complete line, without its newline.
    last: Vec<u8>,
}

impl Tail {
    fn feed(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        let Some(j) = chunk.iter().rposition(|&b| b == b'\n') else {
            self.open.extend_from_slice(chunk);
            return;
        };
        self.lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        match chunk[..j].iter().rposition(|&b| b == b'\n') {
            Some(i) => {
                self.last.clear();
                self.last.extend_from_slice(&chunk[i + 1..j]);
            }
            None => {
                self.last = std::mem::take(&mut self.open);
                self.last.extend_from_slice(&chunk[..j]);
            }
        }
        self.open.clear();
        self.open.extend_from_slice(&chunk[j + 1..]);
    }

    fn last_line(&self) -> Option<&[u8]> {
        (self.lines > 0).then_some(self.last.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(chunks: &[&[u8]]) -> Tail {
        let mut t = Tail::default();
        for c in chunks {
            t.feed(c);
        }
        t
    }

    #[test]
    fn the_last_line_is_found_however_the_stream_is_cut() {
        let data: &[u8] = b"1\ta\n22\tb\\nc\n333\td\n";
        for cut in 0..data.len() {
            for cut2 in cut..data.len() {
                let t = fed(&[&data[..cut], &data[cut..cut2], &data[cut2..]]);
                assert_eq!(t.lines, 3, "{cut} {cut2}");
                assert_eq!(t.bytes, data.len() as u64);
                assert_eq!(t.last_line(), Some(&b"333\td"[..]), "{cut} {cut2}");
            }
        }
        assert_eq!(fed(&[]).last_line(), None);
        assert_eq!(fed(&[b""]).last_line(), None);
        assert_eq!(fed(&[b"7\tx", b"\n"]).last_line(), Some(&b"7\tx"[..]));
    }

    #[test]
    fn primary_keys_are_read_from_their_fields() {
        assert_eq!(
            pk_of_line(b"5\t\\N\t-12", &[2, 0]).unwrap(),
            vec![Value::Int(-12), Value::Int(5)]
        );
        assert!(pk_of_line(b"5\tx", &[1]).is_err());
        assert!(pk_of_line(b"5", &[1]).is_err());
    }
}
