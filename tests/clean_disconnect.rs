//! Every reshard command ends its PostgreSQL and MariaDB connections with the protocol's goodbye.
//! Pools that were dropped with the runtime reset their connections instead: PostgreSQL logged
//! "could not receive data from client: Connection reset by peer" and counted the sessions as
//! abandoned, MariaDB counted them in `Aborted_clients` (operators alert on both).
//!
//! PostgreSQL's counters are per database, so that test uses the shared server; MariaDB's are
//! global, so that test starts a server of its own.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::db::{Kind, TestDb};
use common::private::PrivateMariadb;

/// Two shards with rows, a plan moving some of them, `apply`, `status` and `verify`.
fn run_commands(c: &Cluster) {
    for s in ["s0", "s1"] {
        c.db(s)
            .exec("CREATE TABLE t (id bigint PRIMARY KEY, v varchar(20))");
    }
    let rows: Vec<String> = (1..=50).map(|i| format!("({i}, 'v{i}')")).collect();
    c.db("s0")
        .exec(&format!("INSERT INTO t VALUES {}", rows.join(", ")));
    let urls = serde_json::json!({"s0": c.db("s0").url, "s1": c.db("s1").url});
    let m = |split: i64| {
        serde_json::json!({"shards": urls, "tables": [{"name": "t", "key": "id"}],
               "partitioning": ranges(&["s0", "s1"], &[split])})
    };
    let plan = c.write_plan("plan", &m(1000), &m(20));
    let o = c.run(&[
        "apply",
        plan.to_str().unwrap(),
        "--yes",
        "--progress",
        "plain",
    ]);
    assert!(o.status.success(), "apply: {}", stderr(&o));
    let job = job_id(&o).expect("job id");
    for args in [vec!["status", job.as_str()], vec!["verify", job.as_str()]] {
        let o = c.run(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
}

/// `pg_stat_database.sessions_abandoned` of the cluster's databases, once their sessions (other
/// than the harness's own) have ended and reported.
fn pg_abandoned(c: &Cluster, probe: &TestDb) -> i64 {
    let names: Vec<String> = ["s0", "s1"]
        .iter()
        .map(|s| format!("'{}'", c.db(s).name))
        .collect();
    let list = names.join(", ");
    let deadline = Instant::now() + Duration::from_secs(10);
    while probe.scalar(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname IN ({list}) \
         AND application_name = 'reshard'"
    )) != "0"
    {
        assert!(Instant::now() < deadline, "reshard's sessions did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A backend reports its session statistics as it exits, just after pg_stat_activity drops it.
    std::thread::sleep(Duration::from_millis(500));
    probe
        .scalar(&format!(
            "SELECT COALESCE(sum(sessions_abandoned), 0) FROM pg_stat_database WHERE datname IN ({list})"
        ))
        .parse()
        .expect("a count")
}

#[test]
fn postgres_sessions_end_cleanly() {
    let Some(c) = Cluster::create(Kind::Postgres, "cdis", 2) else {
        return;
    };
    let probe = TestDb::create(Kind::Postgres, "cdis_probe").expect("PostgreSQL answered");
    run_commands(&c);
    assert_eq!(
        pg_abandoned(&c, &probe),
        0,
        "sessions were reset, not closed"
    );
}

fn mariadb_aborted(probe: &TestDb) -> (i64, i64) {
    let get = |v: &str| -> i64 {
        probe
            .scalar(&format!(
                "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = '{v}'"
            ))
            .parse()
            .expect("a count")
    };
    (get("ABORTED_CLIENTS"), get("ABORTED_CONNECTS"))
}

#[test]
fn mariadb_connections_end_cleanly() {
    // A server of the test's own: the shared server's counters also count every other client
    // (a CI run failed when some other client's connection was counted during this test).
    let Some(server) = PrivateMariadb::start() else {
        return;
    };
    let url = Some(server.url.clone());
    let Some(c) = Cluster::create_on(Kind::Mysql, url.clone(), "cdis", 2) else {
        return;
    };
    let probe = TestDb::create_on(Kind::Mysql, url, "cdis_probe").expect("MariaDB answered");
    let before = mariadb_aborted(&probe);
    run_commands(&c);
    // MariaDB counts a client as aborted when it notices the reset, right after the exit.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        mariadb_aborted(&probe),
        before,
        "(Aborted_clients, Aborted_connects) grew: connections were reset, not closed"
    );
}
