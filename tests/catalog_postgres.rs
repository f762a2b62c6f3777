//! The catalog on PostgreSQL (what several workers or machines share), through the real binary:
//! a whole job (apply, verify, complete, audit) keeps its state there; and when the server kills
//! the catalog's connections in the middle of their statements during a copy, the job's catalog
//! writes are retried and it finishes (should a kill land where nothing retries, the command
//! must stop cleanly and `resume` finish), with every row moved exactly once.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::db::{Kind, TestDb};

const ROWS: i64 = 60_000;

/// Two SQLite shards (the catalog is what is under test), keys 1000.. moving s0 -> s1, and a
/// PostgreSQL catalog database. None when PostgreSQL is unreachable (skipped).
fn setup(tag: &str) -> Option<(Cluster, TestDb, String)> {
    let catalog = TestDb::create(Kind::Postgres, &format!("{tag}_cat"))?;
    let c = Cluster::create(Kind::Sqlite, tag, 2)?;
    for s in ["s0", "s1"] {
        c.db(s)
            .exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, x REAL)");
    }
    c.db("s0").exec(&format!(
        "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {ROWS}) \
         INSERT INTO t SELECT i, 'value ' || i, i * 0.25 FROM g"
    ));
    let urls = serde_json::json!({"s0": c.db("s0").url, "s1": c.db("s1").url});
    let m = |split: i64| {
        serde_json::json!({"shards": urls, "tables": [{"name": "t", "key": "id"}],
               "partitioning": ranges(&["s0", "s1"], &[split])})
    };
    let plan = c.write_plan("plan", &m(ROWS + 1), &m(1000));
    let plan = plan.to_str().expect("a UTF-8 path").to_string();
    Some((c, catalog, plan))
}

fn counts(c: &Cluster) -> (String, String) {
    (
        c.db("s0").scalar("SELECT COUNT(*) FROM t"),
        c.db("s1").scalar("SELECT COUNT(*) FROM t"),
    )
}

fn state(c: &Cluster, catalog: &TestDb, job: &str) -> serde_json::Value {
    let o = c.run(&["status", job, "--catalog", &catalog.url, "--format", "json"]);
    assert!(o.status.success(), "status: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("status JSON")
}

#[test]
fn a_whole_job_on_a_postgres_catalog() {
    let Some((c, catalog, plan)) = setup("cpgjob") else {
        return;
    };
    let cat = catalog.url.as_str();
    let o = c.run(&[
        "apply",
        &plan,
        "--yes",
        "--catalog",
        cat,
        "--progress",
        "plain",
    ]);
    assert!(o.status.success(), "apply: {}", stderr(&o));
    let job = job_id(&o).expect("a job id");
    assert_eq!(counts(&c), (ROWS.to_string(), (ROWS - 999).to_string()));
    // The job lives in the PostgreSQL catalog, not in the cluster's default SQLite one.
    assert_eq!(
        catalog.scalar(&format!("SELECT COUNT(*) FROM jobs WHERE id = '{job}'")),
        "1"
    );
    let o = c.run(&["verify", &job, "--catalog", cat]);
    assert!(o.status.success(), "verify: {}{}", stdout(&o), stderr(&o));
    let o = c.run(&["complete", &job, "--catalog", cat]);
    assert!(o.status.success(), "complete: {}", stderr(&o));
    assert_eq!(counts(&c), ("999".to_string(), (ROWS - 999).to_string()));
    let o = c.run(&["verify", &job, "--audit", "--catalog", cat]);
    assert!(o.status.success(), "audit: {}{}", stdout(&o), stderr(&o));
    assert_eq!(state(&c, &catalog, &job)["state"], "completed");
}

/// Terminates reshard's connections to the catalog database (those running a statement) while
/// `child` runs, until `kills` landed. Returns how many did.
fn kill_catalog_connections(
    probe: &TestDb,
    catalog: &TestDb,
    child: &mut std::process::Child,
    kills: usize,
) -> usize {
    let mut killed = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while killed < kills && Instant::now() < deadline && child.try_wait().expect("status").is_none()
    {
        let n: usize = probe
            .scalar(&format!(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = 'reshard-catalog' AND datname = '{}' AND state <> 'idle' \
                 AND pid <> pg_backend_pid()",
                catalog.name
            ))
            .parse()
            .expect("a count");
        killed += n;
        if n > 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    killed
}

#[test]
fn a_copy_survives_killed_catalog_connections() {
    let Some((c, catalog, plan)) = setup("cpgkill") else {
        return;
    };
    let probe = TestDb::create(Kind::Postgres, "cpgkill_probe").expect("the server answered");
    let cat = catalog.url.as_str();
    let mut child = c
        .cmd(&[
            "apply",
            &plan,
            "--yes",
            "--catalog",
            cat,
            "--progress",
            "plain",
            "--batch-size",
            "200",
        ])
        .env_remove("RESHARD_RETRY_MAX")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("reshard starts");
    // Wait for the copy to be under way (rows at the destination), then kill.
    let started = Instant::now();
    while c.db("s1").scalar("SELECT COUNT(*) FROM t") == "0"
        && child.try_wait().expect("status").is_none()
        && started.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed = kill_catalog_connections(&probe, &catalog, &mut child, 5);
    let o = child.wait_with_output().expect("reshard ends");
    let job = job_id(&o).expect("a job id");
    let (s0, s1) = counts(&c);
    assert_eq!(s0, ROWS.to_string(), "the source keeps every row");
    if o.status.success() {
        // The copy finished before a kill landed on a statement: nothing to resume.
        assert_eq!(s1, (ROWS - 999).to_string());
    } else {
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("catalog"),
            "the error names the catalog: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        let r = c.run(&["resume", &job, "--catalog", cat, "--progress", "plain"]);
        assert!(r.status.success(), "resume: {}", stderr(&r));
    }
    assert_eq!(counts(&c), (ROWS.to_string(), (ROWS - 999).to_string()));
    let v = c.run(&["verify", &job, "--catalog", cat]);
    assert!(v.status.success(), "{}{}", stdout(&v), stderr(&v));
    // Without a kill landing mid-statement this test proves nothing.
    assert!(killed >= 1, "no catalog connection was killed");
    eprintln!(
        "catalog connections killed: {killed}; apply exit {:?}",
        o.status.code()
    );
}
