//! The writer workload every online test (and the demo) runs during a job, and its checker:
//! a thin layer over `reshard::workload` that wires it to a test [`Cluster`].
//!
//! ```ignore
//! let w = writer::Writer::start(&cluster, &from, writer::config(0)).await;
//! // ... apply / resume / complete with the real binary ...
//! let (tally, report) = w.stop_and_check(true).await;   // panics unless nothing was lost
//! ```

use std::sync::Arc;

use serde_json::Value;

use reshard::map::Map;
use reshard::router::RouterOptions;
#[allow(unused_imports)]
pub use reshard::workload::{
    check, snapshot, start, CheckReport, Last, Pk, RowVal, Running, Snapshot, Tally, WorkloadConfig,
};
use reshard::Router;

use super::cluster::Cluster;

/// A few hundred writes per second over ids 1..=60 (with `populate(from, 40, 2)` that is
/// updates of existing users and orders plus inserts of new ones; ids <= 0 stay untouched).
pub fn config(max_writes: u64) -> WorkloadConfig {
    WorkloadConfig {
        users: 1..=60,
        child_rows_per_user: 3,
        tasks: 4,
        rate: 300.0,
        max_writes: (max_writes > 0).then_some(max_writes),
        seed: 7,
        ..WorkloadConfig::default()
    }
}

/// A Router over the cluster's catalog. When the catalog is new, `from` becomes its routing
/// version 1 first, so the writer can run before (and during) the first `apply`.
pub async fn router(cluster: &Cluster, from: &Value) -> Arc<Router> {
    let map = Map::from_value(from, "from").expect("from map");
    reshard::workload::init_routing(&cluster.catalog_url(), &map)
        .await
        .expect("initialise routing");
    Arc::new(
        Router::connect_with(&cluster.catalog_url(), RouterOptions::default())
            .await
            .expect("router"),
    )
}

pub struct Writer {
    pub router: Arc<Router>,
    pub before: Snapshot,
    pub running: Running,
}

impl Writer {
    /// Snapshots every shard, then starts writing.
    pub async fn start(cluster: &Cluster, from: &Value, cfg: WorkloadConfig) -> Writer {
        let router = router(cluster, from).await;
        let before = snapshot(&router, cfg.child).await.expect("snapshot");
        assert!(!before.rows.is_empty(), "populate the cluster first");
        let running = start(router.clone(), cfg);
        Writer {
            router,
            before,
            running,
        }
    }

    /// Stops the writer and returns its tally.
    pub async fn stop(self) -> (Arc<Router>, Snapshot, Tally) {
        let tally = self.running.stop().await.expect("writer");
        (self.router, self.before, tally)
    }

    /// Stops, checks, and panics unless every acknowledged write is where it belongs.
    pub async fn stop_and_check(self, exclusive: bool) -> (Tally, CheckReport) {
        let (router, before, tally) = self.stop().await;
        let report = assert_no_loss(&router, &before, &tally, exclusive).await;
        (tally, report)
    }
}

/// Runs the checker and panics with its report unless it found nothing wrong.
pub async fn assert_no_loss(
    router: &Router,
    before: &Snapshot,
    tally: &Tally,
    exclusive: bool,
) -> CheckReport {
    assert!(tally.acknowledged > 0, "the writer wrote nothing: {tally}");
    assert_eq!(tally.failed, 0, "writes given up on: {tally}");
    let report = check(router, before, tally, exclusive)
        .await
        .expect("check");
    assert!(report.ok() && report.lost == 0, "{report}\nwriter: {tally}");
    report
}
