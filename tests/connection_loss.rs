//! The server kills reshard's connections in the middle of its statements (an administrator's
//! `pg_terminate_backend` or `KILL CONNECTION`, a failover, a proxy restart): `apply`'s copy,
//! `verify` (PostgreSQL's binary COPY pages, MariaDB's row streams), `complete` (deleting the old
//! copies), `verify --audit`, `rollback`, `cancel`, `resume` (after a kill -9 mid-copy) and `sync`
//! retry and finish with every row where it belongs.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::db::{Kind, TestDb};

const ROWS: i64 = 60_000;
/// When the first kill may land in the long commands: mid-copy and mid-scan, the failover case.
/// (From the first statement on they pass too, but rarely reach the copy before four kills.)
const LATER: Duration = Duration::from_millis(150);

fn fill(c: &Cluster) {
    for s in ["s0", "s1"] {
        c.db(s)
            .exec("CREATE TABLE t (id bigint PRIMARY KEY, v varchar(40), x double precision)");
    }
    let gen = match c.kind {
        Kind::Postgres => format!(
            "INSERT INTO t SELECT g, 'value ' || g, g * 0.25 FROM generate_series(1, {ROWS}) g"
        ),
        _ => format!(
            "INSERT INTO t SELECT seq, concat('value ', seq), seq * 0.25 FROM seq_1_to_{ROWS}"
        ),
    };
    c.db("s0").exec(&gen);
}

