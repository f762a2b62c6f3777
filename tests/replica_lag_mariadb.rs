//! The lag limit against a real MariaDB replica (issue 15): a test's own primary and replica
//! over a GTID channel. With the replica's SQL thread stopped the heartbeat ages, the copy
//! holds and `status` names the replica; once the thread runs again the copy goes on and every
//! row arrives.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::db::{query_url, Kind};
use common::online::{run, status};
use common::private::PrivateMariadb;

const ROWS: i64 = 20_000;

fn rows_copied(v: &serde_json::Value) -> u64 {
    v["rows_copied"].as_u64().unwrap_or(0)
}

/// The same database on the replica's server.
fn on(server_url: &str, db_url: &str) -> String {
    let db = db_url.rsplit('/').next().unwrap_or("mysql");
    let base = server_url.rsplit_once('/').map_or("", |(b, _)| b);
    format!("{base}/{db}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_replica_lag_holds_the_copy() {
    let Some((primary, replica)) = PrivateMariadb::primary_with_replica() else {
        return;
    };
    let Some(c) = Cluster::create_on(Kind::Mysql, Some(primary.url.clone()), "lagm", 2) else {
        return;
    };
    for s in ["s0", "s1"] {
        c.db(s)
            .exec("CREATE TABLE t (id bigint PRIMARY KEY, v varchar(40))");
    }
    for chunk in (1..=ROWS).collect::<Vec<_>>().chunks(2000) {
        let rows: Vec<String> = chunk.iter().map(|i| format!("({i}, 'row {i}')")).collect();
        c.db("s0")
            .exec(&format!("INSERT INTO t VALUES {}", rows.join(", ")));
    }
    let replica_db = on(&replica.url, &c.db("s1").url);
    // The replica has the shard's table before the job starts: it follows.
    let deadline = Instant::now() + Duration::from_secs(30);
    while query_url(
        Kind::Mysql,
        &replica.url,
        &format!(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}'",
            c.db("s1").name
        ),
    )[0][0]
        != "1"
    {
        assert!(Instant::now() < deadline, "the replica does not follow");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let map = |split: i64| {
        serde_json::json!({
            "shards": {
                "s0": c.db("s0").url,
                "s1": {"url": c.db("s1").url, "replicas": [replica_db]},
            },
            "tables": [{"name": "t", "key": "id"}],
            "partitioning": ranges(&["s0", "s1"], &[split]),
        })
    };
    let plan = c.write_plan("plan", &map(ROWS + 1), &map(1));
    let mut apply = c
        .cmd(&[
            "apply",
            plan.to_str().unwrap(),
            "--yes",
            "--progress",
            "plain",
            "--batch-size",
            "500",
            "--max-rows-per-sec",
            "2000",
            "--max-lag",
            "1s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let out = run(&c, &["status", "--format", "json"]).await;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if rows_copied(&v) > 0 {
            break v["job"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "the copy never began: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    query_url(Kind::Mysql, &replica.url, "STOP SLAVE SQL_THREAD");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (reason, held_at) = loop {
        let v = status(&c, &job).await;
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
    eprintln!("held: {reason}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = rows_copied(&status(&c, &job).await);
    assert!(
        later <= held_at + 500 && later < ROWS as u64,
        "copied on while the replica lagged: {held_at} then {later}"
    );
    query_url(Kind::Mysql, &replica.url, "START SLAVE SQL_THREAD");
    let resumed = Instant::now();
    // A figure for the note, not a check: from the lag ending to the copy moving again.
    loop {
        if rows_copied(&status(&c, &job).await) > later
            || resumed.elapsed() > Duration::from_secs(30)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "the copy moved again {:.2} s after the SQL thread restarted",
        resumed.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while apply.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "apply did not finish after the replica caught up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = apply.wait_with_output().unwrap();
    assert!(out.status.success(), "apply: {}", stderr(&out));
    eprintln!(
        "apply finished {:.1} s after the SQL thread restarted",
        resumed.elapsed().as_secs_f64()
    );
    assert_eq!(
        c.db("s1").scalar("SELECT COUNT(*) FROM t"),
        ROWS.to_string()
    );
    let o = c.run(&["log", &job]);
    let log = String::from_utf8_lossy(&o.stdout);
    assert!(log.contains("throttled: s1 replica"), "{log}");
    assert!(log.contains("throttle ended"), "{log}");
}
