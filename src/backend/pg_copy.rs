//! PostgreSQL page reads through `COPY (SELECT ...) TO STDOUT (FORMAT binary)`.
//!
//! Why not sqlx's row stream: reading both sides of a move for verification spent more time in
//! sqlx's per-row machinery (a stream of `PgRow`s, each with its own column metadata handle, then
//! one `try_get` per value) than PostgreSQL spent producing the rows; `COPY ... TO STDOUT` is
//! PostgreSQL's own bulk path, and its binary tuples decode into [`Value`]s with the same
//! precision as the binary protocol sqlx uses (integers and floats bit for bit). Measured with
//! `bench/verify.sh postgres` (see README, Benchmarks).
//!
//! `COPY` takes no parameters, so the statement's values are bound with `set_config` first and
//! read back with `current_setting` (see `Postgres::copy_range`): values are still bound, never
//! spliced. Both run in one transaction and the settings are transaction-local: behind a
//! transaction-pooling proxy (PgBouncer) two statements outside a transaction may run on
//! different server sessions, and a session-level setting left by another reader there would
//! move the page's bounds silently.

use anyhow::{anyhow, bail, Result};
use futures_util::TryStreamExt;
use sqlx::postgres::PgConnection;

use super::postgres::Wire;
use super::Value;
use crate::verify::canonical::ValueRef;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// The statement that binds `values` (their text forms, `None` for NULL) as the
/// transaction-local settings `reshard.p1`, `reshard.p2`, ... in one round trip.
pub(super) const BIND_SETTINGS: &str = "SELECT count(set_config('reshard.p' || i, v, true)) \
     FROM unnest($1::text[]) WITH ORDINALITY AS t(v, i)";

/// The placeholder for the `n`th (1-based) bound value, cast to `ty`.
pub(super) fn setting(n: usize, ty: &str) -> String {
    format!("CAST(current_setting('reshard.p{n}') AS {ty})")
}

/// One tuple's fields, in select-list order: `None` for NULL, else the field's bytes.
pub(super) type Fields<'b> = [Option<&'b [u8]>];

