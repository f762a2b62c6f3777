//! The tables that need shards, on every backend: one cluster per backend is taken through
//! three jobs of the same plan in turn, each into the codes its steps end with.

use std::process::{Child, Output, Stdio};

use super::table::{check, into_closed_pipe, Table, Words, FAILED, MISMATCH, OK};
use crate::common;
use common::cluster::{stderr, Cluster};
use common::db::Kind;
use common::online::{setup, status, Setup};

/// Shards but no catalog yet: apply's dry run and suggest read the shards and write no
/// catalog; a shard that cannot be reached fails suggest's measuring and apply's preflight.
const AGAINST_THE_SHARDS: Table = "
0   apply PLAN --dry-run              # checked against the shards, nothing written
0   suggest --from MAP -o NEW         # measured (read-only), the next map written
1   suggest --from DOWN_MAP -o OUT    # a shard cannot be reached: run it again once it is back
2   apply DOWN_PLAN --dry-run         # preflight: a shard is not reachable
2   apply DOWN_PLAN --yes             # preflight: a shard is not reachable, nothing written
";

/// A job started with `--switch manual` whose run failed where it would have paused (so
/// `pause` exited 1): pause, switch and resume act on it with nobody running it; a rollback and
/// a cancel then undo it.
const A_MANUAL_JOB_NOBODY_RUNS: Table = "
2   switch JOB --move m-nosuch   # unknown move
0   switch JOB --dry-run         # what each fence would do; nothing changes
0   pause JOB                    # nobody runs it: paused at once
0   switch JOB --no-wait         # recorded for whoever runs the job next
0   resume JOB                   # catches up and flips, as switched
2   switch JOB                   # nothing left to switch
2   pause JOB                    # nothing left to pause: it waits for complete
2   cancel JOB                   # moves have flipped: cancel is too late (rollback)
0   rollback JOB                 # every move flipped back
0   cancel JOB                   # undone
";

/// The plan again with `--switch manual`, and key 2's row at its destination damaged behind
/// reshard's back while it catches up: `switch` let apply's own cutover verify, which flipped
/// the move from s1 and found the row in the move from s0 (apply exited 3, switch 1). The job
/// is undone.
const AFTER_APPLYS_CUTOVER_FOUND_A_DAMAGED_ROW: Table = "
3   verify JOB                                       # the damaged row is found
2   complete JOB                                     # a move has not flipped
2   cancel JOB                                       # a move has flipped: roll it back first
1   RESHARD_SHARD_S2_URL=SHARD_DOWN verify JOB       # a shard cannot be reached
1   RESHARD_SHARD_S2_URL=SHARD_DOWN rollback JOB     # a shard cannot be reached: resumable
0   rollback JOB                                     # flipped back once it is back
1   RESHARD_SHARD_S2_URL=SHARD_DOWN cancel JOB       # a shard cannot be reached: resumable
0   cancel JOB                                       # undone once it is back
";

/// The plan once more, stopped (kill -9) after catch-up, before any flip, and a row at the
/// destination damaged behind reshard's back: the cutover's own verification refuses to flip.
const BEFORE_THE_CUTOVER_A_ROW_DAMAGED: Table = "
3   resume JOB                          # the cutover verifies, finds the row; nothing flips
2   complete JOB                        # nothing has flipped yet
3   verify JOB                          # the damaged row is found
0   verify JOB --repair                 # mended from the source
0   resume JOB                          # verified again, every move flipped
";

/// The same job in dual write: every command that reads it succeeds; every one pointed at a
/// step the job is not ready for is refused without a write; each that reaches the shards
/// fails, resumable, while one cannot be reached.
const ON_A_JOB_IN_DUAL_WRITE: Table = "
0   status                        # the newest job
0   status JOB --format json      # the job named
0   jobs --format json            # listed
0   log JOB                       # the job's history
0   route 2                       # routed live from RESHARD_CATALOG
0   verify JOB                    # source and destination agree
0   throttle JOB                  # shows the throttles
2   resume                        # nothing to resume: the job waits for complete
2   switch JOB                    # the job was not started with --switch manual
2   cancel JOB                    # moves have flipped: cancel is too late (rollback)
2   apply PLAN --yes              # another job is unfinished
2   apply PLAN --dry-run          # the dry run finds the unfinished job
1   RESHARD_SHARD_S2_URL=SHARD_DOWN verify JOB      # a shard cannot be reached
1   RESHARD_SHARD_S2_URL=SHARD_DOWN sync JOB        # a shard cannot be reached
1   RESHARD_SHARD_S2_URL=SHARD_DOWN complete JOB    # a shard cannot be reached: nothing deleted
";

