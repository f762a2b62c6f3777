//! The lag limit against real replicas (issue 15), on servers of the test's own: a PostgreSQL
//! primary with a streaming replica, and two MariaDB servers over a GTID channel. With replay
//! held back the heartbeat ages, the copy holds, `status` names the replica and the measured
//! lag agrees with the replica's own figure (`pg_last_xact_replay_timestamp()`, MariaDB's
//! `Seconds_Behind_Master`); once replay runs again the copy goes on, and the job completes
//! under a live writer with nothing lost.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::db::{query_url, Kind};
use common::online::{job_when_copying, spawn_apply, status, wait_ok};
use common::private::{PrivateMariadb, PrivatePostgres};
use common::writer::{self, Writer};

const USERS: i64 = 4_000;
/// Users and their two orders each.
const ROWS: u64 = USERS as u64 * 3;

fn rows_copied(v: &serde_json::Value) -> u64 {
    v["rows_copied"].as_u64().unwrap_or(0)
}

/// "... lag 7.2 s > 1 s" -> 7.2
fn lag_in(reason: &str) -> Option<f64> {
    let after = reason.split(" lag ").nth(1)?;
    after.split(' ').next()?.parse().ok()
}

/// How a test stops and restarts replay on its replica, and reads the replica's own lag.
struct Replay<'a> {
    stop: &'a dyn Fn(),
    start: &'a dyn Fn(),
    /// The replica's own figure in seconds, where it has one while replay is stopped.
    own_lag: Option<&'a dyn Fn() -> f64>,
}