/// Runs `copy_stmt` (a `COPY (...) TO STDOUT (FORMAT binary)` of `n_fields` columns) and
/// hands each tuple's fields to `on_tuple`.
pub(super) async fn read(
    conn: &mut PgConnection,
    copy_stmt: &str,
    n_fields: usize,
    mut on_tuple: impl FnMut(&Fields<'_>) -> Result<()>,
) -> Result<()> {
    let mut stream = conn.copy_out_raw(copy_stmt).await?;
    let mut parser = Parser::new(n_fields);
    while let Some(chunk) = stream.try_next().await? {
        parser.feed(&chunk, &mut on_tuple)?;
    }
    parser.finish()
}

/// Decodes the binary COPY format: a header, then tuples (`i16` field count, then per field an
/// `i32` length, -1 for NULL, and the bytes), then the trailer (a field count of -1). Message
/// boundaries need not fall between tuples: a partial tuple waits for the next chunk.
struct Parser {
    n_fields: usize,
    pending: Vec<u8>,
    header_done: bool,
    trailer_seen: bool,
}

impl Parser {
    fn new(n_fields: usize) -> Self {
        Parser {
            n_fields,
            pending: Vec::new(),
            header_done: false,
            trailer_seen: false,
        }
    }

    fn feed(
        &mut self,
        chunk: &[u8],
        on_tuple: &mut impl FnMut(&Fields<'_>) -> Result<()>,
    ) -> Result<()> {
        if self.pending.is_empty() {
            // The usual case (PostgreSQL sends one tuple per message): no copy of the bytes.
            let used = self.parse(chunk, on_tuple)?;
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            self.pending.extend_from_slice(chunk);
            let buf = std::mem::take(&mut self.pending);
            let used = self.parse(&buf, on_tuple)?;
            self.pending = buf[used..].to_vec();
        }
        Ok(())
    }

    fn finish(&self) -> Result<()> {
        if !self.trailer_seen || !self.pending.is_empty() {
            bail!("COPY output ended inside a tuple (truncated stream)");
        }
        Ok(())
    }

    /// Parses every complete piece of `buf`; returns the bytes used.
    fn parse(
        &mut self,
        buf: &[u8],
        on_tuple: &mut impl FnMut(&Fields<'_>) -> Result<()>,
    ) -> Result<usize> {
        let mut pos = 0;
        if !self.header_done {
            let fixed = SIGNATURE.len() + 8;
            if buf.len() < fixed {
                return Ok(0);
            }
            if &buf[..SIGNATURE.len()] != SIGNATURE {
                bail!("COPY output is not in the binary format");
            }
            let ext = be_u32(&buf[SIGNATURE.len() + 4..fixed]) as usize;
            if buf.len() < fixed + ext {
                return Ok(0);
            }
            pos = fixed + ext;
            self.header_done = true;
        }
        let mut fields = Vec::with_capacity(self.n_fields);
        while pos < buf.len() {
            if self.trailer_seen {
                bail!("COPY output continues after its trailer");
            }
            fields.clear();
            match self.tuple(&buf[pos..], &mut fields)? {
                Tuple::Incomplete => break,
                Tuple::Trailer => {
                    self.trailer_seen = true;
                    pos += 2;
                }
                Tuple::Row(used) => {
                    on_tuple(&fields)?;
                    pos += used;
                }
            }
        }
        Ok(pos)
    }

    fn tuple<'b>(&self, b: &'b [u8], fields: &mut Vec<Option<&'b [u8]>>) -> Result<Tuple> {
        if b.len() < 2 {
            return Ok(Tuple::Incomplete);
        }
        let n = i16::from_be_bytes([b[0], b[1]]);
        if n == -1 {
            return Ok(Tuple::Trailer);
        }
        if n as usize != self.n_fields {
            bail!("COPY tuple has {n} fields, {} expected", self.n_fields);
        }
        let mut pos = 2;
        for _ in 0..self.n_fields {
            if b.len() < pos + 4 {
                return Ok(Tuple::Incomplete);
            }
            let len = i32::from_be_bytes([b[pos], b[pos + 1], b[pos + 2], b[pos + 3]]);
            pos += 4;
            if len < 0 {
                fields.push(None);
                continue;
            }
            let len = len as usize;
            if b.len() < pos + len {
                return Ok(Tuple::Incomplete);
            }
            fields.push(Some(&b[pos..pos + len]));
            pos += len;
        }
        Ok(Tuple::Row(pos))
    }
}

enum Tuple {
    Incomplete,
    Trailer,
    /// A complete tuple of this many bytes.
    Row(usize),
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A field that is not what its column's type sends. Small and `Copy`, so that the per-value
/// success path stays cheap; the column is named where it is turned into an error message.
#[derive(Debug, Clone, Copy, thiserror::Error)]
pub(super) enum BadField {
    #[error("{got} bytes where {want} were expected")]
    Length { got: usize, want: usize },
    #[error("text that is not UTF-8")]
    NotUtf8,
}

fn fixed<const N: usize>(b: &[u8]) -> Result<[u8; N], BadField> {
    b.try_into().map_err(|_| BadField::Length {
        got: b.len(),
        want: N,
    })
}

/// One field in its type's binary send format (`int8send`, `float8send`, ...), borrowed.
#[inline(always)]
pub(super) fn value_ref(w: Wire, field: Option<&[u8]>) -> Result<ValueRef<'_>, BadField> {
    let Some(b) = field else {
        return Ok(ValueRef::Null);
    };
    Ok(match w {
        Wire::I16 => ValueRef::Int(i16::from_be_bytes(fixed(b)?).into()),
        Wire::I32 => ValueRef::Int(i32::from_be_bytes(fixed(b)?).into()),
        Wire::I64 => ValueRef::Int(i64::from_be_bytes(fixed(b)?)),
        Wire::F32 => ValueRef::Float32(u32::from_be_bytes(fixed(b)?)),
        Wire::F64 => ValueRef::Float(u64::from_be_bytes(fixed(b)?)),
        Wire::Bool => ValueRef::Bool(fixed::<1>(b)?[0] != 0),
        Wire::Bytes => ValueRef::Bytes(b),
        Wire::Str | Wire::AsText => {
            ValueRef::Text(std::str::from_utf8(b).map_err(|_| BadField::NotUtf8)?)
        }
    })
}

/// A tuple as owned [`Value`]s.
pub(super) fn row(wires: &[Wire], fields: &Fields<'_>) -> Result<Vec<Value>> {
    wires
        .iter()
        .zip(fields)
        .enumerate()
        .map(|(i, (&w, &f))| {
            value_ref(w, f)
                .map(Value::from)
                .map_err(|e| anyhow!("column {}: {e}", i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<u8> {
        let mut h = SIGNATURE.to_vec();
        h.extend_from_slice(&0u32.to_be_bytes());
        h.extend_from_slice(&0u32.to_be_bytes());
        h
    }

    fn tuple(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut t = (fields.len() as i16).to_be_bytes().to_vec();
        for f in fields {
            match f {
                None => t.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(b) => {
                    t.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    t.extend_from_slice(b);
                }
            }
        }
        t
    }

    fn stream() -> (Vec<u8>, Vec<Vec<Value>>) {
        let mut s = header();
        s.extend(tuple(&[
            Some(&7i64.to_be_bytes()),
            Some(b"caf\xc3\xa9"),
            Some(&(-0.0f64).to_bits().to_be_bytes()),
        ]));
        s.extend(tuple(&[
            Some(&(-1i64).to_be_bytes()),
            None,
            Some(&f64::NAN.to_bits().to_be_bytes()),
        ]));
        s.extend_from_slice(&(-1i16).to_be_bytes());
        let rows = vec![
            vec![
                Value::Int(7),
                Value::Text("café".into()),
                Value::from_f64(-0.0),
            ],
            vec![Value::Int(-1), Value::Null, Value::from_f64(f64::NAN)],
        ];
        (s, rows)
    }

    const W: [Wire; 3] = [Wire::I64, Wire::Str, Wire::F64];

    fn run(chunks: &[&[u8]]) -> Result<Vec<Vec<Value>>> {
        let mut p = Parser::new(W.len());
        let mut rows = Vec::new();
        for c in chunks {
            p.feed(c, &mut |f| {
                rows.push(row(&W, f)?);
                Ok(())
            })?;
        }
        p.finish()?;
        Ok(rows)
    }

    #[test]
    fn decodes_whole_and_split_at_every_byte() {
        let (s, want) = stream();
        assert_eq!(run(&[&s]).unwrap(), want);
        for cut in 0..=s.len() {
            let (a, b) = s.split_at(cut);
            assert_eq!(run(&[a, b]).unwrap(), want, "split at {cut}");
        }
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(run(&bytes).unwrap(), want);
    }

    #[test]
    fn truncated_or_malformed_streams_fail() {
        let (s, _) = stream();
        assert!(run(&[&s[..s.len() - 2]]).is_err(), "no trailer");
        assert!(run(&[&s[..s.len() - 5]]).is_err(), "cut inside a tuple");
        assert!(run(&[b"7\tx\n"]).is_err(), "text format");
        let mut wrong = header();
        wrong.extend(tuple(&[Some(&7i32.to_be_bytes()), None, None]));
        assert!(run(&[&wrong]).is_err(), "int4 bytes for an int8 column");
        let mut extra = s.clone();
        extra.extend(tuple(&[None, None, None]));
        assert!(run(&[&extra]).is_err(), "data after the trailer");
        let mut bad = header();
        bad.extend(tuple(&[None, Some(b"\xff"), None]));
        assert!(run(&[&bad]).is_err(), "invalid UTF-8");
    }
}
