//! `reshard worker`: validates its flags, opens the catalog and runs [`crate::worker::Worker`]
//! until a signal.

use std::sync::Arc;

use anyhow::{Context as _, Result};

use crate::worker::Worker;

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub catalog: String,
    pub lease_ttl: String,
    pub idle: String,
    pub parallel: usize,
}

pub fn run(opts: WorkerOptions) -> i32 {
    let parsed = super::online::parse_duration("--lease-ttl", &opts.lease_ttl).and_then(|ttl| {
        super::online::parse_duration("--idle", &opts.idle).map(|idle| (ttl, idle))
    });
    if opts.parallel == 0 || opts.parallel > 64 {
        return super::report(
            crate::error::InputError::one(format!(
                "--parallel: {} is not between 1 and 64",
                opts.parallel
            ))
            .into(),
        );
    }
    let (ttl, idle) = match parsed {
        Ok(v) => v,
        Err(e) => return super::report(e.into()),
    };
    super::block_on(work(opts, ttl, idle))
}

async fn work(
    opts: WorkerOptions,
    ttl: std::time::Duration,
    idle: std::time::Duration,
) -> Result<()> {
    crate::lease::set_ttl(ttl);
    let catalog = Arc::new(super::open_existing(&opts.catalog).await?);
    let stop = crate::signals::install().context("installing signal handlers")?;
    let me = crate::catalog::worker_id();
    eprintln!(
        "reshard worker {me}: serving catalog {}; leases live {} ms, renewed every {} ms",
        catalog.label(),
        ttl.as_millis(),
        (ttl / 3).as_millis()
    );
    let worker = Arc::new(Worker {
        catalog: catalog.clone(),
        catalog_url: opts.catalog.clone(),
        me,
        stop,
        idle,
        parallel: opts.parallel.max(1),
        loaded: Default::default(),
        pools_mark: crate::backend::closing::mark(),
    });
    let r = worker.run().await;
    catalog.close().await;
    r
}