/// Beside that job, commands pointed at a job or move that is not there, or given a bad value:
/// refused from the catalog alone, whatever the shards' backend (so run on SQLite only).
const BESIDE_IT_NAMES_THAT_ARE_NOT_THERE: Table = "
2   status j-nosuch               # unknown job
2   log j-nosuch                  # unknown job
2   route two                     # a key that is not an integer
2   verify j-nosuch               # unknown job
2   verify JOB --move m-nosuch    # unknown move
2   throttle j-nosuch             # unknown job
2   throttle JOB --max-lag long   # bad option value
2   resume j-nosuch               # unknown job
2   pause j-nosuch                # unknown job
2   switch j-nosuch               # unknown job
2   complete j-nosuch             # unknown job
2   rollback j-nosuch             # unknown job
2   rollback JOB --move m-nosuch  # unknown move
2   cancel j-nosuch               # unknown job
2   sync j-nosuch                 # unknown job
2   worker --parallel 0           # bad option value
";

/// A destination row deleted behind reshard's back: verification says so, and so does every
/// command that verifies before it acts; nothing is deleted and the job stays resumable.
const AFTER_A_ROW_LOST_AT_THE_DESTINATION: Table = "
3   verify JOB                          # the lost row is found
3   complete JOB                        # complete verifies first and deletes nothing
0   status JOB                          # the job is still there
0   verify JOB --repair                 # repaired
0   verify JOB                          # agree again
0   complete JOB                        # completed
0   status JOB                          # a finished job
2   resume JOB                          # a completed job cannot be resumed
0   complete JOB                        # already completed: nothing left to do
2   rollback JOB                        # a completed job cannot be rolled back
2   cancel JOB                          # a completed job cannot be cancelled
2   pause JOB                           # nothing to pause
2   switch JOB                          # nothing to switch
2   sync JOB                            # nothing to sync
2   throttle JOB --max-rows-per-sec 10  # nothing to throttle
2   apply PLAN --dry-run                # a stale plan: the routing is its target map now
2   apply PLAN --yes                    # a stale plan, refused before anything is written
";

fn in_place<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// `apply PLAN --yes --switch manual` in the background (with `RESHARD_FAILPOINT=failpoint`
/// when given), once every move of its job catches up, waiting for a switch; the job id.
async fn manual_apply(s: &Setup, failpoint: Option<&str>, after: &str) -> (Child, String) {
    // One cutover at a time: which moves a failed cutover leaves unflipped is then certain.
    let args = [
        "apply",
        &s.plan,
        "--yes",
        "--switch",
        "manual",
        "--parallel",
        "1",
    ];
    let mut cmd = s.c.cmd(&args);
    if let Some(f) = failpoint {
        cmd.env("RESHARD_FAILPOINT", f);
    }
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start apply");
    let job = common::online::job_when(&s.c, "caught up", |j| {
        let moves = j["moves"].as_array().cloned().unwrap_or_default();
        j["job"] != after && !moves.is_empty() && moves.iter().all(|m| m["state"] == "catching_up")
    })
    .await;
    (child, job)
}

async fn ended(child: Child) -> Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().expect("apply's output"))
        .await
        .unwrap()
}

/// Key 2's row at s2 damaged behind reshard's back.
fn damaged(c: &Cluster) {
    c.db("s2")
        .exec_unguarded("UPDATE users SET name = 'damaged' WHERE id = 2");
}

/// Key 2's row at s2 (its new owner in dual write) deleted behind reshard's back. SQLite's
/// bypass drops only the guards, so the capture log that would carry the delete back to s0 is
/// emptied too (as in tests/operator_mistakes.rs).
fn lost(c: &Cluster) {
    let sql = match c.kind {
        Kind::Sqlite => "DELETE FROM users WHERE id = 2; DELETE FROM _rs_log_users",
        _ => "DELETE FROM users WHERE id = 2",
    };
    c.db("s2").exec_unguarded(sql);
}

