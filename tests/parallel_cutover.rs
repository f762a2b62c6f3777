//! Cutovers side by side (`--parallel`): three shards → four (identity modulo) is nine moves,
//! three from each source. Moves of different sources may hold their fences at the same time;
//! moves of one source never do (a fenced drain reads the whole source's change logs). Under
//! a live writer, and after a kill -9 while two fences are up, nothing is lost.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::process::Output;

use common::cluster::{job_id, modulo, stderr, stdout, Cluster};
use common::db::Kind;
use common::online::{run, status};
use common::writer::{self, Writer};

struct Setup {
    c: Cluster,
    from: serde_json::Value,
    plan: String,
}

fn setup(kind: Kind, tag: &str) -> Option<Setup> {
    let c = Cluster::create(kind, tag, 4)?;
    c.create_tables(&["s0", "s1", "s2", "s3"]);
    let from = c.map(&["s0", "s1", "s2"], modulo("identity", &["s0", "s1", "s2"]));
    let to = c.map(
        &["s0", "s1", "s2", "s3"],
        modulo("identity", &["s0", "s1", "s2", "s3"]),
    );
    c.populate(&from, 40, 2);
    let plan = c.write_plan("plan", &from, &to).display().to_string();
    Some(Setup { c, from, plan })
}

/// Per move, its fence windows as (first event id, last event id): from `catching_up ->
/// fencing` to the flip or the lowered fence that ended it.
fn fence_windows(events: &[serde_json::Value]) -> BTreeMap<String, Vec<(i64, i64)>> {
    let mut open: BTreeMap<String, i64> = BTreeMap::new();
    let mut out: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for e in events {
        let (Some(m), Some(id)) = (e["move"].as_str(), e["id"].as_i64()) else {
            continue;
        };
        let detail = e["detail"].as_str().unwrap_or("");
        let kind = e["kind"].as_str().unwrap_or("");
        if kind == "move_state" && detail.ends_with("-> fencing") {
            open.insert(m.to_string(), id);
        } else if kind == "flip" || (kind == "move_state" && detail.starts_with("fencing ->")) {
            if let Some(start) = open.remove(m) {
                out.entry(m.to_string()).or_default().push((start, id));
            }
        }
    }
    assert!(open.is_empty(), "fences never closed: {open:?}");
    out
}

async fn events(c: &Cluster, job: &str) -> Vec<serde_json::Value> {
    let out = run(c, &["log", job, "--format", "json"]).await;
    assert!(out.status.success(), "log: {}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The moves' (source, destination), from `status`.
async fn ends(c: &Cluster, job: &str) -> BTreeMap<String, (String, String)> {
    let v = status(c, job).await;
    v["moves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let end = |k: &str| m[k].as_str().unwrap().to_string();
            (end("id"), (end("source"), end("destination")))
        })
        .collect()
}

/// Every move's fence windows against those of every other move of the same source, or whose
/// source is its destination or the other way round: disjoint. Returns how many windows of
/// other pairs overlapped.
async fn assert_one_fence_per_source(c: &Cluster, job: &str) -> usize {
    let windows = fence_windows(&events(c, job).await);
    let src = ends(c, job).await;
    assert_eq!(src.len(), 9, "nine moves: {src:?}");
    assert_eq!(windows.len(), 9, "every move was fenced: {windows:?}");
    let mut overlapping = 0;
    for (a, wa) in &windows {
        for (b, wb) in windows.range::<String, _>((
            std::ops::Bound::Excluded(a.clone()),
            std::ops::Bound::Unbounded,
        )) {
            for x in wa {
                for y in wb {
                    if x.0 < y.1 && y.0 < x.1 {
                        let ((sa, da), (sb, db)) = (&src[a], &src[b]);
                        assert!(
                            sa != sb && sa != db && sb != da,
                            "{a} {sa}->{da} {x:?} and {b} {sb}->{db} {y:?} were fenced at once"
                        );
                        overlapping += 1;
                    }
                }
            }
        }
    }
    overlapping
}

async fn apply(s: &Setup, env: Option<&str>) -> Output {
    let mut cmd = s.c.cmd(&[
        "apply",
        &s.plan,
        "--yes",
        "--parallel",
        "4",
        "--progress",
        "plain",
    ]);
    if let Some(fp) = env {
        cmd.env("RESHARD_FAILPOINT", fp);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

async fn side_by_side_under_the_writer(kind: Kind) {
    let Some(s) = setup(kind, "pco") else { return };
    let w = Writer::start(&s.c, &s.from, writer::config(0)).await;
    let out = apply(&s, None).await;
    assert!(out.status.success(), "apply: {}", stderr(&out));
    let job = job_id(&out).unwrap();
    assert_eq!(status(&s.c, &job).await["state"], "dual_write");
    let overlapping = assert_one_fence_per_source(&s.c, &job).await;
    eprintln!("fence windows of different sources that overlapped: {overlapping}");
    let out = run(&s.c, &["complete", &job]).await;
    assert!(out.status.success(), "complete: {}", stderr(&out));
    w.stop_and_check(true).await;
}

/// A kill -9 the second time a fence is raised: with four cutovers side by side, one fence is
/// up and another may be (or may have flipped). `resume` reconciles both and finishes.
async fn killed_with_two_fences_up(kind: Kind) {
    let Some(s) = setup(kind, "pck") else { return };
    let w = Writer::start(&s.c, &s.from, writer::config(0)).await;
    let out = apply(&s, Some("fence_raised:2")).await;
    assert!(!out.status.success(), "the failpoint must stop apply");
    assert!(
        stderr(&out).contains("failpoint fence_raised:2 reached"),
        "{}",
        stderr(&out)
    );
    let job = job_id(&out).unwrap();
    let out = run(&s.c, &["resume", &job, "--progress", "plain"]).await;
    assert!(out.status.success(), "resume: {}", stderr(&out));
    assert_eq!(status(&s.c, &job).await["state"], "dual_write");
    assert_one_fence_per_source(&s.c, &job).await;
    let out = run(&s.c, &["complete", &job]).await;
    assert!(out.status.success(), "complete: {}", stderr(&out));
    w.stop_and_check(true).await;
}

per_backend_async!(side_by_side_under_the_writer, killed_with_two_fences_up);
