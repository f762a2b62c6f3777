//! Crash injection, for tests only: `RESHARD_FAILPOINT=NAME:N` aborts the process (no cleanup,
//! like kill -9) the Nth time execution passes the point NAME. Points in the copy of a batch:
//! `before_upsert` (rows read, nothing written), `after_upsert` (rows written at the
//! destination, cursor not recorded), `after_cursor` (cursor recorded). Points of `reshard
//! worker` (src/worker): `tasks_added` (setup done, copy tasks recorded), `task_claimed` (a copy
//! task leased, nothing copied), `task_copied` (the move copied, the task not yet done),
//! `reverse_synced` (a reverse-sync pass applied), `request_taken` (a request begun, nothing of
//! it done). Unset, it costs one relaxed atomic load per call.
//!
//! `RESHARD_FAILPOINT=NAME:N:stop` stops the process there instead (SIGSTOP, as a debugger
//! would), so that a test can act at that exact moment, such as taking a lock between two
//! steps, and then let it go on with SIGCONT.
//!
//! [`triggered`] is the same switch for points that misbehave on purpose instead of aborting,
//! so that a test can prove a check fails: `demo_damage` (`reshard demo` moves one row to a
//! shard that does not own it before its final checks), `rollback_drain_fails` (a rollback's
//! fenced drain fails, as on a lost connection), `pause_fails` (a run asked to pause fails at
//! its safe point instead, so that `pause` sees the job fail while it waits).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

struct Spec {
    name: String,
    n: u64,
    /// `:stop`: SIGSTOP instead of abort.
    stop: bool,
}

static SPEC: OnceLock<Option<Spec>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn spec() -> &'static Option<Spec> {
    SPEC.get_or_init(|| {
        let v = std::env::var("RESHARD_FAILPOINT").ok()?;
        let (name, rest) = v.split_once(':')?;
        let (n, stop) = match rest.strip_suffix(":stop") {
            Some(n) => (n, true),
            None => (rest, false),
        };
        Some(Spec {
            name: name.to_string(),
            n: n.parse().ok()?,
            stop,
        })
    })
}

pub fn hit(name: &str) {
    if !triggered(name) {
        return;
    }
    let Some(s) = spec() else { return };
    if s.stop {
        eprintln!("reshard: failpoint {name}:{} reached; stopping", s.n);
        // The test sends SIGCONT; `kill` exits as soon as it has sent the signal.
        let _ = std::process::Command::new("kill")
            .args(["-STOP", &std::process::id().to_string()])
            .status();
        return;
    }
    eprintln!("reshard: failpoint {name}:{} reached; aborting", s.n);
    std::process::abort();
}

/// Whether `RESHARD_FAILPOINT=NAME:N` names this point and this is its Nth pass.
pub fn triggered(name: &str) -> bool {
    match spec() {
        Some(s) => s.name == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == s.n,
        None => false,
    }
}
