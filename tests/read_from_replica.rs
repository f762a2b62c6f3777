//! `apply --read-from replica` (issue 15), on servers of the test's own: a PostgreSQL primary
//! with a streaming replica, and two MariaDB servers over a GTID channel. Replay is stopped
//! before the job starts, so the replica has not seen capture's install: the copy must wait,
//! reading nothing from it. Once replay runs again the copy reads every page from the replica
//! and none from the primary, through a kill -9 in the middle of the copy and the resume; the
//! job completes under a live writer, and nothing is lost.
//!
//! Copy pages are told from every other read by their size: the harness fixes batches
//! (`RESHARD_BATCH_TIME=0s`), so each copy page is `... LIMIT 113`, a size no verification
//! chunk or catch-up read uses.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::db::{query_url, with_database, Kind};
use common::online::{spawn_apply, status, wait_ok};
use common::private::{PrivateMariadb, PrivatePostgres};
use common::writer::{self, Writer};

const USERS: i64 = 3000;
const PAGE: &str = "113";

/// How a test reaches its servers: replica URLs per shard, the copy pages a server has
/// answered so far, and replay stopped or started.
struct Servers<'a> {
    replica_of: &'a dyn Fn(&str) -> String,
    primary_pages: &'a dyn Fn() -> u64,
    replica_pages: &'a dyn Fn() -> u64,
    stop_replay: &'a dyn Fn(),
    start_replay: &'a dyn Fn(),
}

