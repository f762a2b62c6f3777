//! Page reads of the SQLite backend, through rusqlite on blocking threads.
//!
//! sqlx runs every SQLite connection on a worker thread that hands each row to the reading task
//! through a channel, so the two threads wake each other for nearly every row: reading 10^6
//! rows on both sides of a move spent more time in futex and eventfd wake-ups, cross-thread
//! frees and per-value copies than in SQLite itself. Page reads (`read_range`, which copy and
//! verification page through) are the bulk of what reshard reads, so they step the statement
//! directly with rusqlite, which links the same bundled SQLite library, on tokio's blocking
//! threads, keeping a few connections open. Everything else (writes, DDL, fences, describe)
//! stays on the sqlx pool. A database without a plain file (in memory, a `file:` URI) is read
//! through sqlx as before.
//!
//! Values are decoded by storage class exactly as the sqlx path does (INTEGER as i64, REAL as
//! the f64's bits, TEXT as UTF-8, BLOB, NULL), and bound as it binds them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags};

use super::Value;
use crate::verify::canonical::ValueRef as Borrowed;

/// Idle connections kept for the next read (the sqlx pool has 4 too).
const KEEP: usize = 4;

pub(crate) struct Pages {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Pages {
    /// Page reads for the database file `path`, or None when it is not a plain file.
    pub fn for_file(path: &Path) -> Option<Arc<Pages>> {
        let s = path.to_string_lossy();
        if s.is_empty() || s == ":memory:" || s.starts_with("file:") || !path.is_file() {
            return None;
        }
        Some(Arc::new(Pages {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        }))
    }

    /// Runs the query `sql` (which selects `ncols` plain columns) with `args` bound, on a
    /// blocking thread; returns its rows.
    pub async fn query(
        self: &Arc<Self>,
        sql: String,
        args: Vec<Value>,
        ncols: usize,
    ) -> Result<Vec<Vec<Value>>> {
        self.fold(sql, args, Vec::new(), move |out, r| {
            out.push(row_values(r, ncols)?);
            Ok(())
        })
        .await
    }

    /// Runs the query `sql` with `args` bound on a blocking thread, handing each row to
    /// `on_row` with `acc`; returns `acc`.
    pub async fn fold<A: Send + 'static>(
        self: &Arc<Self>,
        sql: String,
        args: Vec<Value>,
        acc: A,
        on_row: impl FnMut(&mut A, &rusqlite::Row<'_>) -> Result<()> + Send + 'static,
    ) -> Result<A> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.fold_blocking(&sql, &args, acc, on_row))
            .await
            .context("a SQLite read thread ended abnormally")?
    }

    /// Runs `sql` with `args` bound on a blocking thread and hands its rows, mapped by `map`,
    /// to the returned receiver in batches of up to `batch` as they come: memory stays bounded
    /// (the thread waits while two batches are unread) and the hand-off between threads is
    /// per batch, not per row. Dropping the receiver stops the query.
    pub fn stream<T: Send + 'static>(
        self: &Arc<Self>,
        sql: String,
        args: Vec<Value>,
        batch: usize,
        mut map: impl FnMut(&rusqlite::Row<'_>) -> Result<T> + Send + 'static,
    ) -> tokio::sync::mpsc::Receiver<Result<Vec<T>>> {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let me = self.clone();
        let batch = batch.max(1);
        tokio::task::spawn_blocking(move || {
            let res = me.fold_blocking(&sql, &args, Vec::new(), |acc: &mut Vec<T>, r| {
                acc.push(map(r)?);
                if acc.len() >= batch {
                    let full = std::mem::replace(acc, Vec::with_capacity(batch));
                    if tx.blocking_send(Ok(full)).is_err() {
                        anyhow::bail!("the reader went away");
                    }
                }
                Ok(())
            });
            // A send fails only when the receiver is gone: nobody is left to tell.
            let _ = match res {
                Ok(rest) if rest.is_empty() => Ok(()),
                Ok(rest) => tx.blocking_send(Ok(rest)),
                Err(e) => tx.blocking_send(Err(e)),
            };
        });
        rx
    }

    fn fold_blocking<A>(
        &self,
        sql: &str,
        args: &[Value],
        mut acc: A,
        mut on_row: impl FnMut(&mut A, &rusqlite::Row<'_>) -> Result<()>,
    ) -> Result<A> {
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        let conn = match idle {
            Some(c) => c,
            None => self.open()?,
        };
        {
            let mut st = conn.prepare_cached(sql)?;
            let mut rows = st.query(rusqlite::params_from_iter(args.iter().map(Param)))?;
            while let Some(r) = rows.next()? {
                on_row(&mut acc, r)?;
            }
        }
        if let Ok(mut v) = self.idle.lock() {
            if v.len() < KEEP {
                v.push(conn);
            }
        }
        Ok(acc)
    }

    fn open(&self) -> Result<Connection> {
        // Read-write without CREATE, made query-only: a read-only connection could not roll
        // back a hot journal left by a killed writer (SQLITE_READONLY_ROLLBACK).
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| anyhow!("cannot open the SQLite database for reading: {e}"))?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(conn)
    }
}

fn row_values(r: &rusqlite::Row<'_>, ncols: usize) -> Result<Vec<Value>> {
    (0..ncols)
        .map(|i| value_ref(r, i).map(Value::from))
        .collect()
}

