//! Catalog tables of verification (migration `20240105000001_verify`): chunk checksums, the
//! position of each pass, reports, and the row counts recorded at job creation for the audit.

use anyhow::{Context, Result};

use super::{now_text, Catalog, Pool};

/// One recorded chunk: the primary-key range `(after, last]` as JSON (None = open end).
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRow {
    pub chunk_no: i64,
    pub after_json: Option<String>,
    pub last_json: Option<String>,
    pub src_rows: i64,
    pub dst_rows: i64,
    pub src_sha1: String,
    pub dst_sha1: String,
    pub ok: bool,
    pub diff_json: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VerifyProgress {
    pub pass: i64,
    pub cursor_json: Option<String>,
    pub next_chunk: i64,
    pub done: bool,
    pub chunk_rows: i64,
    pub chunks_computed: i64,
}

type ChunkTuple = (
    i64,
    Option<String>,
    Option<String>,
    i64,
    i64,
    String,
    String,
    i64,
    Option<String>,
);

impl Catalog {
    pub async fn verify_progress(
        &self,
        job: &str,
        mv: &str,
        table: &str,
    ) -> Result<Option<VerifyProgress>> {
        let row: Option<(i64, Option<String>, i64, i64, i64, i64)> = with_pool!(self, p => {
            sqlx::query_as(
                "SELECT pass, cursor_json, next_chunk, done, chunk_rows, chunks_computed \
                 FROM verify_progress WHERE job_id = $1 AND move_id = $2 AND table_name = $3",
            )
            .bind(job).bind(mv).bind(table).fetch_optional(p).await
        })
        .with_context(|| format!("catalog {}: reading verification progress", self.label))?;
        Ok(row.map(|r| VerifyProgress {
            pass: r.0,
            cursor_json: r.1,
            next_chunk: r.2,
            done: r.3 != 0,
            chunk_rows: r.4,
            chunks_computed: r.5,
        }))
    }

    /// The chunks recorded for a move's table, in order.
    pub async fn verify_chunks(&self, job: &str, mv: &str, table: &str) -> Result<Vec<ChunkRow>> {
        let rows: Vec<ChunkTuple> = with_pool!(self, p => {
            sqlx::query_as(
                "SELECT chunk_no, after_json, last_json, src_rows, dst_rows, src_sha1, dst_sha1, \
                 ok, diff_json FROM verify_chunks \
                 WHERE job_id = $1 AND move_id = $2 AND table_name = $3 ORDER BY chunk_no",
            )
            .bind(job).bind(mv).bind(table).fetch_all(p).await
        })
        .with_context(|| format!("catalog {}: reading verification chunks", self.label))?;
        Ok(rows
            .into_iter()
            .map(|r| ChunkRow {
                chunk_no: r.0,
                after_json: r.1,
                last_json: r.2,
                src_rows: r.3,
                dst_rows: r.4,
                src_sha1: r.5,
                dst_sha1: r.6,
                ok: r.7 != 0,
                diff_json: r.8,
            })
            .collect())
    }

    /// Starts a new full pass over a move's table: earlier chunks are dropped, the position reset.
    pub async fn verify_start_pass(
        &self,
        job: &str,
        mv: &str,
        table: &str,
        chunk_rows: i64,
    ) -> Result<()> {
        let now = now_text();
        let res: Result<()> = with_pool!(self, p => async {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            sqlx::query(
                "DELETE FROM verify_chunks WHERE job_id = $1 AND move_id = $2 AND table_name = $3",
            )
            .bind(job).bind(mv).bind(table).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO verify_progress (job_id, move_id, table_name, pass, cursor_json, \
                 next_chunk, done, chunk_rows, chunks_computed, started_at, updated_at) \
                 VALUES ($1, $2, $3, 1, NULL, 0, 0, $4, 0, $5, $5) \
                 ON CONFLICT (job_id, move_id, table_name) DO UPDATE SET \
                 pass = verify_progress.pass + 1, cursor_json = NULL, next_chunk = 0, done = 0, \
                 chunk_rows = $4, started_at = $5, updated_at = $5",
            )
            .bind(job).bind(mv).bind(table).bind(chunk_rows).bind(&now)
            .execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO events (job_id, move_id, at, kind, detail) \
                 VALUES ($1, $2, $3, 'verify_pass', $4)",
            )
            .bind(job).bind(mv).bind(&now).bind(format!("table {table}: full pass started"))
            .execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(())
        }.await);
        res.with_context(|| format!("catalog {}: starting a verification pass", self.label))
    }

    /// Records a chunk (insert or replace). `advance`: it is the next chunk of the pass, so the
    /// pass's position moves past it (and the pass is done when the chunk is open-ended).
    pub async fn verify_record_chunk(
        &self,
        job: &str,
        mv: &str,
        table: &str,
        c: &ChunkRow,
        advance: bool,
        chunk_rows: i64,
    ) -> Result<()> {
        let now = now_text();
        let res: Result<()> = with_pool!(self, p => async {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            sqlx::query(
                "INSERT INTO verify_chunks (job_id, move_id, table_name, chunk_no, after_json, \
                 last_json, src_rows, dst_rows, src_sha1, dst_sha1, ok, diff_json, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (job_id, move_id, table_name, chunk_no) DO UPDATE SET \
                 after_json = $5, last_json = $6, src_rows = $7, dst_rows = $8, src_sha1 = $9, \
                 dst_sha1 = $10, ok = $11, diff_json = $12, updated_at = $13",
            )
            .bind(job).bind(mv).bind(table).bind(c.chunk_no).bind(&c.after_json)
            .bind(&c.last_json).bind(c.src_rows).bind(c.dst_rows).bind(&c.src_sha1)
            .bind(&c.dst_sha1).bind(c.ok as i64).bind(&c.diff_json).bind(&now)
            .execute(&mut *tx).await?;
            if advance {
                sqlx::query(
                    "UPDATE verify_progress SET cursor_json = $1, next_chunk = $2, done = $3, \
                     chunk_rows = $4, chunks_computed = chunks_computed + 1, updated_at = $5 \
                     WHERE job_id = $6 AND move_id = $7 AND table_name = $8",
                )
                .bind(&c.last_json).bind(c.chunk_no + 1).bind(c.last_json.is_none() as i64)
                .bind(chunk_rows).bind(&now).bind(job).bind(mv).bind(table)
                .execute(&mut *tx).await?;
            } else {
                sqlx::query(
                    "UPDATE verify_progress SET chunks_computed = chunks_computed + 1, \
                     updated_at = $1 WHERE job_id = $2 AND move_id = $3 AND table_name = $4",
                )
                .bind(&now).bind(job).bind(mv).bind(table)
                .execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        }.await);
        res.with_context(|| format!("catalog {}: recording a verification chunk", self.label))
    }

    /// Stores a report (JSON) with an event.
    pub async fn verify_save_report(
        &self,
        job: &str,
        mv: Option<&str>,
        ok: bool,
        report_json: &str,
    ) -> Result<()> {
        let now = now_text();
        let res: Result<()> = with_pool!(self, p => async {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            sqlx::query(
                "INSERT INTO verify_reports (job_id, move_id, at, ok, report_json) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(job).bind(mv).bind(&now).bind(ok as i64).bind(report_json)
            .execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO events (job_id, move_id, at, kind, detail) \
                 VALUES ($1, $2, $3, 'verified', $4)",
            )
            .bind(job).bind(mv).bind(&now)
            .bind(if ok { "match" } else { "MISMATCH" })
            .execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(())
        }.await);
        res.with_context(|| format!("catalog {}: storing a verification report", self.label))
    }

    /// The latest stored report of a move (None: the job's audit reports).
    pub async fn verify_last_report(&self, job: &str, mv: Option<&str>) -> Result<Option<String>> {
        let r: Option<String> = with_pool!(self, p => {
            sqlx::query_scalar(
                "SELECT report_json FROM verify_reports WHERE job_id = $1 \
                 AND ((move_id IS NULL AND $2 IS NULL) OR move_id = $2) ORDER BY id DESC LIMIT 1",
            )
            .bind(job).bind(mv).fetch_optional(p).await
        })
        .with_context(|| format!("catalog {}: reading verification reports", self.label))?;
        Ok(r)
    }

    pub async fn row_counts(&self, job: &str) -> Result<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = with_pool!(self, p => {
            sqlx::query_as(
                "SELECT table_name, row_count FROM job_row_counts WHERE job_id = $1 \
                 ORDER BY table_name",
            )
            .bind(job).fetch_all(p).await
        })
        .with_context(|| format!("catalog {}: reading row counts", self.label))?;
        Ok(rows.into_iter().map(|(t, n)| (t, n as u64)).collect())
    }
}
