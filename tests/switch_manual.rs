//! `apply --switch manual`: the job copies and keeps catching up under a live writer, but
//! nothing flips (and the routing version stays) until `reshard switch JOB`; then every move
//! cuts over, and after `complete` the writer lost nothing. `switch` is refused for a job that
//! has nothing left to switch.

#[macro_use]
mod common;

use std::process::Stdio;
use std::time::Duration;

use common::cluster::stderr;
use common::db::Kind;
use common::online::{job_when, run, setup, status};
use common::writer::{self, Writer};

fn moves(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v["moves"].as_array().cloned().unwrap_or_default()
}

async fn nothing_flips_until_switch(kind: Kind) {
    let Some(s) = setup(kind, "swm") else { return };
    let w = Writer::start(&s.c, &s.from, writer::config(0)).await;
    let apply =
        s.c.cmd(&[
            "apply",
            &s.plan,
            "--yes",
            "--switch",
            "manual",
            "--progress",
            "plain",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let job = job_when(&s.c, "caught up", |j| {
        !moves(j).is_empty() && moves(j).iter().all(|m| m["state"] == "catching_up")
    })
    .await;
    // Well past the time an automatic cutover takes: still nothing flipped.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let v = status(&s.c, &job).await;
    assert_eq!(v["state"], "running", "{v}");
    assert!(
        moves(&v).iter().all(|m| m["flipped"] == false),
        "flipped before switch: {v}"
    );
    assert_eq!(
        v["routing_version"], 1,
        "no routing change before switch: {v}"
    );
    // Catch-up keeps running: what waits stays small under the writer (a few hundred writes
    // per second).
    let waiting: u64 = moves(&v)
        .iter()
        .filter_map(|m| m["waiting"]["entries"].as_u64())
        .sum();
    assert!(waiting < 2000, "the backlog grows while holding: {waiting}");

    switch_one_move_then_the_rest(&s.c, &job, &v).await;
    let out = tokio::task::spawn_blocking(move || apply.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "apply: {}", stderr(&out));
    let v = status(&s.c, &job).await;
    assert_eq!(v["state"], "dual_write", "{v}");
    assert!(moves(&v).iter().all(|m| m["flipped"] == true), "{v}");
    let out = run(&s.c, &["complete", &job]).await;
    assert!(out.status.success(), "complete: {}", stderr(&out));
    w.stop_and_check(true).await;
    let out = run(&s.c, &["switch", &job]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing left to switch"),
        "{}",
        stderr(&out)
    );
}

/// `switch --dry-run` changes nothing and reports each move's drain; `--move` of a move the job
/// does not have is bad input (exit 2); `--move M` flips M alone while the job keeps holding the
/// others; a bare `switch` then flips the rest.
async fn switch_one_move_then_the_rest(
    c: &common::cluster::Cluster,
    job: &str,
    v: &serde_json::Value,
) {
    let ids: Vec<String> = moves(v)
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.len() >= 2, "the test needs two moves: {v}");
    let out = run(c, &["switch", job, "--dry-run"]).await;
    assert!(out.status.success(), "switch --dry-run: {}", stderr(&out));
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(report.contains("dry run"), "{report}");
    for id in &ids {
        assert!(report.contains(id.as_str()), "{id} missing: {report}");
    }
    assert!(
        report.lines().all(|l| l.chars().count() <= 80),
        "the report is too wide: {report}"
    );
    let out = run(c, &["switch", job, "--move", "nosuch"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no such move"), "{}", stderr(&out));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = status(c, job).await;
    assert!(
        moves(&after).iter().all(|m| m["flipped"] == false),
        "a dry run or a refused switch flipped a move: {after}"
    );

    let first = ids[0].as_str();
    let out = run(c, &["switch", job, "--move", first]).await;
    assert!(out.status.success(), "switch --move: {}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{first} flipped")),
        "{}",
        stderr(&out)
    );
    // Well past the time the next cutover would take: only the named move flipped.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = status(c, job).await;
    assert_eq!(after["state"], "running", "{after}");
    for m in moves(&after) {
        assert_eq!(
            m["flipped"] == true,
            m["id"] == first,
            "only {first} flips: {after}"
        );
    }
    let out = run(c, &["switch", job, "--move", first]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("flipped already"), "{}", stderr(&out));

    let out = run(c, &["switch", job]).await;
    assert!(out.status.success(), "switch: {}", stderr(&out));
    assert!(
        stderr(&out).contains("every move has flipped"),
        "{}",
        stderr(&out)
    );
}

/// A job that flips by itself has nothing to switch: refused, exit 2.
async fn switch_refused_for_an_automatic_job(kind: Kind) {
    let Some(s) = setup(kind, "swa") else { return };
    let job = common::online::applied(&s).await;
    let out = run(&s.c, &["switch", &job]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--switch manual"), "{}", stderr(&out));
}

/// Regression: a switch and a pause shared one request column, so a `pause` recorded after a
/// `switch` erased it, and the resumed job held every move for a switch already given.
async fn regression_pause_erased_a_switch_given_before_it(kind: Kind) {
    let Some(s) = setup(kind, "swp") else { return };
    let args = ["apply", &s.plan, "--yes", "--switch", "manual", "--no-wait"];
    let out = run(&s.c, &args).await;
    assert!(out.status.success(), "apply --no-wait: {}", stderr(&out));
    let job = common::cluster::job_id(&out).expect("job id");
    let out = run(&s.c, &["switch", &job]).await;
    assert!(out.status.success(), "switch: {}", stderr(&out));
    let out = run(&s.c, &["pause", &job]).await;
    assert!(out.status.success(), "pause: {}", stderr(&out));
    assert_eq!(status(&s.c, &job).await["state"], "paused");
    let mut resume =
        s.c.cmd(&["resume", &job, "--progress", "plain"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    // Held for a switch, resume would catch up for ever: bounded here.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while resume.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            resume.kill().unwrap();
            let out = resume.wait_with_output().unwrap();
            panic!(
                "resume still holding after 90 s: the switch was lost\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = resume.wait_with_output().unwrap();
    assert!(out.status.success(), "resume: {}", stderr(&out));
    let v = status(&s.c, &job).await;
    assert_eq!(v["state"], "dual_write", "{v}");
    assert!(moves(&v).iter().all(|m| m["flipped"] == true), "{v}");
}

per_backend_async!(
    nothing_flips_until_switch,
    switch_refused_for_an_automatic_job,
    regression_pause_erased_a_switch_given_before_it
);
