//! Online migration under a live writer (the Router workload), with the real binary:
//! apply → dual_write → complete; the same with ≥ 10 kill -9s; a stale writer refused after the
//! flip; rollback after the flip losing nothing; cancel leaving the shards byte-identical;
//! the max-fence retry path. Every backend, with an identity-modulo map; `ring_online` repeats
//! the apply and the stale writer with a sha1 ring (SQLite's guard hashing with reshard's
//! registered functions).

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use common::cluster::{job_id, ring, stderr, Cluster};
use common::db::Kind;
use common::online::{run, setup, status};
use common::writer::{self, Writer};

/// (users rows, orders rows, object names) of one shard.
type ShardDump = (Vec<Vec<String>>, Vec<Vec<String>>, Vec<Vec<String>>);

/// Every table and trigger name on a shard: what the job installed must be gone after cancel.
fn objects(c: &Cluster, shard: &str) -> Vec<Vec<String>> {
    let q = match c.kind {
        Kind::Sqlite => "SELECT type, name FROM sqlite_master ORDER BY type, name".to_string(),
        Kind::Postgres => "SELECT 'table', table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() UNION ALL \
             SELECT 'trigger', tgname::text FROM pg_trigger WHERE NOT tgisinternal \
             UNION ALL SELECT 'function', proname::text FROM pg_proc p JOIN pg_namespace n \
             ON n.oid = p.pronamespace WHERE n.nspname = current_schema() ORDER BY 1, 2"
            .to_string(),
        Kind::Mysql => "SELECT 'table', table_name FROM information_schema.tables \
             WHERE table_schema = database() UNION ALL SELECT 'trigger', trigger_name \
             FROM information_schema.triggers WHERE trigger_schema = database() ORDER BY 1, 2"
            .to_string(),
    };
    c.db(shard).query(&q)
}

fn fences(v: &Value) -> Vec<u64> {
    v["moves"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["fence_ms"].as_u64())
        .collect()
}

/// `apply` in small batches (so the writer meets several of them), checked to end in dual
/// write with every move flipped and its fence recorded; returns the job id.
async fn apply_to_dual_write(c: &Cluster, plan: &str) -> String {
    let out = run(
        c,
        &[
            "apply",
            plan,
            "--yes",
            "--progress",
            "plain",
            "--batch-size",
            "50",
        ],
    )
    .await;
    assert!(out.status.success(), "apply: {}", stderr(&out));
    let job = job_id(&out).expect("job id");
    let v = status(c, &job).await;
    assert_eq!(v["state"], "dual_write", "{v}");
    for m in v["moves"].as_array().unwrap() {
        assert_eq!(m["state"], "flipped", "{m}");
        assert!(m["fence_ms"].is_u64(), "{m}");
    }
    job
}

async fn full_online(kind: Kind) {
    let Some(s) = setup(kind, "onl") else { return };
    let w = Writer::start(&s.c, &s.from, writer::config(0)).await;
    w.running.wait_for(100).await;
    let job = apply_to_dual_write(&s.c, &s.plan).await;
    // Writes during dual write go to the new owners.
    let n = w.running.acknowledged();
    w.running.wait_for(n + 100).await;
    let out = run(&s.c, &["complete", &job]).await;
    assert!(out.status.success(), "complete: {}", stderr(&out));
    let n = w.running.acknowledged();
    w.running.wait_for(n + 50).await;
    let (tally, report) = w.stop_and_check(true).await;
    let f = fences(&status(&s.c, &job).await);
    eprintln!(
        "BENCH {} fences_ms={f:?} refused_retried={} acknowledged={} {report}",
        kind.name(),
        tally.refused_retried,
        tally.acknowledged
    );
    let v = status(&s.c, &job).await;
    assert_eq!(v["state"], "completed", "{v}");
    // Capture is gone everywhere; the new shard, which is only a destination, has no guard.
    for shard in ["s0", "s1", "s2"] {
        let o = objects(&s.c, shard);
        assert!(
            !o.iter()
                .any(|r| r[1].starts_with("_rs_log") || r[1].contains("_rs_cap")),
            "{shard}: {o:?}"
        );
    }
    assert!(
        !objects(&s.c, "s2")
            .iter()
            .any(|r| r[1].contains("reshard") || r[1].contains("_rs_")),
        "{:?}",
        objects(&s.c, "s2")
    );
    // Completing again is a no-op.
    let out = run(&s.c, &["complete", &job]).await;
    assert!(out.status.success(), "complete again: {}", stderr(&out));
}