/// Column `i` of a row, by storage class: INTEGER as i64, REAL as the f64's bits, TEXT as UTF-8
/// (an error otherwise), BLOB, NULL.
pub(crate) fn value_ref<'r>(r: &'r rusqlite::Row<'_>, i: usize) -> Result<Borrowed<'r>> {
    Ok(match r.get_ref(i)? {
        ValueRef::Null => Borrowed::Null,
        ValueRef::Integer(v) => Borrowed::Int(v),
        ValueRef::Real(f) => Borrowed::Float(f.to_bits()),
        ValueRef::Text(b) => Borrowed::Text(
            std::str::from_utf8(b)
                .map_err(|_| anyhow!("column {i} holds TEXT that is not valid UTF-8"))?,
        ),
        ValueRef::Blob(b) => Borrowed::Bytes(b),
    })
}

/// A value bound as the sqlx path binds it (`sqlite::bind`).
struct Param<'a>(&'a Value);

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        use rusqlite::types::Value as V;
        Ok(match self.0 {
            Value::Null => ToSqlOutput::Owned(V::Null),
            Value::Bool(b) => ToSqlOutput::Owned(V::Integer(i64::from(*b))),
            Value::Int(i) => ToSqlOutput::Owned(V::Integer(*i)),
            Value::UInt(u) => ToSqlOutput::Owned(V::Integer(
                i64::try_from(*u)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
            )),
            Value::Float(bits) => ToSqlOutput::Owned(V::Real(f64::from_bits(*bits))),
            Value::Float32(bits) => ToSqlOutput::Owned(V::Real(f64::from(f32::from_bits(*bits)))),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Pages {
        fn rows_blocking(&self, sql: &str, args: &[Value], n: usize) -> Result<Vec<Vec<Value>>> {
            self.fold_blocking(sql, args, Vec::new(), |out, r| {
                out.push(row_values(r, n)?);
                Ok(())
            })
        }
    }

    fn db() -> (tempfile::TempDir, Arc<Pages>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, a, b);
             INSERT INTO t VALUES (1, NULL, 'é🎉'), (2, -0.0, x'00ff'), (3, 5e-324, 9223372036854775807),
                                  (4, '12', CAST(x'ff' AS TEXT));",
        )
        .unwrap();
        let pages = Pages::for_file(&path).expect("a plain file");
        (dir, pages)
    }

    #[test]
    fn values_by_storage_class_exactly() {
        let (_d, p) = db();
        let rows = p
            .rows_blocking(
                "SELECT id, a, b FROM t WHERE id < ? ORDER BY id",
                &[Value::Int(4)],
                3,
            )
            .unwrap();
        assert_eq!(
            rows,
            vec![
                vec![Value::Int(1), Value::Null, Value::Text("é🎉".into())],
                vec![
                    Value::Int(2),
                    Value::from_f64(-0.0),
                    Value::Bytes(vec![0, 255])
                ],
                vec![Value::Int(3), Value::from_f64(5e-324), Value::Int(i64::MAX)],
            ]
        );
    }

    #[test]
    fn binds_like_the_sqlx_path() {
        let (_d, p) = db();
        let q = "SELECT id FROM t WHERE b = ? OR b = ? OR a = ? OR id = ? ORDER BY id";
        let args = [
            Value::Text("é🎉".into()),
            Value::Bytes(vec![0, 255]),
            Value::Text("12".into()),
            Value::UInt(3),
        ];
        let ids: Vec<Value> = p
            .rows_blocking(q, &args, 1)
            .unwrap()
            .into_iter()
            .map(|mut r| r.remove(0))
            .collect();
        assert_eq!(ids, [1, 2, 3, 4].map(Value::Int));
        assert!(p
            .rows_blocking(q, &vec![Value::UInt(u64::MAX); 4], 1)
            .is_err());
    }

    #[test]
    fn text_that_is_not_utf8_is_an_error() {
        let (_d, p) = db();
        let e = p
            .rows_blocking("SELECT b FROM t WHERE id = 4", &[], 1)
            .unwrap_err();
        assert!(format!("{e:#}").contains("not valid UTF-8"), "{e:#}");
    }

    #[tokio::test]
    async fn streams_rows_in_batches_and_errors_in_order() {
        let (_d, p) = db();
        let sql = "SELECT id FROM t ORDER BY id".to_string();
        let mut rx = p.stream(sql.clone(), vec![], 3, |r| Ok(r.get::<_, i64>(0)?));
        let mut got = Vec::new();
        while let Some(b) = rx.recv().await {
            got.push(b.unwrap());
        }
        assert_eq!(got, vec![vec![1, 2, 3], vec![4]]);
        // A row that fails to map ends the stream with the error, after the rows before it.
        let mut rx = p.stream(sql.clone(), vec![], 1, |r| value_ref(r, 0).map(Value::from));
        let mut rx_text = p.stream("SELECT b FROM t ORDER BY id".into(), vec![], 2, |r| {
            value_ref(r, 0).map(Value::from)
        });
        assert_eq!(rx.recv().await.unwrap().unwrap(), vec![Value::Int(1)]);
        drop(rx); // the query stops; nothing hangs
        assert_eq!(rx_text.recv().await.unwrap().unwrap().len(), 2);
        assert!(rx_text.recv().await.unwrap().is_err(), "row 4 is not UTF-8");
        assert!(rx_text.recv().await.is_none());
    }

    #[test]
    fn only_plain_files() {
        assert!(Pages::for_file(Path::new(":memory:")).is_none());
        assert!(Pages::for_file(Path::new("file:x?mode=memory")).is_none());
        assert!(Pages::for_file(Path::new("/nonexistent/x.db")).is_none());
    }
}
