//! A job's lease for the length of one command: taken in one catalog transaction, renewed in the
//! background every third of its time to live, released at the end. `apply`/`resume`,
//! `complete`/`rollback`/`cancel`/`sync` and the demo all hold one, so two workers never act on
//! one job at once. See docs/catalog.md ("The lease").

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::task::JoinHandle;

use crate::catalog::Catalog;
use crate::error::Stop;
use crate::signals::StopFlag;

/// How long a lease lives without renewal; a worker that dies loses it after this.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

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
        if let Err(holder) = catalog.acquire_lease(job, &owner, LEASE_TTL).await? {
            return Err(Stop::Refused(holder).into());
        }
        let heartbeat = {
            let (cat, job, owner) = (catalog.clone(), job.to_string(), owner.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(LEASE_TTL / 3).await;
                    match cat.renew_lease(&job, &owner, LEASE_TTL).await {
                        Ok(true) => {}
                        Ok(false) => {
                            eprintln!("reshard: lost the lease on job {job}; stopping");
                            if let Some(stop) = &on_lost {
                                stop.request();
                            }
                            return;
                        }
                        // A catalog hiccup: try again at the next beat, well before expiry.
                        Err(e) => eprintln!("reshard: renewing the lease: {e:#}"),
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
            eprintln!("reshard: {e:#}");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Released or not, the renewals end with the holder; an unreleased lease expires.
        self.heartbeat.abort();
    }
}
