//! The operator's commands on an online job after its cutovers, with the real binary:
//! `rollback` (whole, `--move`, after a crash at its commit point, with a fence that cannot go
//! up), `complete` refusing a partly rolled-back job, `resume` cutting over again, `sync`, and
//! `apply --complete`. PostgreSQL and MariaDB; SQLite with an identity-modulo map, which its
//! guard can route.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use serde_json::Value;

use common::cluster::{job_id, stderr};
use common::db::Kind;
use common::online::{applied, run, setup, status};
use common::writer::{self, Writer};

/// (move id, flipped) of every move.
fn flips(v: &Value) -> Vec<(String, bool)> {
    v["moves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap().to_string(), m["flipped"] == true))
        .collect()
}

/// Regression: a kill -9 right after the last move's flip back, before the job's state was
/// written, left the job `dual_write` with no flipped move, and every later `rollback` refused
/// it ("no flipped move to roll back"). The flip back now records the job's state in its own
/// transaction.
async fn crash_after_last_flip_back(kind: Kind) {
    let Some(s) = setup(kind, "ocb") else { return };
    let before = s.c.snapshot();
    let job = applied(&s).await;
    let n = flips(&status(&s.c, &job).await).len();
    let out =
        s.c.cmd(&["rollback", &job])
            .env("RESHARD_FAILPOINT", format!("after_flip_back:{n}"))
            .output()
            .unwrap();
    assert!(!out.status.success(), "the failpoint must stop rollback");
    let v = status(&s.c, &job).await;
    assert_eq!(v["state"], "rolled_back", "{v}");
    assert!(flips(&v).iter().all(|(_, f)| !f), "{v}");
    let out = run(&s.c, &["rollback", &job]).await;
    assert!(out.status.success(), "rollback again: {}", stderr(&out));
    let out = run(&s.c, &["cancel", &job]).await;
    assert!(out.status.success(), "cancel: {}", stderr(&out));
    assert_eq!(s.c.snapshot(), before);
}

/// `rollback --move` flips one move back under the writer; `complete` then refuses (it would
/// delete that move's rows at its source, their owner again); rolling back the rest and
/// `resume` cut everything over again; `complete` finishes; nothing acknowledged is lost.
async fn partial_rollback(kind: Kind) {
    let Some(s) = setup(kind, "opr") else { return };
    let w = Writer::start(&s.c, &s.from, writer::config(0)).await;
    let job = applied(&s).await;
    let moves = flips(&status(&s.c, &job).await);
    assert!(moves.len() >= 2, "{moves:?}");
    let first = moves[0].0.clone();
    let n = w.running.acknowledged();
    w.running.wait_for(n + 50).await;

    let out = run(&s.c, &["rollback", &job, "--move", &first]).await;
    assert!(out.status.success(), "rollback --move: {}", stderr(&out));
    let v = status(&s.c, &job).await;
    assert_eq!(v["state"], "rolled_back", "{v}");
    for (id, f) in flips(&v) {
        assert_eq!(f, id != first, "move {id}: {v}");
    }
    let out = run(&s.c, &["complete", &job]).await;
    assert_eq!(out.status.code(), Some(2), "complete: {}", stderr(&out));
    assert!(
        stderr(&out).contains("every move flipped"),
        "{}",
        stderr(&out)
    );
    let out = run(&s.c, &["rollback", &job, "--move", "no-such-move"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--move"), "{}", stderr(&out));

    let n = w.running.acknowledged();
    w.running.wait_for(n + 50).await;
    let out = run(&s.c, &["resume", &job, "--progress", "plain"]).await;
    assert!(out.status.success(), "resume: {}", stderr(&out));
    let v = status(&s.c, &job).await;
    assert_eq!(v["state"], "dual_write", "{v}");
    assert!(flips(&v).iter().all(|(_, f)| *f), "{v}");
    let n = w.running.acknowledged();
    w.running.wait_for(n + 50).await;
    let out = run(&s.c, &["complete", &job]).await;
    assert!(out.status.success(), "complete: {}", stderr(&out));
    let n = w.running.acknowledged();
    w.running.wait_for(n + 30).await;
    w.stop_and_check(true).await;
}

/// A rollback whose fence cannot go up (a transaction at the new owner holds key 2's fence row)
/// gives up after its bounded retries, leaves that move flipped and the job failed, and a later
/// rollback finishes once the writer is gone.
async fn rollback_fence_budget(kind: Kind) {
    let Some(s) = setup(kind, "orf") else { return };
    let job = applied(&s).await;
    let mut held = common::conn::RawConn::open(s.c.db("s2")).await;
    held.execute("BEGIN").await.unwrap();
    held.execute("UPDATE users SET name = 'held' WHERE id = 2")
        .await
        .unwrap();
    let out = run(&s.c, &["rollback", &job, "--max-fence", "150ms"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rollback fences failed"),
        "{}",
        stderr(&out)
    );
    let v = status(&s.c, &job).await;
    assert_eq!(v["state"], "failed", "{v}");
    assert!(flips(&v).iter().any(|(_, f)| *f), "{v}");
    held.execute("ROLLBACK").await.unwrap();
    let out = run(&s.c, &["rollback", &job]).await;
    assert!(out.status.success(), "rollback: {}", stderr(&out));
    let v = status(&s.c, &job).await;
    assert_eq!(v["state"], "rolled_back", "{v}");
    assert!(flips(&v).iter().all(|(_, f)| !f), "{v}");
    assert_eq!(
        s.c.db("s0").scalar("SELECT name FROM users WHERE id = 2"),
        "user 2 é"
    );
}

/// A rollback whose fenced drain failed returned the error with the new owner's fence still up
/// and the move `rolling_back`: the application's writes of the move's keys were refused until
/// some later command reconciled the job.
async fn regression_rollback_left_the_fence_up_when_its_drain_failed(kind: Kind) {
    let Some(s) = setup(kind, "ord") else { return };
    let job = applied(&s).await;
    let out = {
        let mut cmd = s.c.cmd(&["rollback", &job]);
        cmd.env("RESHARD_FAILPOINT", "rollback_drain_fails:1");
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    };
    assert!(
        !out.status.success(),
        "the failpoint must fail the rollback"
    );
    assert!(
        stderr(&out).contains("failpoint rollback_drain_fails"),
        "{}",
        stderr(&out)
    );
    let fenced =
        s.c.db("s2")
            .query("SELECT move_id FROM _reshard_fence WHERE fenced = 1");
    assert!(
        fenced.is_empty(),
        "the new owner still refuses writers: {fenced:?}"
    );
    let v = status(&s.c, &job).await;
    for m in v["moves"].as_array().unwrap() {
        assert_eq!(m["state"], "flipped", "{v}");
    }
    let out = run(&s.c, &["rollback", &job]).await;
    assert!(out.status.success(), "rollback: {}", stderr(&out));
    assert_eq!(status(&s.c, &job).await["state"], "rolled_back");
}

/// JOB may be left out of every command that acts on a job: it means the catalog's unfinished
/// job (`verify`: the most recent one); with none unfinished, the command refuses and says how
/// to name one.
async fn job_is_optional_and_means_the_unfinished_one(kind: Kind) {
    let Some(s) = setup(kind, "ojo") else { return };
    let job = applied(&s).await;
    let out = run(&s.c, &["switch"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("job {job}")),
        "{}",
        stderr(&out)
    );
    let out = run(&s.c, &["verify"]).await;
    assert!(out.status.success(), "verify: {}", stderr(&out));
    let out = run(&s.c, &["rollback"]).await;
    assert!(out.status.success(), "rollback: {}", stderr(&out));
    assert_eq!(status(&s.c, &job).await["state"], "rolled_back");
    let out = run(&s.c, &["cancel"]).await;
    assert!(out.status.success(), "cancel: {}", stderr(&out));
    assert_eq!(status(&s.c, &job).await["state"], "cancelled");
    for cmd in ["pause", "complete", "switch"] {
        let out = run(&s.c, &[cmd]).await;
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("no unfinished job to {cmd}")),
            "{cmd}: {}",
            stderr(&out)
        );
    }
}

/// `sync` carries a write made at the new owner back to the old owner (so a rollback loses
/// nothing), and stops on Ctrl-C with exit 130, the job still in dual write.
async fn reverse_sync(kind: Kind) {
    let Some(s) = setup(kind, "osy") else { return };
    let job = applied(&s).await;
    s.c.db("s2")
        .exec("UPDATE users SET name = 'written at the new owner' WHERE id = 2");
    let old = || s.c.db("s0").scalar("SELECT name FROM users WHERE id = 2");
    assert_eq!(
        old(),
        "user 2 é",
        "nothing but sync may carry the write back"
    );
    let mut child = s.c.cmd(&["sync", &job]).spawn().unwrap();
    let t0 = Instant::now();
    while old() != "written at the new owner" {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "sync did not carry the write back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = child.id().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let st = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    // regression: it exited 0; an interrupted command exits 130 (the README's table).
    assert_eq!(st.code(), Some(130), "sync after Ctrl-C: {st:?}");
    assert_eq!(status(&s.c, &job).await["state"], "dual_write");
}

/// `apply --complete` goes from the plan to a completed job in one command under the writer.
async fn apply_complete(kind: Kind) {
    let Some(s) = setup(kind, "oac") else { return };
    let w = Writer::start(&s.c, &s.from, writer::config(0)).await;
    let n = w.running.acknowledged();
    w.running.wait_for(n + 50).await;
    let out = run(
        &s.c,
        &[
            "apply",
            &s.plan,
            "--yes",
            "--complete",
            "--progress",
            "plain",
        ],
    )
    .await;
    assert!(out.status.success(), "apply --complete: {}", stderr(&out));
    let job = job_id(&out).unwrap();
    assert_eq!(status(&s.c, &job).await["state"], "completed");
    let n = w.running.acknowledged();
    w.running.wait_for(n + 30).await;
    w.stop_and_check(true).await;
    // Key 2 left its old owner for good.
    assert!(s
        .c
        .db("s0")
        .query("SELECT id FROM users WHERE id = 2")
        .is_empty());
}

/// The checksum verification under the fence refuses the flip when a destination row differs
/// behind reshard's back (exit 3, nothing flipped, the job resumable); `verify --repair` mends
/// it and `resume` cuts over.
async fn mismatch_refuses_flip(kind: Kind) {
    let Some(s) = setup(kind, "omm") else { return };
    let out =
        s.c.cmd(&["apply", &s.plan, "--yes"])
            .env("RESHARD_FAILPOINT", "after_apply:1")
            .output()
            .unwrap();
    assert!(!out.status.success(), "the failpoint must stop apply");
    let job = job_id(&out).unwrap();
    s.c.db("s2")
        .exec_unguarded("UPDATE users SET name = 'damaged' WHERE id = 2");
    let out = run(&s.c, &["resume", &job]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("users"), "{}", stderr(&out));
    let v = status(&s.c, &job).await;
    assert_eq!(v["state"], "failed", "{v}");
    let m = v["moves"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["source"] == "s0" && m["destination"] == "s2")
        .unwrap();
    assert_eq!(m["flipped"], false, "{v}");
    assert!(
        m["last_error"].as_str().unwrap().contains("1 differing"),
        "{v}"
    );
    let out = run(&s.c, &["verify", &job, "--repair"]).await;
    assert!(out.status.success(), "verify --repair: {}", stderr(&out));
    let out = run(&s.c, &["resume", &job]).await;
    assert!(out.status.success(), "resume: {}", stderr(&out));
    assert_eq!(status(&s.c, &job).await["state"], "dual_write");
    assert_eq!(
        s.c.db("s2").scalar("SELECT name FROM users WHERE id = 2"),
        "user 2 é"
    );
}

per_backend_async!(
    crash_after_last_flip_back,
    partial_rollback,
    reverse_sync,
    apply_complete,
    mismatch_refuses_flip,
    regression_rollback_left_the_fence_up_when_its_drain_failed,
    job_is_optional_and_means_the_unfinished_one
);

/// A held row lock is what keeps the fence down; SQLite's guard reads no fence row under a lock.
mod fence_budget {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        rollback_fence_budget(Kind::Postgres).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql() {
        rollback_fence_budget(Kind::Mysql).await
    }
}