/// A write straight to the old owner of a moved key, after the flip: refused with the fence
/// error, never silently applied.
async fn stale_writer(kind: Kind) {
    let Some(s) = setup(kind, "ost") else { return };
    let out = run(&s.c, &["apply", &s.plan, "--yes", "--progress", "plain"]).await;
    assert!(out.status.success(), "apply: {}", stderr(&out));
    // Under identity modulo 2 → 3, key 2 moves from s0 to s2 and key 6 stays on s0.
    let mut conn = common::conn::RawConn::open(s.c.db("s0")).await;
    for sql in [
        "UPDATE users SET name = 'stale' WHERE id = 2",
        "INSERT INTO users (id, name, score) VALUES (1000004, 'stale', 1)",
        "DELETE FROM orders WHERE user_id = 2",
    ] {
        let e = conn.execute(sql).await.expect_err(sql).to_string();
        assert!(e.contains(reshard::triggers::FENCE_MESSAGE), "{sql}: {e}");
    }
    // The new owner takes writes of the moved key (regression: SQLite's UPDATE guard once
    // refused them, its condition lacking parentheses around `new OR old`).
    let mut dst = common::conn::RawConn::open(s.c.db("s2")).await;
    dst.execute("UPDATE users SET name = 'new owner' WHERE id = 2")
        .await
        .unwrap();
    dst.execute("DELETE FROM orders WHERE user_id = 2")
        .await
        .unwrap();
    // A key that does not move is not blocked.
    conn.execute("UPDATE users SET name = 'fine' WHERE id = 6")
        .await
        .unwrap();
    assert_eq!(
        s.c.db("s0").scalar("SELECT name FROM users WHERE id = 2"),
        "user 2 é"
    );
}

/// Rollback after the flip with writes in between, then cancel: nothing acknowledged is lost
/// and no copy is left at the new shard.
async fn rollback_then_cancel(kind: Kind) {
    let Some(s) = setup(kind, "orb") else { return };
    let w = Writer::start(&s.c, &s.from, writer::config(0)).await;
    let out = run(&s.c, &["apply", &s.plan, "--yes", "--progress", "plain"]).await;
    assert!(out.status.success(), "apply: {}", stderr(&out));
    let job = job_id(&out).unwrap();
    let n = w.running.acknowledged();
    w.running.wait_for(n + 150).await;
    let out = run(&s.c, &["rollback", &job]).await;
    assert!(out.status.success(), "rollback: {}", stderr(&out));
    let v = status(&s.c, &job).await;
    assert_eq!(v["state"], "rolled_back", "{v}");
    for m in v["moves"].as_array().unwrap() {
        assert_eq!(m["flipped"], false, "{m}");
    }
    let n = w.running.acknowledged();
    w.running.wait_for(n + 100).await;
    let out = run(&s.c, &["cancel", &job]).await;
    assert!(out.status.success(), "cancel: {}", stderr(&out));
    let n = w.running.acknowledged();
    w.running.wait_for(n + 30).await;
    let (tally, _) = w.stop_and_check(true).await;
    // The writer met the flips: the fence refused it at least once.
    assert!(tally.refused_retried > 0, "{tally}");
    assert_eq!(status(&s.c, &job).await["state"], "cancelled");
}

/// Cancel after a crash in the middle of a cutover leaves every shard byte-identical: same
/// rows, same tables, triggers and functions.
async fn cancel_identical(kind: Kind) {
    let Some(s) = setup(kind, "ocn") else { return };
    let before: BTreeMap<String, ShardDump> = ["s0", "s1", "s2"]
        .iter()
        .map(|sh| {
            (
                sh.to_string(),
                (
                    s.c.dump(sh, "users"),
                    s.c.dump(sh, "orders"),
                    objects(&s.c, sh),
                ),
            )
        })
        .collect();
    let out =
        s.c.cmd(&["apply", &s.plan, "--yes", "--progress", "plain"])
            .env("RESHARD_FAILPOINT", "before_flip:1")
            .output()
            .unwrap();
    assert!(!out.status.success(), "the failpoint must stop apply");
    let job = job_id(&out).unwrap();
    assert!(s.c.dump("s2", "users").len() > 1, "nothing was copied");
    let out = run(&s.c, &["cancel", &job]).await;
    assert!(out.status.success(), "cancel: {}", stderr(&out));
    for (sh, want) in &before {
        let got = (
            s.c.dump(sh, "users"),
            s.c.dump(sh, "orders"),
            objects(&s.c, sh),
        );
        assert_eq!(&got, want, "{sh}");
    }
    let out = run(&s.c, &["cancel", &job]).await;
    assert!(out.status.success(), "cancel again: {}", stderr(&out));
}

