//! The cluster most online tests start from, and the binary's answers they read back.

use std::process::Output;

use serde_json::Value;

use super::cluster::{job_id, modulo, stderr, Cluster};
use super::db::Kind;

/// One row of the catalog's `live_routing` view, in [`LIVE_ROUTING`]'s column order.
pub type LiveRoutingRow = (
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

pub const LIVE_ROUTING: &str =
    "SELECT version, map_json, job_id, job_state, from_map, to_map, flipped FROM live_routing";

pub struct Setup {
    pub c: Cluster,
    pub from: Value,
    pub plan: String,
}

/// Two shards → three (identity modulo): every move has a guard on every backend. Key 2 moves
/// s0 → s2.
pub fn setup(kind: Kind, tag: &str) -> Option<Setup> {
    setup_users(kind, tag, 40)
}

/// [`setup`] with `users` users (2 orders each).
pub fn setup_users(kind: Kind, tag: &str, users: i64) -> Option<Setup> {
    let c = Cluster::create(kind, tag, 3)?;
    c.create_tables(&["s0", "s1", "s2"]);
    let from = c.map(&["s0", "s1"], modulo("identity", &["s0", "s1"]));
    let to = c.map(&["s0", "s1", "s2"], modulo("identity", &["s0", "s1", "s2"]));
    c.populate(&from, users, 2);
    let plan = c.write_plan("plan", &from, &to).display().to_string();
    Some(Setup { c, from, plan })
}

/// The binary, off the async runtime's workers (a writer may be running on them).
pub async fn run(c: &Cluster, args: &[&str]) -> Output {
    let mut cmd = c.cmd(args);
    tokio::task::spawn_blocking(move || cmd.output().expect("run reshard"))
        .await
        .unwrap()
}

/// `apply --yes` of the setup's plan, which must reach dual write; the job id.
pub async fn applied(s: &Setup) -> String {
    let out = run(&s.c, &["apply", &s.plan, "--yes", "--progress", "plain"]).await;
    assert!(out.status.success(), "apply: {}", stderr(&out));
    let job = super::cluster::job_id(&out).unwrap();
    assert_eq!(status(&s.c, &job).await["state"], "dual_write");
    job
}

pub async fn status(c: &Cluster, job: &str) -> Value {
    let o = run(c, &["status", job, "--format", "json"]).await;
    serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("status: {}", stderr(&o)))
}

/// `apply --yes` of the setup's plan (with `extra` flags), aborted like a kill -9 at the
/// failpoint `point` (`NAME:N`); the job id.
pub fn killed_at(s: &Setup, point: &str, extra: &[&str]) -> String {
    let mut args = vec!["apply", s.plan.as_str(), "--yes", "--progress", "plain"];
    args.extend_from_slice(extra);
    let out =
        s.c.cmd(&args)
            .env("RESHARD_FAILPOINT", point)
            .output()
            .unwrap();
    assert!(
        !out.status.success(),
        "{point}: the failpoint must stop apply"
    );
    job_id(&out).unwrap_or_else(|| panic!("{point}: {}", stderr(&out)))
}

/// Completes `job`, then audits it: exit 0 with the counts recorded at job creation, and
/// routing answering (key 2 moved s0 -> s2 in the setup's plan).
pub async fn complete_and_audit(c: &Cluster, job: &str) {
    let out = run(c, &["complete", job]).await;
    assert!(out.status.success(), "complete: {}", stderr(&out));
    let out = run(c, &["verify", job, "--audit"]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "audit: {text}{}", stderr(&out));
    assert!(text.contains("recorded at job start"), "{text}");
    let out = run(c, &["route", "2", "--catalog", &c.catalog_url()]).await;
    assert!(out.status.success(), "route: {}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("s2"),
        "key 2 is s2's now"
    );
}

/// The newest job's id, once its `jobs --format json` entry satisfies `ready` (bounded wait).
pub async fn job_when(c: &Cluster, what: &str, ready: impl Fn(&Value) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = run(c, &["jobs", "--format", "json"]).await;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(j) = v.as_array().and_then(|a| a.first()) {
            if ready(j) {
                return j["job"].as_str().unwrap().to_string();
            }
        }
        assert!(std::time::Instant::now() < deadline, "never {what}: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `verify JOB --audit` expecting these row counts (a writer's tally) instead of the recorded ones.
pub async fn audit_expecting(c: &Cluster, job: &str, users: usize, orders: usize) -> Output {
    let users = format!("users={users}");
    let orders = format!("orders={orders}");
    let args = [
        "verify",
        job,
        "--audit",
        "--expect-rows",
        &users,
        "--expect-rows",
        &orders,
    ];
    run(c, &args).await
}

/// `apply PLAN --yes --progress plain` with `args` (the plan first) in the background.
pub fn spawn_apply(c: &Cluster, args: &[&str]) -> std::process::Child {
    let mut all = vec!["apply"];
    all.extend_from_slice(&args[..1]);
    all.extend_from_slice(&["--yes", "--progress", "plain"]);
    all.extend_from_slice(&args[1..]);
    c.cmd(&all)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start apply")
}

/// The catalog's job, once it has copied some rows (bounded: 60 s).
pub async fn job_when_copying(c: &Cluster) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = run(c, &["status", "--format", "json"]).await;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["rows_copied"].as_u64().unwrap_or(0) > 0 {
            return v["job"].as_str().expect("a job id").to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the copy never began: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Waits (bounded) for a background command and asserts it succeeded; its output.
pub async fn wait_ok(mut child: std::process::Child, within: std::time::Duration) -> Output {
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + within;
        while child.try_wait().expect("wait").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "still running after {within:?}: {}",
                    super::cluster::stderr(&out)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let out = child.wait_with_output().expect("output");
        assert!(out.status.success(), "{}", super::cluster::stderr(&out));
        out
    })
    .await
    .expect("waiting")
}
