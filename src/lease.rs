//! A job's lease for the length of one command: taken in one catalog transaction, renewed in the
//! background every third of its time to live, released at the end. `apply`/`resume`,
//! `complete`/`rollback`/`cancel`/`sync` and the demo all hold one, so two workers never act on
//! one job at once. See docs/catalog.md ("The lease").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::task::JoinHandle;

use crate::catalog::Catalog;
use crate::error::Stop;
use crate::signals::StopFlag;

/// How long a lease lives without renewal by default; a worker that dies loses it after this.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

static TTL_MS: AtomicU64 = AtomicU64::new(LEASE_TTL.as_millis() as u64);

/// Sets the time to live of this process's leases (`reshard worker --lease-ttl`).
pub fn set_ttl(d: Duration) {
    TTL_MS.store(d.as_millis().max(1) as u64, Ordering::Relaxed);
}

/// The time to live of this process's leases; they are renewed every third of it.
pub fn ttl() -> Duration {
    Duration::from_millis(TTL_MS.load(Ordering::Relaxed))
}

pub struct Lease {
    catalog: Arc<Catalog>,
    job: String,
    owner: String,
    heartbeat: JoinHandle<()>,
}

impl Lease {
    /// Takes the job's lease (`Stop::Refused` naming the holder when another live worker has
    /// it). When the lease is lost later (another worker took over an expired one), `on_lost`
    /// is asked to stop, so that the work ends at its next safe point.
    pub async fn acquire(
        catalog: &Arc<Catalog>,
        job: &str,
        on_lost: Option<StopFlag>,
    ) -> Result<Lease> {
        let owner = crate::catalog::worker_id();
        if let Err(holder) = catalog.acquire_lease(job, &owner, ttl()).await? {
            return Err(Stop::Refused(holder).into());
        }
        let heartbeat = {
            let (cat, job, owner) = (catalog.clone(), job.to_string(), owner.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl() / 3).await;
                    match cat.renew_lease(&job, &owner, ttl()).await {
                        Ok(true) => {}
                        Ok(false) => {
                            crate::progress::say(format!(
                                "reshard: lost the lease on job {job}; stopping"
                            ));
                            if let Some(stop) = &on_lost {
                                stop.request();
                            }
                            return;
                        }
                        // A catalog hiccup: try again at the next beat, well before expiry.
                        Err(e) => {
                            crate::progress::say(format!("reshard: renewing the lease: {e:#}"))
                        }
                    }
                }
            })
        };
        Ok(Lease {
            catalog: catalog.clone(),
            job: job.to_string(),
            owner,
            heartbeat,
        })
    }

    pub async fn release(self) {
        self.heartbeat.abort();
        if let Err(e) = self.catalog.release_lease(&self.job, &self.owner).await {
            crate::progress::say(format!("reshard: {e:#}"));
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Released or not, the renewals end with the holder; an unreleased lease expires.
        self.heartbeat.abort();
    }
}

/// A task this process has claimed ([`Catalog::claim_task`]), renewed in the background every
/// third of [`ttl`]. When the renewal finds the task taken over, `on_lost` is asked to stop.
pub struct TaskLease {
    catalog: Arc<Catalog>,
    job: String,
    pub id: String,
    owner: String,
    heartbeat: JoinHandle<()>,
}

impl TaskLease {
    pub fn hold(
        catalog: &Arc<Catalog>,
        job: &str,
        id: &str,
        owner: &str,
        on_lost: StopFlag,
    ) -> Self {
        let heartbeat = {
            let (cat, job, id, owner) = (
                catalog.clone(),
                job.to_string(),
                id.to_string(),
                owner.to_string(),
            );
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl() / 3).await;
                    match cat.renew_task(&job, &id, &owner, ttl()).await {
                        Ok(true) => {}
                        Ok(false) => {
                            crate::progress::say(format!(
                                "reshard: lost task {id} of job {job}; stopping it"
                            ));
                            on_lost.request();
                            return;
                        }
                        Err(e) => {
                            crate::progress::say(format!("reshard: renewing task {id}: {e:#}"))
                        }
                    }
                }
            })
        };
        TaskLease {
            catalog: catalog.clone(),
            job: job.to_string(),
            id: id.to_string(),
            owner: owner.to_string(),
            heartbeat,
        }
    }

    /// Ends the task: done, or given back for another worker to continue.
    pub async fn end(self, done: bool) -> Result<()> {
        self.heartbeat.abort();
        crate::retry::retry("catalog: ending a task", || {
            self.catalog
                .end_task(&self.job, &self.id, &self.owner, done)
        })
        .await
    }
}

impl Drop for TaskLease {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}
