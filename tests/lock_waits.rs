//! Bounded lock waits (issue 12): an application transaction left open on a source table must
//! not stall reshard's trigger installation, nor every application write queued behind it.
//! reshard's DDL runs under `--lock-timeout`, names the holder on stderr, retries so queued
//! writes get through in between, stops resumable past the bound, and a second SIGINT stops a
//! blocked install at once (exit 130, job interrupted, resumable).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::cluster::{modulo, stderr};
use common::conn::RawConn;
use common::db::Kind;
use common::online::{run, setup, status, Setup};

/// A session holding a lock on `users` at s0: a transaction left open after an UPDATE (idle in
/// transaction), and its pid (PostgreSQL) or processlist id (MariaDB).
async fn hold_users(s: &Setup) -> (RawConn, i64) {
    let db = s.c.db("s0");
    let mut c = RawConn::open(db).await;
    let id_sql = match db.kind {
        Kind::Postgres => "SELECT pg_backend_pid()::bigint, 0::bigint",
        Kind::Mysql => "SELECT CAST(CONNECTION_ID() AS SIGNED), CAST(0 AS SIGNED)",
        Kind::Sqlite => "SELECT 0, 0",
    };
    let pid = match c.pairs(id_sql, true).await[0].0 {
        reshard::Key::Int(p) => p,
        ref k => panic!("pid {k:?}"),
    };
    if db.kind == Kind::Sqlite {
        c.execute("BEGIN IMMEDIATE").await.unwrap();
    } else {
        c.execute("BEGIN").await.unwrap();
    }
    c.execute("UPDATE users SET name = name WHERE id = 2")
        .await
        .unwrap();
    (c, pid)
}

/// The binary, started with stderr read line by line on a thread of its own.
fn spawn(s: &Setup, args: &[&str], env: &[(&str, &str)]) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = s.c.cmd(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn reshard");
    let err = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in err.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Reads stderr lines into `seen` until one contains `needle`; the deadline only turns a hang
/// into a failure.
async fn wait_line(rx: &mpsc::Receiver<String>, seen: &mut String, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match rx.try_recv() {
            Ok(l) => {
                seen.push_str(&l);
                seen.push('\n');
                if l.contains(needle) {
                    return l;
                }
            }
            Err(mpsc::TryRecvError::Empty) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(mpsc::TryRecvError::Disconnected) => break,
        }
    }
    panic!("no stderr line with {needle:?}:\n{seen}");
}

async fn wait_exit(mut child: Child, rx: mpsc::Receiver<String>, seen: &mut String) -> i32 {
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    // The reader thread ends with the process's stderr.
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(5)) {
        seen.push_str(&l);
        seen.push('\n');
    }
    status.code().unwrap_or(-1)
}

/// An application writer inserting rows of a key that stays at s0 (id ≡ 0 mod 6) on its own
/// connection, recording each write's latency.
struct AppWriter {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Duration>>,
}

impl AppWriter {
    async fn start(s: &Setup) -> AppWriter {
        let mut c = RawConn::open(s.c.db("s0")).await;
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let task = tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0i64;
            while !st.load(Ordering::SeqCst) {
                let id = 6_000_000 + 6 * i;
                i += 1;
                let t = Instant::now();
                c.execute(&format!(
                    "INSERT INTO users (id, name, score) VALUES ({id}, 'app', 1.5)"
                ))
                .await
                .unwrap_or_else(|e| panic!("application write: {e}"));
                lat.push(t.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            lat
        });
        AppWriter { stop, task }
    }

    /// (writes, p99, max).
    async fn stop(self) -> (usize, Duration, Duration) {
        self.stop.store(true, Ordering::SeqCst);
        let mut lat = self.task.await.unwrap();
        lat.sort();
        let n = lat.len();
        assert!(n > 0, "the writer wrote nothing");
        (n, lat[(n * 99 / 100).min(n - 1)], lat[n - 1])
    }
}

fn to_map(s: &Setup) -> serde_json::Value {
    s.c.map(&["s0", "s1", "s2"], modulo("identity", &["s0", "s1", "s2"]))
}

