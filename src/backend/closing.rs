//! Closing the command's PostgreSQL and MariaDB pools before the process exits.
//!
//! A pool that is simply dropped with the runtime resets its connections: PostgreSQL logs
//! `could not receive data from client: Connection reset by peer` for every one of them and
//! MariaDB counts them in `Aborted_clients`, once per connection per command, which operators
//! watch and alert on. Closed pools end each connection with the protocol's goodbye instead.
//!
//! Only the CLI registers pools ([`enable`], from `commands::block_on`): a library user (the
//! tests, an application embedding reshard) owns its pools' lifetimes, and a registry holding
//! them would keep their connections open until the process ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use sqlx::mysql::MySqlPool;
use sqlx::postgres::PgPool;

enum Open {
    Pg(PgPool),
    My(MySqlPool),
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static OPEN: Mutex<Vec<Open>> = Mutex::new(Vec::new());

/// Makes this process register its pools (the CLI does, once per command).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

fn register(p: Open) {
    if ENABLED.load(Ordering::Relaxed) {
        OPEN.lock().unwrap_or_else(PoisonError::into_inner).push(p);
    }
}

pub(crate) fn register_pg(p: &PgPool) {
    register(Open::Pg(p.clone()));
}

pub(crate) fn register_mysql(p: &MySqlPool) {
    register(Open::My(p.clone()));
}

/// Closes every registered pool: waits for connections still in use to come back, up to a
/// second in all (a command that failed may leave a read in flight; exiting matters more).
pub async fn close_all() {
    close_since(0).await
}

/// How many pools are registered now: [`close_since`] closes those registered after.
pub fn mark() -> usize {
    OPEN.lock().unwrap_or_else(PoisonError::into_inner).len()
}

/// Closes the pools registered since `mark` (a long-running worker done with one job's shards),
/// leaving the earlier ones (its catalog) open.
pub async fn close_since(mark: usize) {
    let pools: Vec<Open> = {
        let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        let at = mark.min(open.len());
        open.drain(at..).collect()
    };
    let closing = futures_util::future::join_all(pools.iter().map(|p| async move {
        match p {
            Open::Pg(p) => p.close().await,
            Open::My(p) => p.close().await,
        }
    }));
    let _ = tokio::time::timeout(Duration::from_secs(1), closing).await;
}
