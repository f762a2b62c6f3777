//! `reshard worker` under the Router writer: three workers share a ring-add job of three moves
//! (`apply --no-wait` creates it). One is frozen mid-copy (its task is taken over once the lease
//! expires) and then killed with -9 (on SQLite killed at once: a frozen process may hold the
//! catalog's write lock); another is killed with -9 mid-reverse-sync; the others take
//! their work over, the job pauses and resumes between, reverse sync keeps the old owners equal
//! to the new ones with no `sync` command, `complete` is asked of the serving worker, and every
//! acknowledged write is at its owner. PostgreSQL and MariaDB shards use a
//! PostgreSQL catalog (what workers on several machines share); SQLite shards a SQLite one.
//! A second test asks a worker to roll back and the writer loses nothing.

#[macro_use]
mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::cluster::{job_id, ring, stderr, Cluster};
use common::db::{Kind, TestDb};
use common::online::{run, status};
use common::writer::{self, Writer};

/// Leases short enough that a takeover after a kill is quick, long enough for a loaded machine.
const TTL_MS: u64 = 3000;

struct Job {
    c: Cluster,
    from: Value,
    plan: String,
    /// Holds the PostgreSQL catalog database while the test runs.
    _catalog: Option<TestDb>,
    /// One such job at a time in this binary: each starts several processes that each hold
    /// pools to every shard and the catalog, and two at once reached the shared PostgreSQL's
    /// 100 connections ("too many clients").
    _one_at_a_time: tokio::sync::MutexGuard<'static, ()>,
}

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Four shards; users 1..=n on a 3-node ring, planned onto a 4-node ring: three moves, one
/// from each old node to s3.
async fn ring_add(kind: Kind, tag: &str, users: i64) -> Option<Job> {
    let guard = ONE_AT_A_TIME.lock().await;
    let mut c = Cluster::create(kind, tag, 4)?;
    let catalog = if kind == Kind::Sqlite {
        None
    } else {
        let db = TestDb::create(Kind::Postgres, &format!("{tag}cat"))?;
        c.catalog = Some(db.url.clone());
        Some(db)
    };
    c.create_tables(&["s0", "s1", "s2", "s3"]);
    let from = c.map(&["s0", "s1", "s2"], ring("sha1", 16, &["s0", "s1", "s2"]));
    let to = c.map(
        &["s0", "s1", "s2", "s3"],
        ring("sha1", 16, &["s0", "s1", "s2", "s3"]),
    );
    c.populate(&from, users, 2);
    let plan = c.write_plan("plan", &from, &to).display().to_string();
    Some(Job {
        c,
        from,
        plan,
        _catalog: catalog,
        _one_at_a_time: guard,
    })
}

/// A worker process, killed when the test ends however it ends (a panicking test must not
/// leave workers holding connections).
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn worker(c: &Cluster, name: &str) -> Worker {
    worker_with(c, name, &[])
}

fn worker_with(c: &Cluster, name: &str, extra: &[&str]) -> Worker {
    let log = std::fs::File::create(c.dir.path().join(format!("{name}.log"))).unwrap();
    let ttl = format!("{TTL_MS}ms");
    let mut args = vec!["worker", "--lease-ttl", &ttl, "--idle", "200ms"];
    args.extend_from_slice(extra);
    c.cmd(&args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Worker)
        .expect("start a worker")
}