/// `pause` of a live manual job whose run fails at its safe point (the `pause_fails`
/// failpoint): pause exits 1, like the run, with the run's reason.
async fn regression_pause_exited_0_when_the_run_failed(s: &Setup) -> String {
    let (apply, job) = manual_apply(s, Some("pause_fails:1"), "").await;
    let out = common::online::run(&s.c, &["pause", &job]).await;
    assert_eq!(out.status.code(), Some(FAILED), "pause: {}", stderr(&out));
    assert!(stderr(&out).contains("pause_fails"), "{}", stderr(&out));
    let out = ended(apply).await;
    assert_eq!(out.status.code(), Some(FAILED), "apply: {}", stderr(&out));
    assert_eq!(status(&s.c, &job).await["state"], "failed");
    job
}

/// Key 2 (moving s0 -> s2) damaged at s2 while a live manual apply catches up: `switch` lets
/// apply cut over, whose verification finds the row; apply exits 3 and switch 1.
async fn regression_switch_exited_0_when_the_cutover_failed(s: &Setup, after: &str) -> String {
    let (apply, job) = manual_apply(s, None, after).await;
    damaged(&s.c);
    let out = common::online::run(&s.c, &["switch", &job]).await;
    assert_eq!(out.status.code(), Some(FAILED), "switch: {}", stderr(&out));
    assert!(stderr(&out).contains("failed"), "{}", stderr(&out));
    let out = ended(apply).await;
    assert_eq!(out.status.code(), Some(MISMATCH), "apply: {}", stderr(&out));
    job
}

/// Every step of three jobs of one plan, on one cluster, into each code it can end with.
async fn through_every_step(kind: Kind) {
    let Some(s) = setup(kind, "xev") else { return };
    let mut w = Words::of(&s, "j-none");
    let before = s.c.snapshot();
    in_place(|| check(&s.c, &w, AGAINST_THE_SHARDS));
    assert!(!s.c.catalog_path().exists(), "a catalog was created");
    assert_eq!(s.c.snapshot(), before, "a shard was written");

    w.job = regression_pause_exited_0_when_the_run_failed(&s).await;
    in_place(|| check(&s.c, &w, A_MANUAL_JOB_NOBODY_RUNS));
    assert_eq!(status(&s.c, &w.job).await["state"], "cancelled");

    w.job = regression_switch_exited_0_when_the_cutover_failed(&s, &w.job).await;
    in_place(|| check(&s.c, &w, AFTER_APPLYS_CUTOVER_FOUND_A_DAMAGED_ROW));
    assert_eq!(status(&s.c, &w.job).await["state"], "cancelled");
    assert_eq!(
        s.c.snapshot(),
        before,
        "the cancelled jobs left rows behind"
    );

    w.job = common::online::killed_at(&s, "after_apply:1", &[]);
    damaged(&s.c);
    in_place(|| check(&s.c, &w, BEFORE_THE_CUTOVER_A_ROW_DAMAGED));
    if kind == Kind::Sqlite {
        in_place(|| check(&s.c, &w, BESIDE_IT_NAMES_THAT_ARE_NOT_THERE));
    }
    in_place(|| check(&s.c, &w, ON_A_JOB_IN_DUAL_WRITE));
    broken_pipes_end_quietly(&s.c);
    lost(&s.c);
    in_place(|| check(&s.c, &w, AFTER_A_ROW_LOST_AT_THE_DESTINATION));
    assert_eq!(status(&s.c, &w.job).await["state"], "completed");
}

fn broken_pipes_end_quietly(c: &Cluster) {
    for cmd in ["status", "jobs", "log", "route 2"] {
        let args: Vec<&str> = cmd.split(' ').collect();
        let out = in_place(|| into_closed_pipe(c.cmd(&args)));
        assert_eq!(
            out.status.code(),
            Some(OK),
            "{cmd} | (closed): {}",
            stderr(&out)
        );
        assert!(
            !stderr(&out).contains("panicked"),
            "{cmd}: {}",
            stderr(&out)
        );
    }
}

per_backend_async!(through_every_step);
