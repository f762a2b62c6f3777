//! `status` of a job in dual write reads the change logs on its shards: a write at the new
//! owner waits in the destination's log (entries and the age of the oldest) while no process
//! serves the job, and status warns and names `reshard sync`; once `sync` runs, the warning
//! goes, the backlog drains to 0 and the write is at the old owner too; a rollback then loses
//! nothing. Also what the text view says: the current routing version, the lease, the next
//! step, a cancelled job's moves, and quiet ends on a closed pipe and a missing catalog.

#[macro_use]
mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::cluster::stderr;
use common::db::Kind;
use common::online::{applied, run, setup, status};

/// Identity modulo 2 -> 3: key 44 moves s0 -> s2.
const MOVED: i64 = 44;

/// The move that carries key 44 and what waits for it.
fn waiting(v: &Value) -> (u64, Option<i64>) {
    let m = v["moves"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["source"] == "s0" && m["destination"] == "s2")
        .unwrap_or_else(|| panic!("no move s0 -> s2: {v}"));
    let w = &m["waiting"];
    assert_eq!(
        w["shard"], "s2",
        "a flipped move waits at its destination: {m}"
    );
    (w["entries"].as_u64().unwrap(), w["oldest_ms"].as_i64())
}

fn warns(v: &Value) -> bool {
    v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("reshard sync"))
}

async fn backlog_shown_and_drained_by_sync(kind: Kind) {
    let Some(s) = setup(kind, "stb") else { return };
    let job = applied(&s).await;
    let v = status(&s.c, &job).await;
    assert!(warns(&v), "no process serves the job: {v}");
    let (before, _) = waiting(&v);
    s.c.db("s2").exec(&format!(
        "INSERT INTO users (id, name, score) VALUES ({MOVED}, 'at the new owner', 1)"
    ));
    std::thread::sleep(Duration::from_millis(50));
    let (after, oldest) = waiting(&status(&s.c, &job).await);
    assert!(
        after > before,
        "the write waits in s2's log: {before} -> {after}"
    );
    assert!(
        oldest.is_some_and(|ms| ms >= 0),
        "the oldest entry's age: {oldest:?}"
    );
    let text = run(&s.c, &["status", &job]).await;
    let out = common::cluster::stdout(&text);
    assert!(
        out.contains("WAITING") && out.contains("warning: no reshard process"),
        "{out}"
    );
    assert!(
        out.lines().all(|l| l.chars().count() <= 100),
        "fits 100 columns:\n{out}"
    );

    let sync =
        s.c.cmd(&["sync", &job])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = status(&s.c, &job).await;
        if waiting(&v).0 == 0 && !warns(&v) {
            break;
        }
        assert!(Instant::now() < deadline, "sync never drained the log: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        s.c.db("s0")
            .scalar(&format!("SELECT name FROM users WHERE id = {MOVED}")),
        "at the new owner",
        "reverse sync applied the write at the old owner"
    );
    let pid = sync.id().to_string();
    let st = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(st.success());
    let out = sync.wait_with_output().unwrap();
    assert!(out.status.code() == Some(130), "sync: {}", stderr(&out));
    let out = run(&s.c, &["rollback", &job]).await;
    assert!(out.status.success(), "rollback: {}", stderr(&out));
    assert_eq!(
        s.c.db("s0")
            .scalar(&format!("SELECT name FROM users WHERE id = {MOVED}")),
        "at the new owner"
    );
}

/// A cancelled job's moves read as cancelled, not as the phase they were undone in.
async fn cancelled_job_reads_as_cancelled(kind: Kind) {
    let Some(s) = setup(kind, "stc") else { return };
    let job = applied(&s).await;
    for args in [["rollback", &job], ["cancel", &job]] {
        let out = run(&s.c, &args).await;
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let out = common::cluster::stdout(&run(&s.c, &["status", &job]).await);
    let moves: Vec<&str> = out.lines().filter(|l| l.starts_with('m')).collect();
    assert!(!moves.is_empty(), "{out}");
    assert!(moves.iter().all(|l| l.contains("cancelled")), "{out}");
    assert!(
        !out.contains("next:"),
        "a finished job has no next step: {out}"
    );
}

per_backend_async!(
    backlog_shown_and_drained_by_sync,
    cancelled_job_reads_as_cancelled
);

/// `status | head` ends quietly when the reader has gone, `jobs` refuses a catalog that does
/// not exist as `status` does, and a bare `resume` with a job waiting in dual write names the
/// job and its next step instead of "every job has finished".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_pipe_missing_catalog_and_resume_hint() {
    let Some(s) = setup(Kind::Sqlite, "stp") else {
        return;
    };
    let job = applied(&s).await;
    let mut child =
        s.c.cmd(&["status", &job])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    // Closed before status has read the catalog, so its first write meets a closed pipe.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out =
        s.c.cmd(&["jobs", "--catalog", "sqlite://no-such-catalog.db"])
            .output()
            .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    let out = run(&s.c, &["resume"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let want = format!("job {job} is dual_write; next: reshard complete {job}");
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
}
