//! The catalog's side of the throttles (src/throttle.rs): the cap a job runs under, in its
//! options, which `reshard throttle` changes while it runs; and whether the running process is
//! holding the job back now, for `status` and the metrics.

use anyhow::Result;

use super::{now_text, Catalog, Pool};

impl Catalog {
    /// Records why the job is held back now (None: it is not).
    pub async fn set_throttled(&self, job: &str, reason: Option<&str>) -> Result<()> {
        let res: Result<()> = with_pool!(self, p => async {
            sqlx::query("UPDATE jobs SET throttled = $1 WHERE id = $2")
                .bind(reason).bind(job).execute(p).await?;
            Ok(())
        }.await);
        anyhow::Context::with_context(res, || {
            format!("catalog {}: recording job {job}'s throttle", self.label)
        })
    }

    /// Why the job is held back, as last recorded by the process running it.
    pub async fn job_throttled(&self, job: &str) -> Result<Option<String>> {
        let res: Result<Option<Option<String>>> = with_pool!(self, p => async {
            Ok(sqlx::query_scalar("SELECT throttled FROM jobs WHERE id = $1")
                .bind(job).fetch_optional(p).await?)
        }.await);
        Ok(anyhow::Context::with_context(res, || {
            format!("catalog {}: reading job {job}'s throttle", self.label)
        })?
        .flatten())
    }

    /// Sets one of the job's throttle settings (`max_rows_per_sec` or `max_load`; None: off)
    /// in its stored options, with an event, in one transaction: the process running the job
    /// reads it within a second, and later runs keep it. Returns the value it replaced.
    /// Errors when the job is not in the catalog.
    pub async fn set_throttle(
        &self,
        job: &str,
        key: &str,
        value: Option<u64>,
        detail: &str,
    ) -> Result<Option<u64>> {
        let pg = matches!(self.pool, Pool::Postgres(_));
        let at = now_text();
        let res: Result<Option<u64>> = with_pool!(self, p => async {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let q = if pg {
                "SELECT options_json FROM jobs WHERE id = $1 FOR UPDATE"
            } else {
                "SELECT options_json FROM jobs WHERE id = $1"
            };
            let row: Option<String> = sqlx::query_scalar(q).bind(job).fetch_optional(&mut *tx).await?;
            let Some(text) = row else {
                anyhow::bail!("job {job} is not in the catalog");
            };
            let mut options: serde_json::Value = serde_json::from_str(&text)?;
            let before = options.get(key).and_then(|v| v.as_u64()).filter(|n| *n > 0);
            let Some(obj) = options.as_object_mut() else {
                anyhow::bail!("job {job}: its options are not a JSON object");
            };
            obj.insert(key.into(), serde_json::json!(value));
            sqlx::query("UPDATE jobs SET options_json = $1, updated_at = $2 WHERE id = $3")
                .bind(serde_json::to_string(&options)?).bind(&at).bind(job)
                .execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO events (job_id, move_id, at, kind, detail) \
                 VALUES ($1, NULL, $2, 'throttle_set', $3)",
            )
            .bind(job).bind(&at).bind(detail).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(before)
        }.await);
        anyhow::Context::with_context(res, || {
            format!("catalog {}: setting job {job}'s {key}", self.label)
        })
    }
}
