//! `reshard worker`: validates its flags, opens the catalog and runs [`crate::worker::Worker`]
//! until a signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::error::InputError;
use crate::worker::metrics::{self, Local};
use crate::worker::Worker;

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub catalog: String,
    pub lease_ttl: String,
    pub idle: String,
    pub parallel: usize,
    /// `--metrics ADDR`: serve Prometheus text there.
    pub metrics: Option<String>,
}

/// The flags, checked before any I/O.
struct Checked {
    ttl: Duration,
    idle: Duration,
    metrics: Option<SocketAddr>,
}

fn check(opts: &WorkerOptions) -> Result<Checked, InputError> {
    let ttl = super::online::parse_duration("--lease-ttl", &opts.lease_ttl)?;
    let idle = super::online::parse_duration("--idle", &opts.idle)?;
    if opts.parallel == 0 || opts.parallel > 64 {
        return Err(InputError::one(format!(
            "--parallel: {} is not between 1 and 64",
            opts.parallel
        )));
    }
    let metrics = match opts.metrics.as_deref() {
        None => None,
        Some(a) => Some(a.parse::<SocketAddr>().map_err(|_| {
            InputError::one(format!(
                "--metrics: {a:?} is not an address such as 127.0.0.1:9187"
            ))
        })?),
    };
    Ok(Checked { ttl, idle, metrics })
}

pub fn run(opts: WorkerOptions) -> i32 {
    match check(&opts) {
        Ok(checked) => super::block_on(work(opts, checked)),
        Err(e) => super::report(e.into()),
    }
}

async fn work(opts: WorkerOptions, checked: Checked) -> Result<()> {
    let Checked { ttl, idle, metrics } = checked;
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
    let local = Arc::new(Local::default());
    if let Some(addr) = metrics {
        metrics::serve(addr, catalog.clone(), local.clone(), me.clone()).await?;
    }
    let worker = Arc::new(Worker {
        catalog: catalog.clone(),
        catalog_url: opts.catalog.clone(),
        me,
        stop,
        idle,
        parallel: opts.parallel,
        loaded: Default::default(),
        pools_mark: crate::backend::closing::mark(),
        local,
    });
    let r = worker.run().await;
    catalog.close().await;
    r?;
    // `run` returns only once a signal asked it to stop: exit 130 like every interrupted
    // command (README's exit codes), not 0 as if the work were done.
    Err(crate::error::Stop::Interrupted {
        resume: "reshard worker (or reshard resume for the job)".to_string(),
    }
    .into())
}
