//! Crash injection, for tests only: `RESHARD_FAILPOINT=NAME:N` aborts the process (no cleanup,
//! like kill -9) the Nth time execution passes the point NAME. Points in the copy of a batch:
//! `before_upsert` (rows read, nothing written), `after_upsert` (rows written at the
//! destination, cursor not recorded), `after_cursor` (cursor recorded). Points of `reshard
//! worker` (src/worker): `tasks_added` (setup done, copy tasks recorded), `task_claimed` (a copy
//! task leased, nothing copied), `task_copied` (the move copied, the task not yet done),
//! `reverse_synced` (a reverse-sync pass applied), `request_taken` (a request begun, nothing of
//! it done). Unset, it costs one relaxed atomic load per call.
//!
//! [`triggered`] is the same switch for points that misbehave on purpose instead of aborting,
//! so that a test can prove a check fails: `demo_damage` (`reshard demo` moves one row to a
//! shard that does not own it before its final checks), `rollback_drain_fails` (a rollback's
//! fenced drain fails, as on a lost connection), `pause_fails` (a run asked to pause fails at
//! its safe point instead, so that `pause` sees the job fail while it waits).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn spec() -> &'static Option<(String, u64)> {
    SPEC.get_or_init(|| {
        let v = std::env::var("RESHARD_FAILPOINT").ok()?;
        let (name, n) = v.split_once(':')?;
        Some((name.to_string(), n.parse().ok()?))
    })
}

pub fn hit(name: &str) {
    if triggered(name) {
        let n = spec().as_ref().map_or(0, |(_, n)| *n);
        eprintln!("reshard: failpoint {name}:{n} reached; aborting");
        std::process::abort();
    }
}

/// Whether `RESHARD_FAILPOINT=NAME:N` names this point and this is its Nth pass.
pub fn triggered(name: &str) -> bool {
    match spec() {
        Some((want, n)) => want == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n,
        None => false,
    }
}
