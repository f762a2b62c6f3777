//! Bounded lock waits (issue 12): an application transaction left open on a source table must
//! not stall reshard's trigger installation, nor every application write queued behind it.
//! reshard's DDL runs under `--lock-timeout`, names the holder on stderr, retries so queued
//! writes get through in between, stops resumable past the bound, and a second SIGINT stops a
//! blocked install at once (exit 130, job interrupted, resumable). The same for the fence a
//! cutover raises, behind an application transaction holding the fence row; the lock timeout
//! given to `apply` is the job's, used by `resume`; and a second SIGINT also stops a copy
//! statement that waits however long.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::cluster::{modulo, stderr};
use common::conn::RawConn;
use common::db::Kind;
use common::online::{complete_and_audit, killed_at, run, setup, status, Setup};

/// A connection to `shard` and its pid (PostgreSQL) or processlist id (MariaDB); 0 on SQLite.
async fn session(s: &Setup, shard: &str) -> (RawConn, i64) {
    let db = s.c.db(shard);
    let mut c = RawConn::open_registered(db).await;
    let id_sql = match db.kind {
        Kind::Postgres => "SELECT pg_backend_pid()::bigint, 0::bigint",
        Kind::Mysql => "SELECT CAST(CONNECTION_ID() AS SIGNED), CAST(0 AS SIGNED)",
        Kind::Sqlite => "SELECT 0, 0",
    };
    let pid = match c.pairs(id_sql, true).await[0].0 {
        reshard::Key::Int(p) => p,
        ref k => panic!("pid {k:?}"),
    };
    (c, pid)
}

/// A session holding a lock on `users` at s0: a transaction left open after an UPDATE (idle in
/// transaction), and its pid (PostgreSQL) or processlist id (MariaDB).
async fn hold_users(s: &Setup) -> (RawConn, i64) {
    let (mut c, pid) = session(s, "s0").await;
    if s.c.db("s0").kind == Kind::Sqlite {
        c.execute("BEGIN IMMEDIATE").await.unwrap();
    } else {
        c.execute("BEGIN").await.unwrap();
    }
    c.execute("UPDATE users SET name = name WHERE id = 2")
        .await
        .unwrap();
    (c, pid)
}

