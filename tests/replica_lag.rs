//! The lag limit against a real streaming replica (issue 15): a test's own PostgreSQL primary
//! and replica. With replay paused the heartbeat ages, the copy holds and `status` names the
//! replica; the measured lag agrees with the replica's own figure; once replay resumes the copy
//! goes on and every row arrives.

#[macro_use]
mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::db::Kind;
use common::online::{run, status};
use common::private::PrivatePostgres;

const ROWS: i64 = 20_000;

fn rows_copied(v: &serde_json::Value) -> u64 {
    v["rows_copied"].as_u64().unwrap_or(0)
}

/// "... lag 7.2 s > 1.0 s" -> 7.2
fn lag_in(reason: &str) -> Option<f64> {
    let after = reason.split(" lag ").nth(1)?;
    after.split(' ').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replica_lag_holds_the_copy() {
    let Some(pg) = PrivatePostgres::primary_with_replica() else {
        return;
    };
    let server = Some(pg.primary_url.clone());
    let Some(c) = Cluster::create_on(Kind::Postgres, server, "lag", 2) else {
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
    let replica = pg.on_replica(&c.db("s1").url);
    let map = |split: i64| {
        serde_json::json!({
            "shards": {
                "s0": c.db("s0").url,
                "s1": {"url": c.db("s1").url, "replicas": [replica]},
            },
            "tables": [{"name": "t", "key": "id"}],
            "partitioning": ranges(&["s0", "s1"], &[split]),
        })
    };
    let plan = c.write_plan("plan", &map(ROWS + 1), &map(1));
    // Replay control and the replica's own figure, on the replica.
    let on_replica = |sql: &str| {
        let url = pg.on_replica(&c.db("s1").url);
        common::db::query_url(Kind::Postgres, &url, sql)
    };
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
    // The copy moves while the replica keeps up (its heartbeat applied).
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
    on_replica("SELECT pg_wal_replay_pause()");
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
    // The replica's own figure: how long ago the last transaction it replayed committed.
    let own: f64 = on_replica(
        "SELECT extract(epoch from now() - pg_last_xact_replay_timestamp())::float8::text",
    )[0][0]
        .parse()
        .unwrap();
    let ours = lag_in(&reason).expect("a lag in the reason");
    eprintln!("heartbeat lag {ours:.1} s, replica's replay timestamp age {own:.1} s");
    assert!(
        (ours - own).abs() < 2.0,
        "heartbeat lag {ours} s against the replica's {own} s"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = rows_copied(&status(&c, &job).await);
    assert!(
        later <= held_at + 500 && later < ROWS as u64,
        "copied on while the replica lagged: {held_at} then {later}"
    );
    on_replica("SELECT pg_wal_replay_resume()");
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
        "the copy moved again {:.2} s after replay resumed",
        resumed.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while apply.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "apply did not finish after replay resumed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = apply.wait_with_output().unwrap();
    assert!(out.status.success(), "apply: {}", stderr(&out));
    eprintln!(
        "apply finished {:.1} s after replay resumed",
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