/// Every row of `USERS` users and their orders moves from s0 to s1, whose replica
/// (`replica_db`, the same database there) is in the map; the copy runs under `--max-lag 1s`
/// and a rate cap that makes it last ~6 s, while a writer keeps writing through the routing.
async fn lag_holds_the_copy(c: &Cluster, replica_db: &str, replay: Replay<'_>) {
    c.create_tables(&["s0", "s1"]);
    let map = |split: i64| {
        let mut m = c.map(&["s0", "s1"], ranges(&["s0", "s1"], &[split]));
        m["shards"]["s1"] = serde_json::json!({"url": c.db("s1").url, "replicas": [replica_db]});
        m
    };
    let (from, to) = (map(1 << 40), map(1));
    c.populate(&from, USERS, 2);
    let plan = c.write_plan("plan", &from, &to);
    let plan = plan.to_str().unwrap();
    let w = Writer::start(c, &from, writer::config(0)).await;
    let n = w.running.acknowledged();
    w.running.wait_for(n + 50).await;
    let apply = spawn_apply(
        c,
        &[
            plan,
            "--batch-size",
            "500",
            "--max-rows-per-sec",
            "2000",
            "--max-lag",
            "1s",
            "--complete",
        ],
    );
    // The copy moves while the replica keeps up (its heartbeat applied).
    let job = job_when_copying(c).await;
    (replay.stop)();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (reason, held_at) = loop {
        let v = status(c, &job).await;
        let why = v["throttle"]["throttled"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if why.starts_with("s1 replica 127.0.0.1:") && why.contains(" lag ") {
            break (why, rows_copied(&v));
        }
        assert!(Instant::now() < deadline, "never held by the lag: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(reason.ends_with("> 1 s"), "{reason}");
    if let Some(own) = replay.own_lag {
        // Compared once the lag is well past the limit, so that both figures have settled.
        let ours = loop {
            let v = status(c, &job).await;
            let why = v["throttle"]["throttled"].as_str().unwrap_or("");
            match lag_in(why) {
                Some(l) if l >= 3.0 => break l,
                _ => assert!(Instant::now() < deadline, "the lag never reached 3 s: {v}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let own = own();
        eprintln!("heartbeat lag {ours:.1} s, the replica's own figure {own:.1} s");
        assert!(
            (ours - own).abs() < 2.0,
            "heartbeat lag {ours} s against the replica's {own} s"
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = rows_copied(&status(c, &job).await);
    assert!(
        later <= held_at + 500 && later < ROWS,
        "copied on while the replica lagged: {held_at} then {later}"
    );
    (replay.start)();
    let resumed = Instant::now();
    // A figure for the note, not a check: from the lag ending to the copy moving again.
    while rows_copied(&status(c, &job).await) <= later
        && resumed.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "the copy moved again {:.2} s after replay restarted",
        resumed.elapsed().as_secs_f64()
    );
    wait_ok(apply, Duration::from_secs(120)).await;
    assert_eq!(status(c, &job).await["state"], "completed");
    w.stop_and_check(true).await;
    let o = c.run(&["log", &job]);
    let log = String::from_utf8_lossy(&o.stdout);
    assert!(log.contains("throttled: s1 replica"), "{log}");
    assert!(log.contains("throttle ended"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replica_lag_holds_the_copy() {
    let Some(pg) = PrivatePostgres::primary_with_replica() else {
        return;
    };
    let Some(c) = Cluster::create_on(Kind::Postgres, Some(pg.primary_url.clone()), "lag", 2) else {
        return;
    };
    let replica = pg.on_replica(&c.db("s1").url);
    let on_replica = |sql: &str| query_url(Kind::Postgres, &replica, sql);
    let own = || -> f64 {
        // How long ago the last transaction the replica replayed committed.
        let sql =
            "SELECT extract(epoch from now() - pg_last_xact_replay_timestamp())::float8::text";
        on_replica(sql)[0][0].parse().expect("seconds")
    };
    let replay = Replay {
        stop: &|| drop(on_replica("SELECT pg_wal_replay_pause()")),
        start: &|| drop(on_replica("SELECT pg_wal_replay_resume()")),
        own_lag: Some(&own),
    };
    lag_holds_the_copy(&c, &replica, replay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_replica_lag_holds_the_copy() {
    let Some((primary, replica)) = PrivateMariadb::primary_with_replica() else {
        return;
    };
    let Some(c) = Cluster::create_on(Kind::Mysql, Some(primary.url.clone()), "lagm", 2) else {
        return;
    };
    let name = c.db("s1").name.clone();
    let replica_db = common::db::with_database(&replica.url, &name);
    // The replica has the shard's database before the job starts: it follows.
    let deadline = Instant::now() + Duration::from_secs(30);
    let sql =
        format!("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{name}'");
    while query_url(Kind::Mysql, &replica.url, &sql)[0][0] != "1" {
        assert!(Instant::now() < deadline, "the replica does not follow");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Replay is held back by MASTER_DELAY rather than stopped: Seconds_Behind_Master is NULL
    // while the SQL thread is stopped, but under a delay it is the server's own figure to
    // compare the heartbeat's with.
    let on_replica = |sql: &str| drop(query_url(Kind::Mysql, &replica.url, sql));
    let delay = |secs: u32| {
        on_replica("STOP SLAVE");
        on_replica(&format!("CHANGE MASTER TO MASTER_DELAY = {secs}"));
        on_replica("START SLAVE");
    };
    let url = replica.url.clone();
    let own = move || -> f64 {
        let url = url.clone();
        common::db::run_blocking(move || async move {
            use sqlx::{Connection as _, Row as _};
            let mut c = sqlx::MySqlConnection::connect(&url).await.expect("replica");
            let row = sqlx::raw_sql("SHOW SLAVE STATUS")
                .fetch_one(&mut c)
                .await
                .expect("SHOW SLAVE STATUS");
            let behind: Option<u64> = row.try_get("Seconds_Behind_Master").expect("column");
            behind.expect("Seconds_Behind_Master under a delay") as f64
        })
    };
    let replay = Replay {
        stop: &|| delay(4),
        start: &|| delay(0),
        own_lag: Some(&own),
    };
    lag_holds_the_copy(&c, &replica_db, replay).await;
}