/// A session at s0 holding the shared lock on the fence row of the move s0 -> s2 (pair (0, 2)),
/// as the guard of an application transaction that wrote one of the move's keys and was left
/// open takes it. Raising that move's fence (an UPDATE of the row) waits for it.
async fn hold_fence(s: &Setup) -> (RawConn, i64) {
    let (mut c, pid) = session(s, "s0").await;
    let lock = match s.c.db("s0").kind {
        Kind::Mysql => "LOCK IN SHARE MODE",
        _ => "FOR SHARE",
    };
    c.execute("BEGIN").await.unwrap();
    c.execute(&format!(
        "SELECT fenced FROM _reshard_fence WHERE src = 0 AND dst = 2 {lock}"
    ))
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

/// Sends SIGINT to the binary, as Ctrl-C does.
fn sigint(child: &Child) {
    let st = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// An application writer inserting rows at s0 on its own connection (keys that stay there, or
/// keys of the move s0 -> s2), recording each write's latency.
struct AppWriter {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Duration>>,
}

/// Keys the setup's plan leaves at s0 (id ≡ 0 mod 6) and keys it moves s0 -> s2 (id ≡ 2 mod 6),
/// far above the populated ones.
const STAYING: i64 = 6_000_000;
const MOVING: i64 = 6_000_002;

impl AppWriter {
    async fn start(s: &Setup) -> AppWriter {
        Self::start_at(s, STAYING).await
    }

    /// Inserts ids `base`, `base + 6`, ... at s0.
    async fn start_at(s: &Setup, base: i64) -> AppWriter {
        let mut c = RawConn::open(s.c.db("s0")).await;
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let task = tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0i64;
            while !st.load(Ordering::SeqCst) {
                let id = base + 6 * i;
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
    let kill = || sigint(&child);
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

/// The lock timeout `--lock-timeout 500ms` gives on `kind`: MariaDB counts whole seconds.
fn effective(kind: Kind, ms: u64) -> Duration {
    match kind {
        Kind::Mysql => Duration::from_millis(ms.div_ceil(1000) * 1000),
        _ => Duration::from_millis(ms),
    }
}

/// Regression: the fence a cutover raises waited for the whole `--max-fence` budget behind a
/// transaction holding the fence row, not the lock timeout, and named no holder; on MariaDB the
/// move's application writes queued behind it that long. Now the raise is bounded like the
/// other fence statements: it names the holder, application writes of the move's keys stay
/// within the lock timeout, and the cutover proceeds once the holder ends. apply stops after
/// installing so that the holder takes the row before the cutover; resume runs the cutover,
/// under the lock timeout apply was given.
async fn regression_fence_raise_ignores_lock_timeout_and_names_no_holder(kind: Kind) {
    let Some(s) = setup(kind, "lwfence") else {
        return;
    };
    let job = killed_at(&s, "install:3", &["--lock-timeout", "500ms"]);
    let (mut holder, pid) = hold_fence(&s).await;
    let writer = AppWriter::start_at(&s, MOVING).await;
    let (child, rx) = spawn(&s, &["resume", &job, "--progress", "plain"], &[]);
    let mut seen = String::new();
    let line = wait_line(&rx, &mut seen, "waits for a lock held by").await;
    eprintln!("{kind:?}: {line}");
    assert!(line.contains("UPDATE _reshard_fence"), "{line}");
    assert!(
        line.contains(&pid.to_string()),
        "holder {pid} not named: {line}"
    );
    assert!(
        seen.contains("lock timeout 500 ms, as the job was started with"),
        "{seen}"
    );
    // Several attempts come and go under the writer.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (n, p99, max) = writer.stop().await;
    // The writer's rows are not the plan's: deleted before the flip, as an application would
    // (captured and carried to s2 like every write), so that the audit's counts hold.
    s.c.db("s0")
        .exec_async("DELETE FROM users WHERE id >= 6000000")
        .await;
    holder.execute("ROLLBACK").await.unwrap();
    let code = wait_exit(child, rx, &mut seen).await;
    assert_eq!(code, 0, "{seen}");
    eprintln!(
        "{kind:?}: {n} writes of the move's keys while the fence waited: p99 {p99:?}, max {max:?}"
    );
    let timeout = effective(kind, 500);
    let bound = timeout + Duration::from_millis(200);
    assert!(p99 < bound, "p99 {p99:?} (bound {bound:?}):\n{seen}");
    let bound = timeout + Duration::from_millis(1500);
    assert!(
        max < bound,
        "a write waited {max:?} (bound {bound:?}):\n{seen}"
    );
    complete_and_audit(&s.c, &job).await;
}

/// Past the bound (the fence row's holder never lets go): the cutover stops the job as failed
/// (exit 1) naming the holder, with the fence down; once the holder is gone, resume finishes.
async fn fence_bound_exceeded_then_resume(kind: Kind) {
    let Some(s) = setup(kind, "lwfbound") else {
        return;
    };
    let job = killed_at(&s, "install:3", &["--lock-timeout", "300ms"]);
    let (mut holder, pid) = hold_fence(&s).await;
    let o = resume_retrying(&s, &job, &[], 3).await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("gave up after 3 attempt(s) of 300 ms each"),
        "{err}"
    );
    assert!(
        err.contains(&format!("held by pid {pid}"))
            || err.contains(&format!("processlist id {pid}")),
        "holder {pid} not named:\n{err}"
    );
    assert_eq!(status(&s.c, &job).await["state"], "failed");
    // The fence is down: the move's keys are writable at their owner meanwhile.
    s.c.db("s0")
        .exec_async("UPDATE users SET name = name WHERE id = 2")
        .await;
    holder.execute("ROLLBACK").await.unwrap();
    let r = run(&s.c, &["resume", &job, "--progress", "plain"]).await;
    assert!(r.status.success(), "{}", stderr(&r));
    complete_and_audit(&s.c, &job).await;
}

/// `resume JOB` (with `extra` flags) giving up after `attempts` lock waits: the same path as
/// ten attempts, sooner.
async fn resume_retrying(
    s: &Setup,
    job: &str,
    extra: &[&str],
    attempts: u32,
) -> std::process::Output {
    let mut args = vec!["resume", job, "--progress", "plain"];
    args.extend_from_slice(extra);
    let mut cmd = s.c.cmd(&args);
    cmd.env("RESHARD_LOCK_RETRIES", attempts.to_string());
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// Regression: `--lock-timeout` given to apply was not kept with the job, so `resume` after a
/// crash waited the default 1 s per attempt instead. Now resume uses the job's (300 ms here),
/// unless given its own (400 ms), and so does complete.
async fn regression_resume_forgets_the_lock_timeout_given_to_apply(kind: Kind) {
    let Some(s) = setup(kind, "lwkeep") else {
        return;
    };
    let job = killed_at(&s, "install:1", &["--lock-timeout", "300ms"]);
    let (mut holder, _) = hold_users(&s).await;
    for (extra, want) in [
        (vec![], "300 ms"),
        (vec!["--lock-timeout", "400ms"], "400 ms"),
    ] {
        let o = resume_retrying(&s, &job, &extra, 2).await;
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("gave up after 2 attempt(s) of {want} each")),
            "{want}:\n{err}"
        );
    }
    holder.execute("ROLLBACK").await.unwrap();
    let r = run(&s.c, &["resume", &job, "--progress", "plain"]).await;
    assert!(r.status.success(), "{}", stderr(&r));
    // complete (like rollback, cancel and sync) takes the job's too.
    let r = run(&s.c, &["complete", &job]).await;
    let err = stderr(&r);
    assert!(r.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "job {job}: lock timeout 300 ms, as the job was started with"
        )),
        "{err}"
    );
    complete_and_audit(&s.c, &job).await;
}

/// Waits until some session of `shard`'s database waits for a lock, while `child` runs; the
/// deadline only turns a hang into a failure.
async fn wait_for_lock_wait(s: &Setup, shard: &str, child: &mut Child) {
    let (mut c, _) = session(s, shard).await;
    let sql = match s.c.db(shard).kind {
        Kind::Postgres => {
            "SELECT count(*)::bigint, 0::bigint FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'"
        }
        _ => {
            // INNODB_TRX does not always show the wait of an INSERT ... ON DUPLICATE KEY
            // UPDATE as LOCK WAIT: a write to users still running after half a second is it.
            "SELECT COUNT(*), CAST(0 AS SIGNED) FROM information_schema.PROCESSLIST \
             WHERE DB = DATABASE() AND COMMAND <> 'Sleep' AND TIME_MS > 500 \
             AND INFO LIKE 'INSERT INTO `users`%'"
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if c.pairs(sql, true).await[0].0 != reshard::Key::Int(0) {
            return;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("reshard exited ({st}) before any session of {shard} waited for a lock");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sessions = match s.c.db(shard).kind {
        Kind::Postgres => {
            "SELECT pid::text, state, wait_event_type, query FROM pg_stat_activity \
             WHERE datname = current_database()"
        }
        _ => {
            "SELECT CAST(ID AS CHAR), COMMAND, COALESCE(STATE, ''), COALESCE(INFO, '') \
             FROM information_schema.PROCESSLIST WHERE DB = DATABASE()"
        }
    };
    let dump = s.c.db(shard).query_async(sessions).await;
    panic!("no session of {shard} came to wait for a lock: {dump:?}");
}

/// Regression: a second SIGINT stopped only a blocked DDL or fence statement; a copy whose
/// write waited (here behind an application transaction holding key 2 at the destination,
/// uncommitted) kept the process until the statement returned. Now the second signal abandons
/// the batch uncommitted: exit 130 at once, the job interrupted; resume copies it again.
async fn regression_second_sigint_waits_for_a_long_copy_statement(kind: Kind) {
    let Some(s) = setup(kind, "lwcopy") else {
        return;
    };
    let job = killed_at(&s, "before_upsert:1", &[]);
    let (mut holder, _) = session(&s, "s2").await;
    holder.execute("BEGIN").await.unwrap();
    holder
        .execute("INSERT INTO users (id, name, score) VALUES (2, 'holder', 0)")
        .await
        .unwrap();
    let (mut child, rx) = spawn(&s, &["resume", &job, "--progress", "plain"], &[]);
    wait_for_lock_wait(&s, "s2", &mut child).await;
    sigint(&child);
    // The first signal waits for the batch in flight, which waits for the holder.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited at the first signal"
    );
    let t = Instant::now();
    sigint(&child);
    let mut seen = String::new();
    while child.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = t.elapsed();
    if child.try_wait().unwrap().is_none() {
        child.kill().unwrap();
        let _ = wait_exit(child, rx, &mut seen).await;
        panic!("still running {took:?} after the second SIGINT:\n{seen}");
    }
    let code = wait_exit(child, rx, &mut seen).await;
    assert_eq!(code, 130, "{seen}");
    assert!(seen.contains("reshard resume j"), "{seen}");
    // Bound, not benchmark: the statement itself would wait as long as the holder.
    assert!(took < Duration::from_secs(10), "took {took:?}:\n{seen}");
    assert_eq!(status(&s.c, &job).await["state"], "interrupted");
    holder.execute("ROLLBACK").await.unwrap();
    let r = run(&s.c, &["resume", &job, "--progress", "plain"]).await;
    assert!(r.status.success(), "{}", stderr(&r));
    complete_and_audit(&s.c, &job).await;
}

/// Waits until the process `child` has stopped itself at a `:stop` failpoint (state T).
async fn wait_stopped(child: &mut Child) {
    let stat = format!("/proc/{}/stat", child.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let s = std::fs::read_to_string(&stat).unwrap_or_default();
        // `pid (comm) state ...`: the state follows the last ')'.
        if s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('T'))
        {
            return;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("reshard exited ({st}) before it stopped at the failpoint");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("reshard never stopped at the failpoint");
}

/// Runs `args` stopped at `point` (`NAME:N`, after capture and guards are handled), takes a
/// row lock with `lock_sql` on `shard` in a transaction left open, and lets the command go on;
/// returns the holder, the exit code and stderr.
async fn blocked_at(
    s: &Setup,
    args: &[&str],
    point: &str,
    shard: &str,
    lock_sql: &str,
) -> (RawConn, i32, String) {
    let stop = format!("{point}:stop");
    let env = [
        ("RESHARD_FAILPOINT", stop.as_str()),
        ("RESHARD_LOCK_RETRIES", "2"),
    ];
    let (mut child, rx) = spawn(s, args, &env);
    wait_stopped(&mut child).await;
    let (mut holder, _) = session(s, shard).await;
    holder.execute("BEGIN").await.unwrap();
    holder.execute(lock_sql).await.unwrap();
    let st = std::process::Command::new("kill")
        .args(["-CONT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let mut seen = String::new();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if child.try_wait().unwrap().is_none() {
        child.kill().unwrap();
        let _ = wait_exit(child, rx, &mut seen).await;
        panic!("{args:?} still waits 60 s behind the row lock:\n{seen}");
    }
    let code = wait_exit(child, rx, &mut seen).await;
    (holder, code, seen)
}

fn assert_gave_up(code: i32, err: &str, shard: &str) {
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "{shard}: DELETE FROM users waits for a lock held by"
        )),
        "holder not named:\n{err}"
    );
    assert!(
        err.contains("gave up after 2 attempt(s) of 300 ms each"),
        "{err}"
    );
}

/// `complete` of the setup's job, stopped by a row lock on key 2 at its old owner s0 taken
/// after capture was removed, past `--lock-timeout` (2 attempts of 300 ms): the setup, the job
/// and the holder, its transaction still open.
async fn complete_blocked(kind: Kind, tag: &str) -> Option<(Setup, String, RawConn)> {
    let s = setup(kind, tag)?;
    let job = common::online::applied(&s).await;
    let args = ["complete", &job, "--lock-timeout", "300ms"];
    let lock = "SELECT id FROM users WHERE id = 2 FOR UPDATE";
    let (holder, code, err) = blocked_at(&s, &args, "complete_capture_removed:1", "s0", lock).await;
    assert_gave_up(code, &err, "s0");
    Some((s, job, holder))
}

/// Regression: complete's and cancel's deletes waited without end behind an application
/// transaction holding one of their rows (PostgreSQL has no lock timeout by default; MariaDB
/// waited InnoDB's 50 s, then retried, for minutes). Now they wait `--lock-timeout` per
/// attempt, name the holder, stop resumable past the bound, and finish once it has gone.
/// complete deletes by key range (identity modulo: an exact filter).
async fn regression_complete_deletes_wait_unbounded_behind_a_row_lock(kind: Kind) {
    let Some((s, job, mut holder)) = complete_blocked(kind, "lwdel").await else {
        return;
    };
    holder.execute("ROLLBACK").await.unwrap();
    complete_and_audit(&s.c, &job).await;
    let left =
        s.c.db("s0")
            .query_async("SELECT id FROM users WHERE id = 2")
            .await;
    assert!(left.is_empty(), "key 2 still at its old owner: {left:?}");
}

/// Regression: a complete that failed after removing capture (or deleting old copies) left the
/// job `failed`. From there `rollback` flipped routing back onto old owners that had stopped
/// receiving writes or lost rows, and `complete` verified again, found them different and
/// refused for ever. The job now stays `completing`, rollback refuses and names complete, and
/// complete, run again, finishes without verifying.
async fn regression_failed_complete_can_be_rolled_back_onto_deleted_copies(kind: Kind) {
    let Some((s, job, mut holder)) = complete_blocked(kind, "lwfail").await else {
        return;
    };
    let v = status(&s.c, &job).await;
    assert_eq!(v["state"], "completing", "{v}");
    holder.execute("ROLLBACK").await.unwrap();
    let r = run(&s.c, &["rollback", &job]).await;
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    assert!(
        stderr(&r).contains(&format!("reshard complete {job}")),
        "{}",
        stderr(&r)
    );
    complete_and_audit(&s.c, &job).await;
}

/// The same for cancel (after a rollback), whose deletes of the copied rows at the destination
/// go by key list under an md5 map (no exact SQL filter).
async fn regression_cancel_deletes_wait_unbounded_behind_a_row_lock(kind: Kind) {
    let Some(c) = common::cluster::Cluster::create(kind, "lwcan", 3) else {
        return;
    };
    c.create_tables(&["s0", "s1", "s2"]);
    let from = c.map(&["s0", "s1"], modulo("md5", &["s0", "s1"]));
    let to = c.map(&["s0", "s1", "s2"], modulo("md5", &["s0", "s1", "s2"]));
    c.populate(&from, 40, 2);
    let plan = c.write_plan("plan", &from, &to).display().to_string();
    let s = Setup { c, from, plan };
    let job = common::online::applied(&s).await;
    let r = run(&s.c, &["rollback", &job]).await;
    assert!(r.status.success(), "rollback: {}", stderr(&r));
    let copied =
        s.c.db("s2")
            .query_async("SELECT id FROM users ORDER BY id")
            .await;
    assert!(!copied.is_empty(), "nothing copied to s2");
    let args = ["cancel", &job, "--lock-timeout", "300ms"];
    let lock = "SELECT id FROM users WHERE id = (SELECT MIN(id) FROM users) FOR UPDATE";
    let lock = if kind == Kind::Mysql {
        // MariaDB refuses a subquery on the table being locked: its minimum, read first.
        format!(
            "SELECT id FROM users WHERE id = {} FOR UPDATE",
            copied[0][0]
        )
    } else {
        lock.to_string()
    };
    let (mut holder, code, err) = blocked_at(&s, &args, "cancel_removed:1", "s2", &lock).await;
    assert_gave_up(code, &err, "s2");
    assert_eq!(status(&s.c, &job).await["state"], "cancelling");
    // Copied rows are partly gone: the job must not be resumed onto them.
    let r = run(&s.c, &["resume", &job]).await;
    assert_eq!(r.status.code(), Some(2), "resume: {}", stderr(&r));
    holder.execute("ROLLBACK").await.unwrap();
    let r = run(&s.c, &["cancel", &job]).await;
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(status(&s.c, &job).await["state"], "cancelled");
    let left = s.c.db("s2").query_async("SELECT id FROM users").await;
    assert!(left.is_empty(), "copied rows left at s2: {left:?}");
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
    regression_fence_raise_ignores_lock_timeout_and_names_no_holder,
    fence_bound_exceeded_then_resume,
    regression_resume_forgets_the_lock_timeout_given_to_apply,
    regression_second_sigint_waits_for_a_long_copy_statement,
    regression_complete_deletes_wait_unbounded_behind_a_row_lock,
    regression_cancel_deletes_wait_unbounded_behind_a_row_lock,
    regression_failed_complete_can_be_rolled_back_onto_deleted_copies,
);

mod sqlite {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn busy_timeout_bounds_the_install() {
        super::sqlite_busy_timeout_bounds_the_install(Kind::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn regression_resume_forgets_the_lock_timeout_given_to_apply() {
        super::regression_resume_forgets_the_lock_timeout_given_to_apply(Kind::Sqlite).await
    }
}
