//! Every crash point on a worker's task path (src/failpoint.rs: `tasks_added`, `task_claimed`,
//! `task_copied`, `reverse_synced`, `request_taken`) under the Router writer: the worker aborts
//! there like a kill -9, a fresh worker carries the job on to dual write, `complete` finishes it
//! (asked of the worker, or carried over from the dead one's request), and the writer lost
//! nothing.

#[macro_use]
mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{job_id, stderr, Cluster};
use common::db::Kind;
use common::online::{run, setup_users, status};
use common::writer::{self, Writer};

struct Worker(Child, std::path::PathBuf);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn worker(c: &Cluster, failpoint: Option<&str>) -> Worker {
    let log = c
        .dir
        .path()
        .join(format!("worker-{}.log", failpoint.unwrap_or("none")));
    let mut cmd = c.cmd(&["worker", "--lease-ttl", "2s", "--idle", "100ms"]);
    if let Some(fp) = failpoint {
        cmd.env("RESHARD_FAILPOINT", fp);
    }
    let err = std::fs::File::create(&log).unwrap();
    Worker(
        cmd.stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("start a worker"),
        log,
    )
}

/// Waits until the worker aborted at its failpoint.
async fn aborted(mut w: Worker, point: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = w.0.try_wait().unwrap() {
            let err = std::fs::read_to_string(&w.1).unwrap_or_default();
            assert!(
                err.contains(&format!("failpoint {point} reached")),
                "{point}: the worker ended ({st}) without reaching it ({}):\n{err}",
                w.1.display()
            );
            return;
        }
        assert!(Instant::now() < deadline, "{point}: never reached");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn until_state(c: &Cluster, job: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let v = status(c, job).await;
        if v["state"] == want && (want != "dual_write" || v["lease"].is_object()) {
            return;
        }
        assert!(Instant::now() < deadline, "never {want}: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded) until process `pid` holds the job's lease.
async fn until_lease_of(c: &Cluster, job: &str, pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mine = format!(":{pid}:");
    loop {
        let v = status(c, job).await;
        let owner = v["lease"]["owner"].as_str().unwrap_or("");
        if v["state"] == "dual_write" && owner.contains(&mine) {
            return;
        }
        assert!(Instant::now() < deadline, "{pid} never served the job: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn killed_at_each_point(kind: Kind) {
    for point in [
        "tasks_added:1",
        "task_claimed:1",
        "task_copied:1",
        "reverse_synced:3",
        "request_taken:1",
    ] {
        let name = point.split(':').next().unwrap();
        let Some(s) = setup_users(kind, &format!("wk{}", &name[..4]), 200) else {
            return;
        };
        let c = &s.c;
        let w = Writer::start(c, &s.from, writer::config(0)).await;
        let out = run(
            c,
            &["apply", &s.plan, "--yes", "--no-wait", "--batch-size", "20"],
        )
        .await;
        assert!(out.status.success(), "apply: {}", stderr(&out));
        let job = job_id(&out).unwrap();
        let late = name == "reverse_synced" || name == "request_taken";
        if late {
            let healthy = worker(c, None);
            until_state(c, &job, "dual_write").await;
            drop(healthy);
        }
        let dying = worker(c, Some(point));
        if name == "request_taken" {
            // The killed healthy worker's lease may look unexpired for a moment: wait for the
            // dying worker's own, or `complete` finds no live holder and runs it itself.
            until_lease_of(c, &job, dying.0.id()).await;
            let out = run(c, &["complete", &job, "--no-wait"]).await;
            assert!(out.status.success(), "complete --no-wait: {}", stderr(&out));
            assert!(stderr(&out).contains("requested of"), "{}", stderr(&out));
        }
        aborted(dying, point).await;
        let _next = worker(c, None);
        if name == "request_taken" {
            // The request outlived the worker that began it; the next one carries it out.
            until_state(c, &job, "completed").await;
        } else {
            until_state(c, &job, "dual_write").await;
            let out = run(c, &["complete", &job]).await;
            assert!(out.status.success(), "{point}: complete: {}", stderr(&out));
        }
        assert_eq!(status(c, &job).await["state"], "completed", "{point}");
        w.stop_and_check(true).await;
        eprintln!("{}: {point}: completed, nothing lost", kind.name());
    }
}

per_backend_async!(killed_at_each_point);