/// The bug: `CREATE TRIGGER` queued behind an idle transaction's lock with no timeout, and every
/// application INSERT queued behind it (55 s). Now the writer's latency stays within the lock
/// timeout plus a margin, stderr names the holder, and apply finishes once it is gone.
async fn regression_create_trigger_waits_unbounded_behind_idle_transaction(kind: Kind) {
    let Some(s) = setup(kind, "lwreg") else {
        return;
    };
    let before = s.c.snapshot();
    let (mut holder, pid) = hold_users(&s).await;
    let writer = AppWriter::start(&s).await;
    let (child, rx) = spawn(
        &s,
        &[
            "apply",
            &s.plan,
            "--yes",
            "--lock-timeout",
            "500ms",
            "--progress",
            "plain",
        ],
        &[],
    );
    let mut seen = String::new();
    let line = wait_line(&rx, &mut seen, "waits for a lock held by").await;
    eprintln!("{kind:?}: {line}");
    assert!(
        line.contains(&pid.to_string()),
        "holder {pid} not named: {line}"
    );
    assert!(line.contains("retry 2/10"), "{line}");
    // Several attempts come and go under the writer.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (n, p99, max) = writer.stop().await;
    holder.execute("ROLLBACK").await.unwrap();
    let code = wait_exit(child, rx, &mut seen).await;
    assert_eq!(code, 0, "{seen}");
    eprintln!("{kind:?}: {n} application writes while apply waited: p99 {p99:?}, max {max:?}");
    // MariaDB counts lock_wait_timeout in whole seconds: 500ms is 1 s there.
    let timeout = match kind {
        Kind::Mysql => Duration::from_secs(1),
        _ => Duration::from_millis(500),
    };
    let bound = timeout + Duration::from_millis(1500);
    assert!(
        max < bound,
        "a write waited {max:?} (bound {bound:?}):\n{seen}"
    );
    s.c.db("s0")
        .exec_async("DELETE FROM users WHERE id >= 6000000")
        .await;
    tokio::task::block_in_place(|| s.c.assert_copied(&before, &s.from, &to_map(&s)));
}

/// Past the bound (the holder never lets go): apply stops as failed (exit 1) naming the holder;
/// once it is gone, resume finishes.
async fn bound_exceeded_then_resume(kind: Kind) {
    let Some(s) = setup(kind, "lwbound") else {
        return;
    };
    let (mut holder, pid) = hold_users(&s).await;
    // Three attempts rather than ten: the same path, sooner.
    let mut cmd = s.c.cmd(&[
        "apply",
        &s.plan,
        "--yes",
        "--lock-timeout",
        "300ms",
        "--progress",
        "plain",
    ]);
    cmd.env("RESHARD_LOCK_RETRIES", "3");
    let o = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("gave up after"), "{err}");
    if kind != Kind::Sqlite {
        assert!(
            err.contains(&format!("held by pid {pid}"))
                || err.contains(&format!("processlist id {pid}")),
            "holder {pid} not named:\n{err}"
        );
    }
    let job = common::cluster::job_id(&o).expect("job id");
    assert_eq!(status(&s.c, &job).await["state"], "failed");
    holder.execute("ROLLBACK").await.unwrap();
    let r = run(&s.c, &["resume", &job, "--progress", "plain"]).await;
    assert!(r.status.success(), "{}", stderr(&r));
}

/// A second SIGINT during a blocked install stops at once: exit 130, the job interrupted;
/// resume finishes once the holder is gone.
async fn second_sigint_stops_a_blocked_install(kind: Kind) {
    let Some(s) = setup(kind, "lwint") else {
        return;
    };
    let (mut holder, _) = hold_users(&s).await;
    let (child, rx) = spawn(
        &s,
        &[
            "apply",
            &s.plan,
            "--yes",
            "--lock-timeout",
            "2s",
            "--progress",
            "plain",
        ],
        &[],
    );
    let mut seen = String::new();
    wait_line(&rx, &mut seen, "waits for a lock").await;
    // Into the next attempt's wait (after the 200 ms backoff).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = child.id().to_string();
    let kill = || {
        let st = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(st.success());
    };
    let t = Instant::now();
    kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    kill();
    let code = wait_exit(child, rx, &mut seen).await;
    let took = t.elapsed();
    assert_eq!(code, 130, "{seen}");
    assert!(seen.contains("reshard resume j"), "{seen}");
    // Not the rest of the retries (10 attempts of 2 s).
    assert!(took < Duration::from_secs(10), "took {took:?}:\n{seen}");
    let st = run(&s.c, &["status", "--format", "json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["state"], "interrupted", "{v}");
    holder.execute("ROLLBACK").await.unwrap();
    let r = run(&s.c, &["resume", "--progress", "plain"]).await;
    assert!(r.status.success(), "{}", stderr(&r));
}

/// SQLite: the install's wait for the database's write lock is bounded by the busy timeout.
async fn sqlite_busy_timeout_bounds_the_install(kind: Kind) {
    bound_exceeded_then_resume(kind).await
}

macro_rules! server_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres { use super::*; $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(Kind::Postgres).await }
        )* }
        mod mysql { use super::*; $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(Kind::Mysql).await }
        )* }
    };
}

server_backends!(
    regression_create_trigger_waits_unbounded_behind_idle_transaction,
    bound_exceeded_then_resume,
    second_sigint_stops_a_blocked_install,
);

mod sqlite {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn busy_timeout_bounds_the_install() {
        super::sqlite_busy_timeout_bounds_the_install(Kind::Sqlite).await
    }
}