fn logs(c: &Cluster) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(c.dir.path()).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "log") {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- {}\n", p.display()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

async fn events(c: &Cluster, job: &str) -> Vec<Value> {
    let out = run(c, &["log", job, "--format", "json"]).await;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The pid in a lease owner id (`host:pid:nonce`).
fn pid_of(owner: &str) -> u32 {
    owner.split(':').nth(1).unwrap().parse().unwrap()
}

/// Waits (bounded) until `status` satisfies `ready`; returns it.
async fn until(c: &Cluster, job: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = status(c, job).await;
        if ready(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "never {what}: {v}\n{}", logs(c));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn copied(v: &Value) -> u64 {
    v["rows_copied"].as_u64().unwrap_or(0)
}

/// The live holders of the job's copy tasks, from the events: a task leased and not yet done
/// or released.
async fn copy_holders(c: &Cluster, job: &str) -> Vec<String> {
    let mut held: std::collections::BTreeMap<String, String> = Default::default();
    for e in events(c, job).await {
        let detail = e["detail"].as_str().unwrap_or("");
        let Some((task, rest)) = detail.split_once(" by ") else {
            continue;
        };
        let owner = rest.split(' ').next().unwrap_or("").to_string();
        match e["kind"].as_str() {
            Some("task_leased") => {
                held.insert(task.to_string(), owner);
            }
            Some("task_done" | "task_released") => {
                held.remove(task);
            }
            _ => {}
        }
    }
    held.into_values().collect()
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill {sig} {pid}");
}

fn kill9(workers: &mut [(u32, Worker)], pid: u32) {
    let w = workers
        .iter_mut()
        .find(|(p, _)| *p == pid)
        .unwrap_or_else(|| panic!("pid {pid} is not one of the test's workers"));
    w.1 .0.kill().unwrap();
    w.1 .0.wait().unwrap();
}

/// Waits for an event of `kind` whose detail names a takeover from a holder with `pid`; the
/// time from `since` until it appeared.
async fn takeover(c: &Cluster, job: &str, kind: &str, pid: u32, since: Instant) -> Duration {
    let needle = format!(":{pid}:");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = events(c, job).await.iter().any(|e| {
            e["kind"] == kind
                && e["detail"]
                    .as_str()
                    .and_then(|d| d.split_once("taken over from "))
                    .is_some_and(|(_, from)| from.contains(&needle))
        });
        if found {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} took over from pid {pid}\n{}",
            logs(c)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn three_workers_through_kills(kind: Kind) {
    let Some(j) = ring_add(kind, "wrk", 3000).await else {
        return;
    };
    let c = &j.c;
    let w = Writer::start(c, &j.from, writer::config(0)).await;
    let out = run(
        c,
        &["apply", &j.plan, "--yes", "--no-wait", "--batch-size", "10"],
    )
    .await;
    assert!(out.status.success(), "apply --no-wait: {}", stderr(&out));
    let job = job_id(&out).unwrap();
    assert!(stderr(&out).contains("reshard worker"), "{}", stderr(&out));
    let v = status(c, &job).await;
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(v["moves"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(copied(&v), 0, "no process runs the job yet");

    let mut workers: Vec<(u32, Worker)> = (0..3)
        .map(|i| {
            let w = worker(c, &format!("w{i}"));
            (w.0.id(), w)
        })
        .collect();

    // Mid-copy: every move is being copied by some worker; one of them dies.
    let v = until(c, &job, "copying", |v| copied(v) > 200).await;
    let holders = copy_holders(c, &job).await;
    assert!(!holders.is_empty(), "copy tasks are held: {v}");
    // status names who copies what, and the tasks in JSON.
    let text = common::cluster::stdout(&run(c, &["status", &job]).await);
    assert!(
        text.contains("being copied by workers") && text.contains("copying: m"),
        "{text}"
    );
    assert_eq!(v["tasks"].as_array().map(Vec::len), Some(3), "{v}");
    let victim = pid_of(&holders[0]);
    let before_kill = copied(&status(c, &job).await);
    if kind == Kind::Sqlite {
        // A frozen process may hold SQLite's write lock, which stops every worker of that
        // catalog (docs/online.md says so); a killed one releases it.
        let killed = Instant::now();
        kill9(&mut workers, victim);
        let took = takeover(c, &job, "task_leased", victim, killed).await;
        eprintln!("sqlite: copy task taken over {took:?} after the kill -9");
        assert!(
            took <= Duration::from_millis(TTL_MS + TTL_MS / 3 + 2000),
            "takeover took {took:?}"
        );
    } else {
        // Frozen first, as a hung worker or one cut off by the network: alive, so its tasks
        // are taken over only once their leases expire (renewed every third of the TTL).
        signal(victim, "-STOP");
        let frozen = Instant::now();
        let took = takeover(c, &job, "task_leased", victim, frozen).await;
        eprintln!(
            "{}: copy task of a frozen worker taken over after {took:?}",
            kind.name()
        );
        assert!(
            took >= Duration::from_millis(TTL_MS * 2 / 3 - 100),
            "taken over before the lease expired: {took:?}"
        );
        assert!(
            took <= Duration::from_millis(TTL_MS + TTL_MS / 3 + 2000),
            "takeover took {took:?}"
        );
        kill9(&mut workers, victim);
    }

    // Pause: the copy stops and stays stopped; resume --no-wait hands it back to the workers.
    let out = run(c, &["pause", &job]).await;
    assert!(out.status.success(), "pause: {}", stderr(&out));
    let v = until(c, &job, "paused", |v| v["state"] == "paused").await;
    let at_pause = copied(&v);
    assert!(at_pause >= before_kill, "{v}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let v = status(c, &job).await;
    if copied(&v) < v["rows_total"].as_u64().unwrap() {
        assert_eq!(copied(&v), at_pause, "rows copied while paused: {v}");
    }
    let out = run(c, &["resume", &job, "--no-wait"]).await;
    assert!(out.status.success(), "resume --no-wait: {}", stderr(&out));

    // Dual write: the worker serving it (reverse sync) dies; another takes the job's lease.
    let v = until(c, &job, "in dual write", |v| {
        v["state"] == "dual_write" && v["lease"].is_object()
    })
    .await;
    let server = pid_of(v["lease"]["owner"].as_str().unwrap());
    // Reverse sync at work first: the writer writes through the new owners.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let killed = Instant::now();
    kill9(&mut workers, server);
    let took = takeover(c, &job, "lease_acquired", server, killed).await;
    eprintln!(
        "{}: reverse sync taken over {took:?} after the kill -9",
        kind.name()
    );
    assert!(
        took <= Duration::from_millis(TTL_MS + TTL_MS / 3 + 2000),
        "takeover took {took:?}"
    );

    // With no `sync` command, the old owners converge on the new owners' rows.
    let (router, before, tally) = w.stop().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = run(c, &["verify", &job]).await;
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old owners never matched: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Complete is asked of the serving worker, and waits for it.
    let out = run(c, &["complete", &job]).await;
    assert!(
        out.status.success(),
        "complete: {}\n{}",
        stderr(&out),
        logs(c)
    );
    assert!(
        stderr(&out).contains("requested of"),
        "complete was not asked of a worker: {}\n{}",
        stderr(&out),
        logs(c)
    );
    assert_eq!(status(c, &job).await["state"], "completed");
    writer::assert_no_loss(&router, &before, &tally, true).await;

    // The survivors stop on a signal, exit 130.
    for (pid, mut ch) in workers
        .into_iter()
        .filter(|(p, _)| *p != victim && *p != server)
    {
        signal(pid, "-INT");
        let st = ch.0.wait().unwrap();
        // Interrupted, like every command stopped by a signal (README's exit codes).
        assert_eq!(st.code(), Some(130), "worker {pid} stopped with {st}");
    }
}

/// `apply --no-wait`, then one worker runs the job into dual write and serves it: the job id,
/// the worker and the job's status then.
async fn served_in_dual_write(j: &Job) -> (String, Worker, Value) {
    let c = &j.c;
    let out = run(c, &["apply", &j.plan, "--yes", "--no-wait"]).await;
    assert!(out.status.success(), "apply --no-wait: {}", stderr(&out));
    let job = job_id(&out).unwrap();
    let w = worker(c, "w0");
    let v = until(c, &job, "in dual write", |v| {
        v["state"] == "dual_write" && v["lease"].is_object()
    })
    .await;
    (job, w, v)
}

async fn rollback_asked_of_a_worker(kind: Kind) {
    let Some(j) = ring_add(kind, "wrb", 300).await else {
        return;
    };
    let c = &j.c;
    let w = Writer::start(c, &j.from, writer::config(0)).await;
    let (job, _worker, _) = served_in_dual_write(&j).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = run(c, &["rollback", &job]).await;
    assert!(
        out.status.success(),
        "rollback: {}\n{}",
        stderr(&out),
        logs(c)
    );
    assert_eq!(status(c, &job).await["state"], "rolled_back");
    // Rolled back: the writer keeps writing to the old owners, and nothing it wrote to the new
    // ones in dual write was lost.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = run(c, &["cancel", &job]).await;
    assert!(out.status.success(), "cancel: {}", stderr(&out));
    w.stop_and_check(true).await;
}

/// A serving worker asked to roll back one move rolled back every flipped move: the spec it
/// carried requests out with was built before the request and never named the move.
async fn regression_worker_rolled_back_every_move_on_rollback_of_one(kind: Kind) {
    let Some(j) = ring_add(kind, "wr1", 200).await else {
        return;
    };
    let c = &j.c;
    let w = Writer::start(c, &j.from, writer::config(0)).await;
    let (job, _worker, v) = served_in_dual_write(&j).await;
    let ids: Vec<String> = v["moves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.len() >= 2, "{v}");
    let out = run(c, &["rollback", &job, "--move", &ids[0]]).await;
    assert!(
        out.status.success(),
        "rollback --move: {}\n{}",
        stderr(&out),
        logs(c)
    );
    let v = status(c, &job).await;
    for m in v["moves"].as_array().unwrap() {
        assert_eq!(
            m["flipped"] == false,
            m["id"] == ids[0].as_str(),
            "only {} is rolled back: {v}",
            ids[0]
        );
    }
    // In part: the job leaves dual write (Catalog::flip), and the rest are rolled back next.
    assert_eq!(v["state"], "rolled_back", "{v}");
    let out = run(c, &["rollback", &job]).await;
    assert!(out.status.success(), "rollback: {}", stderr(&out));
    let out = run(c, &["cancel", &job]).await;
    assert!(out.status.success(), "cancel: {}", stderr(&out));
    w.stop_and_check(true).await;
}

/// `GET path` of the worker's metrics endpoint: (status line, body).
async fn http_get(addr: &str, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "metrics at {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The value of the sample `name{labels}` in Prometheus text.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// `--metrics`: the figures are the catalog's, as `status` shows them.
async fn metrics_match_status(kind: Kind) {
    let Some(j) = ring_add(kind, "wmt", 300).await else {
        return;
    };
    let c = &j.c;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let out = run(c, &["apply", &j.plan, "--yes", "--no-wait"]).await;
    let job = job_id(&out).unwrap();
    let _w = worker_with(c, "wm", &["--metrics", &addr]);
    let v = until(c, &job, "in dual write", |v| {
        v["state"] == "dual_write" && v["lease"].is_object()
    })
    .await;
    let (status_line, body) = http_get(&addr, "/metrics").await;
    assert!(status_line.contains("200"), "{status_line}\n{body}");
    for m in v["moves"].as_array().unwrap() {
        let id = m["id"].as_str().unwrap();
        let series = format!("reshard_rows_copied_total{{job=\"{job}\",move=\"{id}\"}}");
        assert_eq!(
            sample(&body, &series),
            m["rows_copied"].as_f64(),
            "{series}\n{body}"
        );
        let series =
            format!("reshard_backlog_entries{{job=\"{job}\",move=\"{id}\",direction=\"reverse\"}}");
        assert!(sample(&body, &series).is_some(), "{series}\n{body}");
    }
    let done = format!("reshard_tasks{{job=\"{job}\",state=\"done\"}}");
    assert_eq!(sample(&body, &done), Some(3.0), "{body}");
    assert_eq!(
        sample(&body, "reshard_fence_seconds_count"),
        Some(3.0),
        "{body}"
    );
    let state = format!("reshard_job_state{{job=\"{job}\",state=\"dual_write\"}}");
    assert_eq!(sample(&body, &state), Some(1.0), "{body}");
    let (status_line, _) = http_get(&addr, "/other").await;
    assert!(status_line.contains("404"), "{status_line}");
    let out = run(c, &["worker", "--metrics", "nowhere"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--metrics"), "{}", stderr(&out));
}

per_backend_async!(
    three_workers_through_kills,
    rollback_asked_of_a_worker,
    regression_worker_rolled_back_every_move_on_rollback_of_one,
    metrics_match_status
);

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A measurement, not a check (ignored): one worker's resident memory, sampled every 5 s while it
/// copies a ring-add job of 20,000 users under the writer, cuts over and serves reverse sync, for
/// RESHARD_RSS_SECS seconds (default 180) on RESHARD_RSS_KIND shards (sqlite, postgres or mysql).
/// `cargo test --test worker worker_rss -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn worker_rss() {
    let kind = match std::env::var("RESHARD_RSS_KIND").as_deref() {
        Ok("postgres") => Kind::Postgres,
        Ok("mysql") => Kind::Mysql,
        _ => Kind::Sqlite,
    };
    let secs: u64 = std::env::var("RESHARD_RSS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    let Some(j) = ring_add(kind, "rss", 20_000).await else {
        return;
    };
    let c = &j.c;
    let w = Writer::start(c, &j.from, writer::config(0)).await;
    let out = run(c, &["apply", &j.plan, "--yes", "--no-wait"]).await;
    let job = job_id(&out).unwrap();
    let wk = worker(c, "rss");
    let pid = wk.0.id();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        let v = status(c, &job).await;
        eprintln!(
            "t={:>4}s state={} copied={} rss={} KiB",
            started.elapsed().as_secs(),
            v["state"],
            copied(&v),
            rss_kib(pid)
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let out = run(c, &["complete", &job]).await;
    assert!(out.status.success(), "complete: {}", stderr(&out));
    w.stop_and_check(true).await;
}