/// Kills reshard's sessions that are running a statement (an idle pooled connection would only
/// be replaced by the pool's check) while `child` runs: until `kills` are killed, at least
/// `gap` apart.
/// Returns the connections killed.
fn kill_while_running(
    c: &Cluster,
    probe: &TestDb,
    child: &mut Child,
    kills: usize,
    first: Duration,
    gap: Duration,
) -> usize {
    let dbs: Vec<String> = ["s0", "s1"]
        .iter()
        .map(|s| format!("'{}'", c.db(s).name))
        .collect();
    let dbs = dbs.join(", ");
    let mut killed = 0;
    let mut next = Instant::now() + first;
    while killed < kills && child.try_wait().expect("child status").is_none() {
        if Instant::now() < next {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let now = match c.kind {
            Kind::Postgres => probe
                .scalar(&format!(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE application_name = 'reshard' AND state = 'active' AND datname IN ({dbs})"
                ))
                .parse::<usize>()
                .expect("a count"),
            _ => {
                let ids = probe.query(&format!(
                    "SELECT id FROM information_schema.PROCESSLIST WHERE db IN ({dbs}) \
                     AND command IN ('Query', 'Execute', 'Fetch') AND id <> CONNECTION_ID()"
                ));
                for id in &ids {
                    // The statement may have ended in between: an unknown thread is fine.
                    let _ = std::panic::catch_unwind(|| probe.exec(&format!("KILL CONNECTION {}", id[0])));
                }
                ids.len()
            }
        };
        // Polled until a kill lands (statements are short), then `gap` before the next one.
        if now > 0 {
            killed += now;
            next = Instant::now() + gap;
        }
    }
    killed
}

fn run_killed(
    c: &Cluster,
    probe: &TestDb,
    args: &[&str],
    first: Duration,
) -> (std::process::Output, usize) {
    let mut child = spawn(c, args);
    let killed = kill_while_running(c, probe, &mut child, 4, first, Duration::from_millis(150));
    (child.wait_with_output().expect("reshard ends"), killed)
}

/// reshard running `args` with the production retry budget (the harness lowers it to fail
/// fast): kills land up to four times on one statement and its retries.
fn spawn(c: &Cluster, args: &[&str]) -> Child {
    c.cmd(args)
        .env_remove("RESHARD_RETRY_MAX")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("reshard starts")
}

/// `apply` run to its end (dual write); returns its job.
fn applied(c: &Cluster, plan: &str) -> String {
    let o = c.run(&["apply", plan, "--yes", "--progress", "plain"]);
    assert!(o.status.success(), "apply: {}", stderr(&o));
    job_id(&o).expect("a job id")
}

/// `apply` (with `extra` flags) killed -9 by `failpoint`; returns its job.
fn apply_killed_at(c: &Cluster, plan: &str, failpoint: &str, extra: &[&str]) -> String {
    let mut args = vec!["apply", plan, "--yes", "--progress", "plain"];
    args.extend_from_slice(extra);
    let o = c
        .cmd(&args)
        .env("RESHARD_FAILPOINT", failpoint)
        .output()
        .expect("reshard runs");
    assert!(!o.status.success(), "the failpoint must stop apply");
    job_id(&o).expect("a job id")
}

/// Two filled shards, a plan moving keys 1000.. from s0 to s1, and a probe database to kill
/// from. None when the server is unreachable (skipped).
fn setup(kind: Kind, tag: &str) -> Option<(Cluster, TestDb, String)> {
    let c = Cluster::create(kind, tag, 2)?;
    let probe = TestDb::create(kind, &format!("{tag}_probe")).expect("the server answered");
    fill(&c);
    let urls = serde_json::json!({"s0": c.db("s0").url, "s1": c.db("s1").url});
    let m = |split: i64| {
        serde_json::json!({"shards": urls, "tables": [{"name": "t", "key": "id"}],
               "partitioning": ranges(&["s0", "s1"], &[split])})
    };
    let plan = c.write_plan("plan", &m(ROWS + 1), &m(1000));
    let plan = plan.to_str().expect("a UTF-8 path").to_string();
    Some((c, probe, plan))
}

fn survives(kind: Kind) {
    let Some((c, probe, plan)) = setup(kind, "closs") else {
        return;
    };
    let plan = plan.as_str();
    let mut total = 0;

    let (o, killed) = run_killed(
        &c,
        &probe,
        &[
            "apply",
            plan,
            "--yes",
            "--progress",
            "plain",
            "--batch-size",
            "500",
        ],
        LATER,
    );
    total += killed;
    assert!(
        o.status.success(),
        "apply under killed connections: {}",
        stderr(&o)
    );
    let job = job_id(&o).expect("a job id");
    // Cut over and kept in sync (dual write): the moved rows are at both places.
    assert_eq!(
        c.db("s1").scalar("SELECT COUNT(*) FROM t"),
        (ROWS - 999).to_string()
    );
    assert_eq!(
        c.db("s0").scalar("SELECT COUNT(*) FROM t"),
        ROWS.to_string()
    );

    let (o, killed) = run_killed(&c, &probe, &["verify", &job, "--chunk-rows", "300"], LATER);
    total += killed;
    assert!(
        o.status.success(),
        "verify under killed connections: {}",
        stderr(&o)
    );
    assert!(stdout(&o).contains("MATCH"), "{}", stdout(&o));
    let (o, killed) = run_killed(&c, &probe, &["complete", &job], LATER);
    total += killed;
    assert!(
        o.status.success(),
        "complete under killed connections: {}",
        stderr(&o)
    );
    assert_eq!(c.db("s0").scalar("SELECT COUNT(*) FROM t"), "999");
    assert_eq!(
        c.db("s1").scalar("SELECT COUNT(*) FROM t"),
        (ROWS - 999).to_string()
    );
    let (o, killed) = run_killed(&c, &probe, &["verify", &job, "--audit"], LATER);
    total += killed;
    assert!(
        o.status.success(),
        "audit under killed connections: {}{}",
        stdout(&o),
        stderr(&o)
    );

    // Without a kill landing this test proves nothing: it must have hit reshard mid-read.
    assert!(total >= 2, "only {total} connections were killed");
    eprintln!("{kind:?}: {total} connections killed");
}

/// `rollback` (short: flip back, fences) with kills from its first statement: it ends rolled
/// back with every row at the old owner. Most runs land one or two kills.
fn rollback_survives(kind: Kind) {
    let Some((c, probe, plan)) = setup(kind, "clrb") else {
        return;
    };
    let job = applied(&c, &plan);
    let (o, killed) = run_killed(&c, &probe, &["rollback", &job], Duration::ZERO);
    assert!(
        o.status.success(),
        "rollback under killed connections: {}",
        stderr(&o)
    );
    let st = c.run(&["status", &job, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).expect("status JSON");
    assert_eq!(v["state"], "rolled_back", "{v}");
    assert_eq!(
        c.db("s0").scalar("SELECT COUNT(*) FROM t"),
        ROWS.to_string()
    );
    eprintln!("{kind:?} rollback: {killed} connections killed");
}

/// `cancel` of a job stopped before its flip, killed from its first statement: the destination
/// is back to what it held and the source keeps every row.
fn cancel_survives(kind: Kind) {
    let Some((c, probe, plan)) = setup(kind, "clcn") else {
        return;
    };
    let job = apply_killed_at(&c, &plan, "before_flip:1", &[]);
    let (o, killed) = run_killed(&c, &probe, &["cancel", &job], Duration::ZERO);
    assert!(
        o.status.success(),
        "cancel under killed connections: {}",
        stderr(&o)
    );
    assert_eq!(c.db("s1").scalar("SELECT COUNT(*) FROM t"), "0");
    assert_eq!(
        c.db("s0").scalar("SELECT COUNT(*) FROM t"),
        ROWS.to_string()
    );
    eprintln!("{kind:?} cancel: {killed} connections killed");
}

/// `resume` of a job killed (kill -9, by failpoint) in the middle of its copy, with kills from
/// mid-copy on: it copies on from the dead run's last recorded batch and cuts over, and every
/// row verifies.
fn resume_survives(kind: Kind) {
    let Some((c, probe, plan)) = setup(kind, "clrs") else {
        return;
    };
    let job = apply_killed_at(&c, &plan, "after_upsert:20", &["--batch-size", "500"]);
    let copied: i64 = c
        .db("s1")
        .scalar("SELECT COUNT(*) FROM t")
        .parse()
        .expect("a count");
    assert!(
        copied > 0 && copied < ROWS - 999,
        "stopped mid-copy: {copied}"
    );
    let (o, killed) = run_killed(&c, &probe, &["resume", &job, "--progress", "plain"], LATER);
    assert!(
        o.status.success(),
        "resume under killed connections: {}",
        stderr(&o)
    );
    assert_eq!(
        c.db("s1").scalar("SELECT COUNT(*) FROM t"),
        (ROWS - 999).to_string()
    );
    assert_eq!(
        c.db("s0").scalar("SELECT COUNT(*) FROM t"),
        ROWS.to_string()
    );
    let v = c.run(&["verify", &job]);
    assert!(v.status.success(), "{}{}", stdout(&v), stderr(&v));
    eprintln!("{kind:?} resume: {killed} connections killed");
}

/// `sync` (reverse sync, new owner -> old owner, until Ctrl-C) while its connections are killed:
/// writes made at the new owner before and after the kills all reach the old owner, and it
/// still stops cleanly on Ctrl-C.
fn sync_survives(kind: Kind) {
    let Some((c, probe, plan)) = setup(kind, "clsy") else {
        return;
    };
    let job = applied(&c, &plan);
    let write = |id: i64| {
        c.db("s1")
            .exec(&format!("UPDATE t SET v = 'synced {id}' WHERE id = {id}"));
    };
    let mut child = spawn(&c, &["sync", &job]);
    for id in [1000, 2000, 3000] {
        write(id);
    }
    let killed = kill_while_running(&c, &probe, &mut child, 2, Duration::ZERO, LATER);
    for id in [4000, 5000] {
        write(id);
    }
    let ids = [1000, 2000, 3000, 4000, 5000];
    let carried = || {
        ids.iter().all(|id| {
            c.db("s0")
                .scalar(&format!("SELECT v FROM t WHERE id = {id}"))
                == format!("synced {id}")
        })
    };
    let t0 = Instant::now();
    while !carried() {
        assert!(
            child.try_wait().expect("child status").is_none(),
            "sync ended under killed connections"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "sync did not carry the writes back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let int = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(int.success());
    let o = child.wait_with_output().expect("sync ends");
    assert_eq!(
        o.status.code(),
        Some(130),
        "sync after Ctrl-C: {}",
        stderr(&o)
    );
    assert!(killed >= 1, "no connection of sync was killed");
    eprintln!("{kind:?} sync: {killed} connections killed");
}

#[test]
fn postgres_commands_survive_killed_connections() {
    survives(Kind::Postgres);
    rollback_survives(Kind::Postgres);
    cancel_survives(Kind::Postgres);
    resume_survives(Kind::Postgres);
    sync_survives(Kind::Postgres);
}

#[test]
fn mariadb_commands_survive_killed_connections() {
    survives(Kind::Mysql);
    rollback_survives(Kind::Mysql);
    cancel_survives(Kind::Mysql);
    resume_survives(Kind::Mysql);
    sync_survives(Kind::Mysql);
}
