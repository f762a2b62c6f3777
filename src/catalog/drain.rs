//! The catch-up rate of each source shard of a running job, as last measured by the process
//! running it: what `switch --dry-run` predicts a fenced drain from.

use anyhow::{Context as _, Result};

use super::{now_ms, Catalog, Pool};

/// One shard's last measured rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainRate {
    pub shard: String,
    pub entries_per_sec: u64,
    pub measured_at_ms: i64,
}

impl Catalog {
    /// Records the rate catch-up just applied `shard`'s change logs at. A measurement, not a
    /// step of the job: one statement, and a failure costs only a staler prediction.
    pub async fn record_drain_rate(
        &self,
        job: &str,
        shard: &str,
        entries_per_sec: u64,
    ) -> Result<()> {
        let rate = i64::try_from(entries_per_sec).unwrap_or(i64::MAX);
        let res: Result<()> = with_pool!(self, p => async {
            sqlx::query(
                "INSERT INTO drain_rates (job_id, shard, entries_per_sec, measured_at_ms) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (job_id, shard) DO UPDATE SET \
                 entries_per_sec = excluded.entries_per_sec, \
                 measured_at_ms = excluded.measured_at_ms",
            )
            .bind(job).bind(shard).bind(rate).bind(now_ms()).execute(p).await?;
            Ok(())
        }.await);
        res.with_context(|| {
            format!(
                "catalog {}: recording a drain rate of job {job}",
                self.label
            )
        })
    }

    /// The last measured rate of each of the job's source shards that has one.
    pub async fn drain_rates(&self, job: &str) -> Result<Vec<DrainRate>> {
        let res: Result<Vec<(String, i64, i64)>> = with_pool!(self, p => async {
            Ok(sqlx::query_as(
                "SELECT shard, entries_per_sec, measured_at_ms FROM drain_rates \
                 WHERE job_id = $1 ORDER BY shard",
            )
            .bind(job).fetch_all(p).await?)
        }.await);
        Ok(res
            .with_context(|| format!("catalog {}: reading job {job}'s drain rates", self.label))?
            .into_iter()
            .map(|(shard, r, at)| DrainRate {
                shard,
                entries_per_sec: r.max(0) as u64,
                measured_at_ms: at,
            })
            .collect())
    }
}
