//! Replica lag, measured the way pt-heartbeat and Vitess do: reshard writes a heartbeat row on
//! each primary that has replicas (`_reshard_heartbeat`, one row, the primary's clock in
//! milliseconds) and reads it back on every replica. The lag is the age of the newest
//! heartbeat the replica has applied, by the replica's clock. Unlike `now() -
//! pg_last_xact_replay_timestamp()` it stays true on an idle primary, since the heartbeat
//! itself is a write. A replica that has not applied any heartbeat yet, or does not answer,
//! counts as lagging: the throttle holds rather than guess.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::Backend;
use crate::ident::Dialect;
use crate::shard_url::ShardUrl;

pub const HEARTBEAT_TABLE: &str = "_reshard_heartbeat";

/// Statements that create the heartbeat table and write the primary's clock into its row.
pub fn beat_sql(dialect: Dialect) -> Option<[String; 2]> {
    let t = HEARTBEAT_TABLE;
    match dialect {
        Dialect::Postgres => Some([
            format!("CREATE TABLE IF NOT EXISTS {t} (id integer PRIMARY KEY, ts_ms bigint NOT NULL)"),
            format!(
                "INSERT INTO {t} (id, ts_ms) VALUES (1, (extract(epoch from clock_timestamp()) * 1000)::bigint) \
                 ON CONFLICT (id) DO UPDATE SET ts_ms = EXCLUDED.ts_ms"
            ),
        ]),
        Dialect::Mysql => Some([
            format!("CREATE TABLE IF NOT EXISTS {t} (id int PRIMARY KEY, ts_ms bigint NOT NULL)"),
            format!(
                "INSERT INTO {t} (id, ts_ms) VALUES (1, CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)) \
                 ON DUPLICATE KEY UPDATE ts_ms = VALUES(ts_ms)"
            ),
        ]),
        // An SQLite file has no replicas reshard could read.
        Dialect::Sqlite => None,
    }
}

/// The statement a replica answers with the age in milliseconds of the heartbeat it applied.
pub fn lag_sql(dialect: Dialect) -> Option<String> {
    let t = HEARTBEAT_TABLE;
    match dialect {
        Dialect::Postgres => Some(format!(
            "SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint - ts_ms FROM {t} WHERE id = 1"
        )),
        Dialect::Mysql => Some(format!(
            "SELECT CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED) - ts_ms FROM {t} WHERE id = 1"
        )),
        Dialect::Sqlite => None,
    }
}

/// How a replica is named in messages: its host (and port) or its `env:` name, never the URL.
pub fn replica_label(url: &ShardUrl) -> String {
    if let Some(name) = url.env_name() {
        return name.to_string();
    }
    let shown = url.redacted().to_string();
    let rest = shown.split_once("://").map_or(shown.as_str(), |(_, r)| r);
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    host.split(['/', '?']).next().unwrap_or(host).to_string()
}

/// A replica's lag as measured now: Some(ms), or None when it has applied no heartbeat yet or
/// did not answer.
pub type Lag = Option<u64>;

/// The first replica over `max`, as the reason shown: "s1 replica db1-r1 lag 7.2 s > 5 s".
pub fn over_lag(lags: &[(String, String, Lag)], max: Duration) -> Option<String> {
    let max_ms = max.as_millis() as u64;
    // The lag rounded up to a tenth and the limit as given, so that the shown lag is always
    // above the shown limit ("1.1 s > 1 s", never "1.0 s > 1.0 s").
    let up = |ms: u64| format!("{:.1} s", ms.div_ceil(100) as f64 / 10.0);
    let limit = |ms: u64| {
        if ms.is_multiple_of(1000) {
            format!("{} s", ms / 1000)
        } else {
            format!("{} s", ms as f64 / 1000.0)
        }
    };
    lags.iter().find_map(|(shard, replica, lag)| match lag {
        Some(ms) if *ms <= max_ms => None,
        Some(ms) => Some(format!(
            "{shard} replica {replica} lag {} > {}",
            up(*ms),
            limit(max_ms)
        )),
        None => Some(format!(
            "{shard} replica {replica}: no heartbeat applied yet (or it does not answer)"
        )),
    })
}