/// ≥ 10 kill -9s of reshard at random moments (apply, resume, rollback, complete), each
/// followed by resume, under the writer; then the checker.
async fn kill9(kind: Kind) {
    let Some(s) = setup(kind, "okl") else { return };
    let w = Writer::start(&s.c, &s.from, writer::config(0)).await;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ reshard::job::random_u64();
    eprintln!("kill9 seed {seed:#x}");
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut kills = 0;
    let mut window_ms: u64 = 1300;
    let mut job: Option<String> = None;
    for _ in 0..200 {
        let state = match &job {
            Some(j) => status(&s.c, j).await["state"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            None => String::new(),
        };
        let args: Vec<String> = match (&job, state.as_str()) {
            (None, _) => vec!["apply".into(), s.plan.clone(), "--yes".into()],
            (Some(j), "dual_write") if kills < 10 => vec!["rollback".into(), j.clone()],
            (Some(j), "dual_write" | "completing") => vec!["complete".into(), j.clone()],
            (Some(j), "failed") => {
                let v = status(&s.c, j).await;
                let all = v["moves"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|m| m["flipped"] == true);
                let any = v["moves"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["flipped"] == true);
                if all && kills >= 10 {
                    vec!["complete".into(), j.clone()]
                } else if any {
                    vec!["rollback".into(), j.clone()]
                } else {
                    vec!["resume".into(), j.clone()]
                }
            }
            (Some(_), "completed") => break,
            (Some(j), _) => vec!["resume".into(), j.clone()],
        };
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = s.c.cmd(&argv);
        if argv[0] == "resume" || argv[0] == "apply" {
            cmd.arg("--progress").arg("plain");
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Killed at a random moment within the time such a command took when it last ran to
        // its end (commands get faster as the code does; a fixed window let them finish first,
        // and a run saw 8 kills in 80 commands).
        let delay = Duration::from_millis(20 + rnd(window_ms));
        let started = std::time::Instant::now();
        while kills < 10 && started.elapsed() < delay && matches!(child.try_wait(), Ok(None)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // After the tenth kill, commands run to their end: the job must then finish, however
        // slow the machine is.
        let killed = kills < 10 && matches!(child.try_wait(), Ok(None));
        if killed {
            child.kill().unwrap();
            kills += 1;
        } else if kills < 10 {
            // Averaged, so that one quick command does not confine the next kills to start-up.
            window_ms = ((window_ms + started.elapsed().as_millis() as u64) / 2).max(50);
        }
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        if job.is_none() {
            job = job_id(&out);
        }
        if !killed && !out.status.success() {
            eprintln!("{argv:?} ended with {:?}: {}", out.status, stderr(&out));
        }
    }
    let job = job.expect("a job");
    assert!(kills >= 10, "only {kills} kills");
    assert_eq!(status(&s.c, &job).await["state"], "completed");
    w.stop_and_check(true).await;
    eprintln!("kill9 {}: {kills} kills", kind.name());
}

/// A fence that cannot go up in time (a writer holds the move's fence row) waits at most the
/// lock timeout per attempt, names the holder, is retried a bounded number of times, and the
/// job stops resumable with the reason recorded; once the writer is gone, resume finishes.
async fn max_fence(kind: Kind) {
    let Some(s) = setup(kind, "omf") else { return };
    let out =
        s.c.cmd(&["apply", &s.plan, "--yes", "--max-fence", "150ms"])
            .env("RESHARD_FAILPOINT", "after_apply:1")
            .output()
            .unwrap();
    assert!(!out.status.success());
    let job = job_id(&out).unwrap();
    // An open transaction writing key 2 (moving s0 → s2) holds the share lock on the fence
    // row of that move.
    let mut held = common::conn::RawConn::open(s.c.db("s0")).await;
    held.execute("BEGIN").await.unwrap();
    held.execute("UPDATE users SET name = 'held' WHERE id = 2")
        .await
        .unwrap();
    let mut cmd = s.c.cmd(&["resume", &job]);
    cmd.env("RESHARD_LOCK_RETRIES", "3");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v = status(&s.c, &job).await;
    assert_eq!(v["state"], "failed", "{v}");
    let cat = Cluster::catalog_events(&s.c, &job);
    assert!(
        cat.iter().any(|e| e[0] == "fence_aborted"
            && e[1].contains("raising the fence")
            && e[1].contains("waits for a lock held by")
            && e[1].contains("gave up after 3 attempt(s)")),
        "{cat:?}"
    );
    held.execute("ROLLBACK").await.unwrap();
    let out = run(&s.c, &["resume", &job]).await;
    assert!(out.status.success(), "resume: {}", stderr(&out));
    assert_eq!(status(&s.c, &job).await["state"], "dual_write");
}

trait Events {
    fn catalog_events(&self, job: &str) -> Vec<Vec<String>>;
}

impl Events for Cluster {
    fn catalog_events(&self, job: &str) -> Vec<Vec<String>> {
        let url = self.catalog_url();
        let job = job.to_string();
        common::db::run_blocking(move || async move {
            use sqlx::{Connection, Row};
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("SELECT kind, detail FROM events WHERE job_id = ? ORDER BY id")
                .bind(job)
                .fetch_all(&mut c)
                .await
                .unwrap()
                .iter()
                .map(|r| vec![r.get::<String, _>(0), r.get::<String, _>(1)])
                .collect()
        })
    }
}

per_backend_async!(
    full_online,
    stale_writer,
    rollback_then_cancel,
    cancel_identical,
    kill9,
    ring_online
);

mod fence_budget {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        max_fence(Kind::Postgres).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql() {
        max_fence(Kind::Mysql).await
    }
}

/// A key that moves from `src` to `dst` between the maps, searched from `start` downwards.
fn moving_key(from: &Value, to: &Value, src: &str, dst: &str, start: i64) -> i64 {
    let f = reshard::Map::from_value(from, "from").unwrap().compile();
    let t = reshard::Map::from_value(to, "to").unwrap().compile();
    (0..100_000)
        .map(|i| start - i)
        .find(|k| {
            let k = reshard::Key::Int(*k);
            f.owner(&k).unwrap() == src && t.owner(&k).unwrap() == dst
        })
        .expect("a key moving from src to dst")
}

/// A hash-routed map (a sha1 ring gaining a node; on SQLite the guard hashes with reshard's
/// registered functions): the online apply under the Router writer loses nothing, a stale
/// writer at the old owner gets the fence error after the flip and after complete, and a
/// SQLite connection without the functions is refused outright.
async fn ring_online(kind: Kind) {
    let Some(c) = Cluster::create(kind, "ong", 3) else {
        return;
    };
    c.create_tables(&["s0", "s1", "s2"]);
    let from = c.map(&["s0", "s1"], ring("sha1", 16, &["s0", "s1"]));
    let to = c.map(&["s0", "s1", "s2"], ring("sha1", 16, &["s0", "s1", "s2"]));
    c.populate(&from, 40, 2);
    // A row the writer never touches (its ids are 1..=60) on a key moving s0 → s2: stale
    // writers aim at it below, and the checker proves it arrived intact.
    let k = moving_key(&from, &to, "s0", "s2", -100);
    c.db("s0").exec(&format!(
        "INSERT INTO users (id, name, score) VALUES ({k}, 'target', 1)"
    ));
    c.db("s0").exec(&format!(
        "INSERT INTO orders (user_id, order_id, note) VALUES ({k}, 1, 'target')"
    ));
    let fresh = moving_key(&from, &to, "s0", "s2", -1_000_000);
    let plan = c.write_plan("plan", &from, &to).display().to_string();

    let w = Writer::start(&c, &from, writer::config(0)).await;
    w.running.wait_for(100).await;
    let job = apply_to_dual_write(&c, &plan).await;

    // Stale writes to the moved key at its old owner: refused, never applied.
    let stale_sql = [
        format!("UPDATE users SET name = 'stale' WHERE id = {k}"),
        format!("DELETE FROM orders WHERE user_id = {k}"),
        format!("INSERT INTO users (id, name, score) VALUES ({fresh}, 'stale', 1)"),
    ];
    let mut conn = common::conn::RawConn::open_registered(c.db("s0")).await;
    for sql in &stale_sql {
        let e = conn.execute(sql).await.expect_err(sql).to_string();
        assert!(e.contains(reshard::triggers::FENCE_MESSAGE), "{sql}: {e}");
    }
    if kind == Kind::Sqlite {
        // Without reshard's functions SQLite cannot prepare the guard: refused as well.
        let mut plain = common::conn::RawConn::open(c.db("s0")).await;
        let e = plain.execute(&stale_sql[0]).await.expect_err("plain");
        assert!(
            e.to_string().contains("no such function: reshard_sha1"),
            "{e}"
        );
    }

    let n = w.running.acknowledged();
    w.running.wait_for(n + 100).await;
    let out = run(&c, &["complete", &job]).await;
    assert!(out.status.success(), "complete: {}", stderr(&out));
    let n = w.running.acknowledged();
    w.running.wait_for(n + 50).await;
    let (tally, report) = w.stop_and_check(true).await;
    eprintln!(
        "BENCH ring {} fences_ms={:?} refused_retried={} acknowledged={} {report}",
        kind.name(),
        fences(&status(&c, &job).await),
        tally.refused_retried,
        tally.acknowledged
    );
    assert_eq!(status(&c, &job).await["state"], "completed");
    // The guard stays on the old owner after complete.
    let e = conn
        .execute(&stale_sql[2])
        .await
        .expect_err("after complete");
    assert!(
        e.to_string().contains(reshard::triggers::FENCE_MESSAGE),
        "{e}"
    );
}