/// Waits until the replica has every row the primary has in `users` of `shard`'s database.
fn replica_caught_up(c: &Cluster, s: &Servers<'_>, shard: &str) {
    let want = c.db(shard).scalar("SELECT COUNT(*) FROM users");
    let url = (s.replica_of)(shard);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = std::panic::catch_unwind(|| {
            query_url(c.kind, &url, "SELECT COUNT(*) FROM users")[0][0].clone()
        });
        if got.as_deref().ok() == Some(want.as_str()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{shard}'s replica does not follow"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn with_replicas(c: &Cluster, s: &Servers<'_>, mut map: serde_json::Value) -> serde_json::Value {
    let shards = map["shards"].as_object_mut().expect("shards");
    for (name, url) in shards.iter_mut() {
        let primary = c.db(name).url.clone();
        *url = serde_json::json!({"url": primary, "replicas": [(s.replica_of)(name)]});
    }
    map
}

async fn copy_reads_the_replica(c: &Cluster, s: Servers<'_>) {
    c.create_tables(&["s0", "s1", "s2"]);
    let from = c.map(&["s0", "s1"], modulo("identity", &["s0", "s1"]));
    let to = c.map(&["s0", "s1", "s2"], modulo("identity", &["s0", "s1", "s2"]));
    c.populate(&from, USERS, 2);
    // The replicas are part of the map, and of the routing the writer starts from.
    let from = with_replicas(c, &s, from);
    let plan = c.write_plan("plan", &from, &with_replicas(c, &s, to));
    let plan = plan.to_str().unwrap();
    for shard in ["s0", "s1"] {
        replica_caught_up(c, &s, shard);
    }
    // The replica stops before capture is installed: it must not be read until it has
    // replayed past the install.
    (s.stop_replay)();
    let (primary0, replica0) = ((s.primary_pages)(), (s.replica_pages)());
    let w = Writer::start(c, &from, writer::config(0)).await;
    let n = w.running.acknowledged();
    w.running.wait_for(n + 50).await;
    let mut apply = spawn_apply(
        c,
        &[
            plan,
            "--read-from",
            "replica",
            "--batch-size",
            PAGE,
            "--max-lag",
            "0s",
            // Slow enough for a kill -9 in the middle of the copy.
            "--max-rows-per-sec",
            "1500",
            "--complete",
        ],
    );
    // Held: moves copying, nothing copied, nothing read at the replica.
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let o = common::online::run(c, &["status", "--format", "json"]).await;
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if let Some(job) = v["job"].as_str() {
            let o = c.run(&["log", job]);
            if String::from_utf8_lossy(&o.stdout).contains("waiting for a replica of s") {
                break job.to_string();
            }
        }
        if apply.try_wait().expect("apply").is_some() {
            let out = apply.wait_with_output().expect("apply output");
            panic!("apply ended before the copy: {}", stderr(&out));
        }
        assert!(
            Instant::now() < deadline,
            "never waited for the replica: {v} {}",
            stderr(&o)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v = status(c, &job).await;
    assert_eq!(v["rows_copied"].as_u64(), Some(0), "copied early: {v}");
    assert_eq!(
        (s.replica_pages)(),
        replica0,
        "read the replica before it replayed the install"
    );
    (s.start_replay)();
    // kill -9 while the copy reads the replica: the resumed run takes a fresh position and
    // reads the replica again, once it is past it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(c, &job).await["rows_copied"].as_u64().unwrap_or(0) < 500 {
        assert!(Instant::now() < deadline, "the copy never began");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    apply.kill().expect("kill -9");
    apply.wait().expect("reaped");
    let copied = status(c, &job).await["rows_copied"].as_u64().unwrap_or(0);
    assert!(
        copied < (USERS * 3) as u64,
        "the copy ended before the kill: {copied}"
    );
    let resumed = c
        .cmd(&["resume", &job, "--progress", "plain"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("resume");
    let out = wait_ok(resumed, Duration::from_secs(180)).await;
    assert_eq!(
        status(c, &job).await["state"],
        "completed",
        "{}",
        stderr(&out)
    );
    w.stop_and_check(true).await;
    let (primary_reads, replica_reads) = (
        (s.primary_pages)() - primary0,
        (s.replica_pages)() - replica0,
    );
    eprintln!("copy pages: {primary_reads} at the primary, {replica_reads} at the replica");
    assert_eq!(primary_reads, 0, "the copy read the primary");
    // Both tables, both sources: well over USERS * 3 rows moving / 113 rows a page.
    assert!(replica_reads >= 20, "{replica_reads} pages at the replica");
    let o = c.run(&["log", &job]);
    let log = String::from_utf8_lossy(&o.stdout).to_string();
    // Both runs read the replica: the killed one, and the resumed one after the takeover.
    let (before, after) = log
        .split_once("taken over from")
        .expect("the resume took over");
    assert!(before.contains("replica_read"), "{log}");
    assert!(after.contains("replica_read"), "{log}");
    let moves = log.lines().filter(|l| l.contains("replica_read"));
    let mut read: Vec<&str> = moves.filter_map(|l| l.split_whitespace().nth(1)).collect();
    read.sort();
    read.dedup();
    assert_eq!(read, ["m1", "m2", "m3", "m4"], "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_copy_reads_the_replica() {
    let Some(pg) = PrivatePostgres::primary_with_replica() else {
        return;
    };
    let Some(c) = Cluster::create_on(Kind::Postgres, Some(pg.primary_url.clone()), "rfr", 3) else {
        return;
    };
    let s0 = c.db("s0").url.clone();
    query_url(
        Kind::Postgres,
        &s0,
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
    );
    let replica_s0 = pg.on_replica(&s0);
    // pg_stat_statements keeps a utility statement's text as run: the page size shows.
    let pages = |url: &str| -> u64 {
        let sql = format!(
            "SELECT COALESCE(sum(calls), 0)::bigint FROM pg_stat_statements \
             WHERE query LIKE 'COPY (SELECT %LIMIT {PAGE}) TO STDOUT%'"
        );
        query_url(Kind::Postgres, url, &sql)[0][0]
            .parse()
            .expect("a count")
    };
    let on_replica = |sql: &str| drop(query_url(Kind::Postgres, &replica_s0, sql));
    let replica_of = |shard: &str| pg.on_replica(&c.db(shard).url);
    let s = Servers {
        replica_of: &replica_of,
        primary_pages: &|| pages(&s0),
        replica_pages: &|| pages(&replica_s0),
        stop_replay: &|| on_replica("SELECT pg_wal_replay_pause()"),
        start_replay: &|| on_replica("SELECT pg_wal_replay_resume()"),
    };
    copy_reads_the_replica(&c, s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_copy_reads_the_replica() {
    let Some((primary, replica)) = PrivateMariadb::primary_with_replica() else {
        return;
    };
    for server in [&primary.url, &replica.url] {
        query_url(
            Kind::Mysql,
            server,
            "SET GLOBAL log_output = 'TABLE', GLOBAL general_log = 1",
        );
    }
    let Some(c) = Cluster::create_on(Kind::Mysql, Some(primary.url.clone()), "rfrm", 3) else {
        return;
    };
    // Each server logs the statements its clients send (not those it replays).
    let pages = |url: &str| -> u64 {
        let sql = format!(
            "SELECT COUNT(*) FROM mysql.general_log WHERE command_type IN ('Query', 'Execute') \
             AND argument LIKE 'SELECT %LIMIT {PAGE}'"
        );
        query_url(Kind::Mysql, url, &sql)[0][0]
            .parse()
            .expect("a count")
    };
    let replica_of = |shard: &str| with_database(&replica.url, &c.db(shard).name);
    let on_replica = |sql: &str| drop(query_url(Kind::Mysql, &replica.url, sql));
    let s = Servers {
        replica_of: &replica_of,
        primary_pages: &|| pages(&primary.url),
        replica_pages: &|| pages(&replica.url),
        stop_replay: &|| on_replica("STOP SLAVE SQL_THREAD"),
        start_replay: &|| on_replica("START SLAVE SQL_THREAD"),
    };
    copy_reads_the_replica(&c, s).await;
}
