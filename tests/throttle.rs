//! The rate cap (issue 15): `apply --max-rows-per-sec` paces the copy; `reshard throttle`
//! changes the cap of a running job through the catalog; `status` and the events say when the
//! job is held back and why.
//!
//! The bounds here are lower bounds set by the cap (a slow machine only makes the run longer)
//! and, once the cap is lifted, a generous upper bound far under what the cap would take.

#[macro_use]
mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::db::Kind;
use common::online::{run, spawn_apply, status};
use common::private::PrivateMariadb;
use common::writer::{self, Writer};

const ROWS: i64 = 20_000;

/// Two shards; `ROWS` rows on s0, every one of which moves to s1. The plan's path.
fn setup(kind: Kind, tag: &str) -> Option<(Cluster, String)> {
    setup_on(Cluster::create(kind, tag, 2)?)
}

fn setup_on(c: Cluster) -> Option<(Cluster, String)> {
    c.table_t(&["s0", "s1"]);
    c.fill_t("s0", 1..=ROWS);
    let urls = serde_json::json!({"s0": c.db("s0").url, "s1": c.db("s1").url});
    let m = |split: i64| {
        serde_json::json!({"shards": urls, "tables": [{"name": "t", "key": "id"}],
               "partitioning": ranges(&["s0", "s1"], &[split])})
    };
    let plan = c.write_plan("plan", &m(ROWS + 1), &m(1));
    let plan = plan.to_str().expect("utf-8 path").to_string();
    Some((c, plan))
}

fn all_rows_at_s1(c: &Cluster) {
    assert_eq!(
        c.db("s1").scalar("SELECT COUNT(*) FROM t"),
        ROWS.to_string()
    );
}

