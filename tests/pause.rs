//! `reshard pause` under a live writer: the request is recorded in the catalog, the running
//! `apply` sees it and stops at a safe point with the job `paused` (exit 0), rows copied do not
//! advance while it is paused, `resume` continues to dual write, and after `complete` the writer lost nothing.
//! A job no process runs is paused at once; a job in dual write is refused. 3000 users, so that
//! a copy in batches of 10 takes seconds.

#[macro_use]
mod common;

use std::process::Stdio;
use std::time::Duration;

use common::cluster::{job_id, stderr};
use common::db::Kind;
use common::online::{job_when, run, setup_users, status};
use common::writer::{self, Writer};

fn copied(v: &serde_json::Value) -> u64 {
    v["rows_copied"].as_u64().unwrap()
}

async fn pause_under_the_writer(kind: Kind) {
    let Some(s) = setup_users(kind, "pau", 3000) else {
        return;
    };
    let w = Writer::start(&s.c, &s.from, writer::config(0)).await;
    let apply =
        s.c.cmd(&[
            "apply",
            &s.plan,
            "--yes",
            "--batch-size",
            "10",
            "--parallel",
            "1",
        ])
        .args(["--progress", "plain"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The job exists and its copy has begun.
    let job = job_when(&s.c, "copying", |j| copied(j) > 0).await;
    let out = run(&s.c, &["pause", &job]).await;
    assert!(out.status.success(), "pause: {}", stderr(&out));
    assert!(stderr(&out).contains("paused after"), "{}", stderr(&out));
    eprintln!("pause {}: {}", kind.name(), stderr(&out).trim_end());
    let out = tokio::task::spawn_blocking(move || apply.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "apply pauses cleanly: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("paused; continue with"),
        "{}",
        stderr(&out)
    );
    let v = status(&s.c, &job).await;
    assert_eq!(v["state"], "paused", "{v}");
    let (at_pause, total) = (copied(&v), v["rows_total"].as_u64().unwrap());
    assert!(at_pause < total, "paused mid-copy: {at_pause}/{total}");
    // Paused under the writer: nothing copies.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        copied(&status(&s.c, &job).await),
        at_pause,
        "rows copied while paused"
    );
    let out = run(&s.c, &["pause", &job]).await;
    assert!(out.status.success() && stderr(&out).contains("paused already"));

    let out = run(&s.c, &["resume", &job, "--progress", "plain"]).await;
    assert!(out.status.success(), "resume: {}", stderr(&out));
    let v = status(&s.c, &job).await;
    assert_eq!(v["state"], "dual_write", "{v}");
    assert!(copied(&v) > at_pause, "the copy went on after resume");
    // In dual write there is nothing to pause.
    let out = run(&s.c, &["pause", &job]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = run(&s.c, &["complete", &job]).await;
    assert!(out.status.success(), "complete: {}", stderr(&out));
    w.stop_and_check(true).await;
}

/// With no process running it (here: killed -9 mid-copy), the job is paused at once, and only
/// `resume` starts it again.
async fn pause_of_a_job_nobody_runs(kind: Kind) {
    let Some(s) = setup_users(kind, "pan", 3000) else {
        return;
    };
    let out =
        s.c.cmd(&["apply", &s.plan, "--yes", "--batch-size", "10"])
            .env("RESHARD_FAILPOINT", "after_cursor:3")
            .output()
            .unwrap();
    assert!(!out.status.success());
    let job = job_id(&out).unwrap();
    let out = run(&s.c, &["pause", &job]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no process was running it"),
        "{}",
        stderr(&out)
    );
    assert_eq!(status(&s.c, &job).await["state"], "paused");
    let out = run(&s.c, &["resume", &job]).await;
    assert!(out.status.success(), "resume: {}", stderr(&out));
    assert_eq!(status(&s.c, &job).await["state"], "dual_write");
}

per_backend_async!(pause_under_the_writer, pause_of_a_job_nobody_runs);