/// One shard with replicas: its primary, where the heartbeat is written, and its replicas,
/// connected on first use.
pub struct ReplicaSet {
    pub shard: String,
    pub primary: Arc<dyn Backend>,
    pub urls: Vec<ShardUrl>,
    connected: Vec<Option<Arc<dyn Backend>>>,
}

impl ReplicaSet {
    pub fn new(shard: String, primary: Arc<dyn Backend>, urls: Vec<ShardUrl>) -> ReplicaSet {
        let connected = urls.iter().map(|_| None).collect();
        ReplicaSet {
            shard,
            primary,
            urls,
            connected,
        }
    }

    /// Writes a heartbeat on the primary (bounded to 1 s; a failure shows as lag).
    pub async fn beat(&self) {
        if let Some(stmts) = beat_sql(self.primary.dialect()) {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), self.primary.run_ddl(&stmts)).await;
        }
    }

    /// Each replica's lag: (shard, replica label, lag). Each read is bounded to 1 s.
    pub async fn lags(&mut self) -> Vec<(String, String, Lag)> {
        let mut out = Vec::new();
        for (i, url) in self.urls.iter().enumerate() {
            let label = replica_label(url);
            if self.connected[i].is_none() {
                let name = format!("{} replica {label}", self.shard);
                let c = tokio::time::timeout(
                    Duration::from_secs(2),
                    crate::backend::connect(&name, url),
                )
                .await;
                if let Ok(Ok(b)) = c {
                    self.connected[i] = Some(b);
                }
            }
            let lag = match (&self.connected[i], lag_sql(self.primary.dialect())) {
                (Some(b), Some(sql)) => {
                    let r = tokio::time::timeout(Duration::from_secs(1), b.int_row(&sql)).await;
                    match r {
                        Ok(Ok(row)) => row.first().copied().flatten().map(|ms| ms.max(0) as u64),
                        _ => None,
                    }
                }
                _ => None,
            };
            out.push((self.shard.clone(), label, lag));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_named_by_host_never_by_url() {
        let u = |s: &str| ShardUrl::parse(s).unwrap();
        assert_eq!(
            replica_label(&u("postgres://app:secret@db1-r1:5433/app")),
            "db1-r1:5433"
        );
        assert_eq!(
            replica_label(&u("mysql://root@db2-r1/app?ssl-mode=required")),
            "db2-r1"
        );
        assert_eq!(replica_label(&u("postgres://db3/app")), "db3");
        assert_eq!(replica_label(&u("env:S1_R1_URL")), "S1_R1_URL");
    }

    #[test]
    fn the_first_lagging_replica_is_the_reason() {
        let max = Duration::from_secs(5);
        let l = |r: &str, lag: Lag| ("s1".to_string(), r.to_string(), lag);
        assert_eq!(
            over_lag(&[l("a", Some(300)), l("b", Some(5000))], max),
            None
        );
        assert_eq!(
            over_lag(&[l("a", Some(300)), l("b", Some(7200))], max).as_deref(),
            Some("s1 replica b lag 7.2 s > 5 s")
        );
        assert_eq!(
            over_lag(&[l("a", Some(1040))], Duration::from_secs(1)).as_deref(),
            Some("s1 replica a lag 1.1 s > 1 s")
        );
        assert_eq!(
            over_lag(&[l("a", Some(900))], Duration::from_millis(800)).as_deref(),
            Some("s1 replica a lag 0.9 s > 0.8 s")
        );
        assert!(over_lag(&[l("a", None)], max)
            .unwrap()
            .contains("no heartbeat applied yet"));
        assert_eq!(over_lag(&[], max), None);
        assert!(beat_sql(Dialect::Sqlite).is_none() && lag_sql(Dialect::Sqlite).is_none());
    }
}