fn event_details(c: &Cluster, job: &str) -> Vec<String> {
    let o = c.run(&["log", job, "--format", "json"]);
    assert!(o.status.success(), "log: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|e| {
            format!(
                "{} {}",
                e["kind"].as_str().unwrap_or(""),
                e["detail"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// 20,000 rows at 2,000 rows/s: each page is charged before it is read, so the copy takes at
/// least 10 s whatever the batch sizes; the full verification before the fence reads them
/// again under the same cap, 10 s more.
async fn rate_cap_paces_the_copy(kind: Kind) {
    let Some((c, plan)) = setup(kind, "thr") else {
        return;
    };
    let started = Instant::now();
    let out = run(
        &c,
        &[
            "apply",
            &plan,
            "--yes",
            "--progress",
            "plain",
            "--batch-size",
            "1000",
            "--max-rows-per-sec",
            "2000",
        ],
    )
    .await;
    let took = started.elapsed();
    assert!(out.status.success(), "apply: {}", stderr(&out));
    assert!(
        took >= Duration::from_secs(19),
        "20,000 rows copied and verified at 2,000 rows/s in {took:?}"
    );
    let job = job_id(&out).expect("job id");
    assert!(
        stderr(&out).contains("throttled: rate cap 2,000 rows/s"),
        "the progress lines say why: {}",
        stderr(&out)
    );
    let events = event_details(&c, &job);
    assert!(
        events
            .iter()
            .any(|e| e == "throttled throttled: rate cap 2,000 rows/s"),
        "{events:?}"
    );
    let v = status(&c, &job).await;
    assert_eq!(v["throttle"]["max_rows_per_sec"], 2000, "{v}");
    assert_eq!(
        v["throttle"]["throttled"],
        serde_json::Value::Null,
        "no process runs it: {v}"
    );
    all_rows_at_s1(&c);
}

/// A job capped at 500 rows/s (40 s for its rows) is shown throttled; `reshard throttle
/// --max-rows-per-sec 0` lifts the cap and the copy finishes at once.
async fn throttle_changes_a_running_job(kind: Kind) {
    let Some((c, plan)) = setup(kind, "thl") else {
        return;
    };
    let mut apply = spawn_apply(
        &c,
        &[&plan, "--batch-size", "500", "--max-rows-per-sec", "500"],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let out = run(&c, &["status", "--format", "json"]).await;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["throttle"]["throttled"] == "rate cap 500 rows/s" {
            let text = stdout(&run(&c, &["status"]).await);
            assert!(text.contains("throttled: rate cap 500 rows/s"), "{text}");
            break v["job"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "never shown throttled: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let shown = run(&c, &["throttle", &job]).await;
    assert!(shown.status.success(), "{}", stderr(&shown));
    assert!(
        stdout(&shown).contains("at most 500 rows/s"),
        "{}",
        stdout(&shown)
    );
    let lifted_at = Instant::now();
    let out = run(&c, &["throttle", &job, "--max-rows-per-sec", "0"]).await;
    assert!(out.status.success(), "throttle: {}", stderr(&out));
    assert!(
        stderr(&out).contains("no rate cap (was at most 500 rows/s)"),
        "{}",
        stderr(&out)
    );
    // What is left would take over 30 s at the cap.
    while apply.try_wait().unwrap().is_none() {
        assert!(
            lifted_at.elapsed() < Duration::from_secs(25),
            "the lifted cap still held the copy back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = apply.wait_with_output().unwrap();
    assert!(out.status.success(), "apply: {}", stderr(&out));
    let events = event_details(&c, &job);
    assert!(
        events.iter().any(|e| e == "throttle_set no rate cap"),
        "{events:?}"
    );
    all_rows_at_s1(&c);
}

/// Bad input: a job that has finished has nothing to throttle (exit 2).
async fn throttle_refuses_a_finished_job(kind: Kind) {
    let Some((c, plan)) = setup(kind, "thf") else {
        return;
    };
    let out = run(
        &c,
        &["apply", &plan, "--yes", "--complete", "--progress", "plain"],
    )
    .await;
    assert!(out.status.success(), "apply: {}", stderr(&out));
    let job = job_id(&out).expect("job id");
    let out = run(&c, &["throttle", &job, "--max-rows-per-sec", "100"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing left to throttle"),
        "{}",
        stderr(&out)
    );
}

/// `verify --max-rows-per-sec` paces the comparison: 20,000 source rows at 5,000 rows/s take
/// at least 4 s (each chunk is charged before the next is read), and the verdict stands.
async fn verify_paces_its_reads(kind: Kind) {
    let Some((c, plan)) = setup(kind, "thv") else {
        return;
    };
    let out = run(&c, &["apply", &plan, "--yes", "--progress", "plain"]).await;
    assert!(out.status.success(), "apply: {}", stderr(&out));
    let job = job_id(&out).expect("job id");
    let out = run(&c, &["verify", &job, "--max-rows-per-sec", "0"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--max-rows-per-sec"),
        "{}",
        stderr(&out)
    );
    let started = Instant::now();
    let out = run(
        &c,
        &[
            "verify",
            &job,
            "--max-rows-per-sec",
            "5000",
            "--progress",
            "plain",
        ],
    )
    .await;
    let took = started.elapsed();
    assert!(out.status.success(), "verify: {}", stderr(&out));
    assert!(
        took >= Duration::from_millis(3800),
        "20,000 rows verified at 5,000 rows/s in {took:?}"
    );
}

/// A worker process, killed when the test ends however it ends.
struct Worker(std::process::Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two workers copying one move each share the job's cap: 30,000 rows at 3,000 rows/s take at
/// least 9 s of copying together (each alone at the full cap would take under 5 s).
async fn workers_share_the_cap(kind: Kind) {
    let Some(c) = Cluster::create(kind, "thw", 4) else {
        return;
    };
    const HALF: i64 = 15_000;
    c.table_t(&["s0", "s1", "s2", "s3"]);
    c.fill_t("s0", 1..=HALF);
    c.fill_t("s1", HALF + 1..=2 * HALF);
    let url = |s: &str| c.db(s).url.clone();
    let map = |shards: [&str; 2]| {
        let urls: serde_json::Map<String, serde_json::Value> = shards
            .iter()
            .map(|s| (s.to_string(), url(s).into()))
            .collect();
        serde_json::json!({"shards": urls, "tables": [{"name": "t", "key": "id"}],
               "partitioning": ranges(&shards, &[HALF + 1])})
    };
    let plan = c.write_plan("plan", &map(["s0", "s1"]), &map(["s2", "s3"]));
    let out = run(
        &c,
        &[
            "apply",
            plan.to_str().unwrap(),
            "--yes",
            "--no-wait",
            "--batch-size",
            "1000",
            "--max-rows-per-sec",
            "3000",
        ],
    )
    .await;
    assert!(out.status.success(), "apply --no-wait: {}", stderr(&out));
    let job = job_id(&out).expect("job id");
    let _workers: Vec<Worker> = (0..2)
        .map(|i| {
            let log = std::fs::File::create(c.dir.path().join(format!("w{i}.log"))).unwrap();
            c.cmd(&[
                "worker",
                "--lease-ttl",
                "3s",
                "--idle",
                "100ms",
                "--parallel",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map(Worker)
            .expect("start a worker")
        })
        .collect();
    let copied = |v: &serde_json::Value| v["rows_copied"].as_u64().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut first = None;
    let took = loop {
        let v = status(&c, &job).await;
        if first.is_none() && copied(&v) > 0 {
            first = Some(Instant::now());
        }
        if copied(&v) >= 2 * HALF as u64 {
            break first.map(|t| t.elapsed()).unwrap_or_default();
        }
        assert!(Instant::now() < deadline, "the copy did not finish: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        took >= Duration::from_secs(8),
        "30,000 rows under a 3,000 rows/s cap shared by two workers in {took:?}"
    );
    let events = event_details(&c, &job);
    assert!(
        events
            .iter()
            .any(|e| e.contains("rate cap 3,000 rows/s (shared by 2 processes)")),
        "{events:?}"
    );
}

/// `--max-load 2` while three sessions sleep in a statement at the destination: the copy holds
/// (rows copied stay put, status names the shard and its load), then goes on once they end,
/// and every row arrives. Fails without the limit: 20,000 rows copy well within the sleep.
async fn load_limit_holds_the_copy(c: Cluster, sleep: &'static str) {
    let Some((c, plan)) = setup_on(c) else {
        return;
    };
    let sleepers: Vec<_> = (0..3)
        .map(|_| common::db::exec_in_background(c.kind, c.db("s1").url.clone(), sleep.into()))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut apply = spawn_apply(&c, &[&plan, "--batch-size", "500", "--max-load", "2"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (job, held_at) = loop {
        let out = run(&c, &["status", "--format", "json"]).await;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let why = v["throttle"]["throttled"].as_str().unwrap_or("");
        // MariaDB's figure is the server's, which both shards share here.
        if (why.starts_with("s1 load ") || c.kind == Kind::Mysql && why.starts_with("s0 load "))
            && why.ends_with("active sessions > 2")
        {
            break (
                v["job"].as_str().unwrap().to_string(),
                v["rows_copied"].as_u64().unwrap_or(0),
            );
        }
        assert!(
            Instant::now() < deadline,
            "never shown held by the load: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let v = status(&c, &job).await;
    let later = v["rows_copied"].as_u64().unwrap_or(0);
    assert!(
        later <= held_at + 500 && later < ROWS as u64,
        "copied on while held: {held_at} then {later}: {v}"
    );
    for s in sleepers {
        tokio::task::spawn_blocking(move || s.join().expect("sleeper"))
            .await
            .unwrap();
    }
    let out = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        while apply.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = apply.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        apply.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "apply: {}", stderr(&out));
    all_rows_at_s1(&c);
    let events = event_details(&c, &job);
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("throttled throttled: s") && e.contains(" load ")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.starts_with("throttle_ended")),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_load_limit_holds_the_copy() {
    let Some(c) = Cluster::create(Kind::Postgres, "thp", 2) else {
        return;
    };
    load_limit_holds_the_copy(c, "SELECT pg_sleep(6)").await;
}

/// On a server of the test's own: Threads_running is the server's, and other tests move it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_load_limit_holds_the_copy() {
    let Some(server) = PrivateMariadb::start() else {
        return;
    };
    let Some(c) = Cluster::create_on(Kind::Mysql, Some(server.url.clone()), "thm", 2) else {
        return;
    };
    load_limit_holds_the_copy(c, "SELECT SLEEP(6)").await;
}

/// `--batch-time`: batches grow toward a long target (doubling at most) and shrink toward a
/// short one; `reshard throttle --batch-time` changes the target while the job runs. The
/// sizes are read from the job's `batch_size` events.
async fn batch_time_sizes_the_batches(kind: Kind) {
    let Some((c, plan)) = setup(kind, "thb") else {
        return;
    };
    let args = [
        "apply",
        &plan,
        "--yes",
        "--progress",
        "plain",
        "--batch-size",
        "100",
        "--batch-time",
        "10s",
    ];
    let out = run(&c, &args).await;
    assert!(out.status.success(), "apply: {}", stderr(&out));
    let job = job_id(&out).expect("job id");
    let events = event_details(&c, &job);
    let sizes: Vec<&String> = events
        .iter()
        .filter(|e| e.starts_with("batch_size "))
        .collect();
    // 100, 200, 400, ... 6,400: each batch took far less than half of 10 s.
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("batch_size t: batch size 6400 rows")),
        "{sizes:?}"
    );

    let Some((c, plan)) = setup(kind, "ths") else {
        return;
    };
    let apply = spawn_apply(&c, &[&plan, "--batch-size", "1000", "--batch-time", "1ms"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let out = run(&c, &["jobs", "--format", "json"]).await;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(job) = v[0]["job"].as_str() {
            let events = event_details(&c, job);
            // Halved at least three times: 1,000 -> 125 or fewer.
            let small = events.iter().any(|e| {
                e.strip_prefix("batch_size t: batch size ")
                    .and_then(|r| r.split(' ').next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n <= 125)
            });
            if small {
                break job.to_string();
            }
        }
        assert!(Instant::now() < deadline, "batches never shrank: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = run(&c, &["throttle", &job, "--batch-time", "10s"]).await;
    assert!(out.status.success(), "throttle: {}", stderr(&out));
    let out = tokio::task::spawn_blocking(move || apply.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "apply: {}", stderr(&out));
    all_rows_at_s1(&c);
    let events = event_details(&c, &job);
    assert!(
        events
            .iter()
            .any(|e| e == "throttle_set copy batches sized toward 10000 ms each"),
        "{events:?}"
    );
}

/// Under the Router writer, a capped job (copy, catch-up and reverse sync paced; the load limit
/// on) completes and the writer lost nothing: the throttles pause work, never correctness.
async fn throttled_under_the_writer(kind: Kind) {
    let Some(s) = common::online::setup(kind, "thu") else {
        return;
    };
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
            "--batch-size",
            "10",
            "--max-rows-per-sec",
            "1000",
            "--max-load",
            "500",
        ],
    )
    .await;
    assert!(out.status.success(), "apply: {}", stderr(&out));
    let job = job_id(&out).expect("job id");
    assert_eq!(status(&s.c, &job).await["state"], "completed");
    let events = event_details(&s.c, &job);
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("throttled throttled: rate cap 1,000 rows/s")),
        "the cap held the copy back: {events:?}"
    );
    let n = w.running.acknowledged();
    w.running.wait_for(n + 30).await;
    w.stop_and_check(true).await;
}

per_backend_async!(
    rate_cap_paces_the_copy,
    throttle_changes_a_running_job,
    throttle_refuses_a_finished_job,
    verify_paces_its_reads,
    workers_share_the_cap,
    batch_time_sizes_the_batches,
    throttled_under_the_writer
);
