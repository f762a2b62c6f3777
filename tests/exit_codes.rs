//! The README's exit-code table, true for every command (issue 17): each subcommand is run,
//! through the real binary, into every code it can end with (0 done; 1 failed, resumable, or
//! `plan --check` found a difference; 2 bad input or refused, nothing written; 3 verification
//! mismatch; 130 interrupted by SIGINT or SIGTERM).
//!
//! Here: the cases that need no shard server, on SQLite, and the codes that take more than one
//! command line (1 on a held lock, 130). exit_codes/on_shards.rs takes one cluster per backend
//! through three jobs. The tables' syntax and words: exit_codes/table.rs.

#[macro_use]
mod common;
#[path = "exit_codes/on_shards.rs"]
mod on_shards;
#[path = "exit_codes/table.rs"]
mod table;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{stderr, Cluster};
use common::conn::RawConn;
use common::db::Kind;
use common::online::{applied, setup, status, Setup};
use table::{check, Table, Words, BAD, FAILED, INTERRUPTED, MISMATCH, OK};

/// Every command on bad input with no catalog anywhere: refused, and no catalog is created.
const WITHOUT_A_CATALOG: Table = "
2   demo --rows many                            # bad option value
2   demo --rows 0                               # rows out of range
2   plan --from MISSING --to TO                 # missing map file
2   plan --from BAD_JSON --to TO -o OUT         # invalid JSON, no plan written
2   plan --from MAP --to TO --check MISSING     # missing plan
2   plan --from MAP --to TO --check BAD_JSON    # invalid plan
2   plan --from MAP --to TO --format xml        # bad option value
0   plan --from MAP --to TO --check PLAN        # the plan is current
1   plan --from MAP --to OTHER --check PLAN     # --check found a difference
2   suggest --from MISSING -o OUT               # missing map file
2   suggest --from BAD_JSON -o OUT              # invalid JSON
2   suggest --from MAP -o OUT --max-share lots  # bad option value
2   route --map MISSING 2                       # missing map file
2   route --map BAD_JSON 2                      # invalid JSON
2   route --map MAP two                         # a key that is not an integer
0   route --map MAP 2                           # routed from the map
2   route 2                                     # missing catalog (RESHARD_CATALOG)
2   apply MISSING --yes                         # missing plan
2   apply BAD_JSON --yes                        # invalid plan
2   apply PLAN --yes --batch-size lots          # bad option value
2   apply PLAN --yes --max-fence 2              # a duration without a unit
2   apply PLAN --yes --max-fence 61m            # past the 1-hour maximum
0   apply PLAN --dry-run --max-fence 1m30s      # units combined, as humantime reads them
2   apply PLAN --format json                    # --format without --dry-run
2   resume                                      # missing catalog
2   resume --parallel lots                      # bad option value
2   status                                      # missing catalog
2   status --format xml                         # bad option value
2   jobs                                        # missing catalog
2   jobs --format xml                           # bad option value
2   verify                                      # missing catalog
2   verify --chunk-rows lots                    # bad option value
2   complete                                    # missing catalog
2   complete --lock-timeout soon                # bad option value
2   rollback                                    # missing catalog
2   rollback --max-fence 2                      # a duration without a unit
2   cancel                                      # missing catalog
2   cancel --move m1                            # an option of rollback only
2   sync                                        # missing catalog
2   sync --lock-timeout soon                    # bad option value
2   pause                                       # missing catalog
2   pause --wait forever                        # unknown option
2   switch                                      # missing catalog
2   switch --move                               # option without its value
2   log                                         # missing catalog
2   log --format xml                            # bad option value
2   worker                                      # missing catalog
2   worker --lease-ttl long                     # bad option value
2   throttle                                    # missing catalog
2   throttle --max-lag long                     # bad option value
";

/// A catalog that refuses connections: a failure, not bad input; the same command succeeds
/// once it is back. Nothing is recorded, since the catalog is what is down. (A shard that
/// cannot be reached: exit_codes/on_shards.rs.)
const WITH_THE_CATALOG_DOWN: Table = "
1   status --catalog DOWN               # the catalog refuses connections
1   jobs --catalog DOWN                 # the catalog refuses connections
1   log --catalog DOWN                  # the catalog refuses connections
1   route 2 --catalog DOWN              # the catalog refuses connections
1   verify --catalog DOWN               # the catalog refuses connections
1   resume --catalog DOWN               # the catalog refuses connections
1   complete --catalog DOWN             # the catalog refuses connections
1   rollback --catalog DOWN             # the catalog refuses connections
1   cancel --catalog DOWN               # the catalog refuses connections
1   sync --catalog DOWN                 # the catalog refuses connections
1   pause --catalog DOWN                # the catalog refuses connections
1   switch --catalog DOWN               # the catalog refuses connections
1   throttle --catalog DOWN             # the catalog refuses connections
1   worker --catalog DOWN               # the catalog refuses connections
1   apply PLAN --yes --catalog DOWN     # the catalog refuses connections
";

#[test]
fn without_a_catalog_every_command_refuses_bad_input_and_creates_nothing() {
    let s = setup(Kind::Sqlite, "xnc").unwrap();
    let w = Words::of(&s, "j-none");
    let before = s.c.snapshot();
    check(&s.c, &w, WITHOUT_A_CATALOG);
    check(&s.c, &w, WITH_THE_CATALOG_DOWN);
    assert!(!s.c.catalog_path().exists(), "a catalog was created");
    assert_eq!(s.c.snapshot(), before, "a shard was written");
}

/// Demo's own codes: 0 on a clean run, 3 when its final checks find a row at the wrong shard.
#[test]
fn demo_succeeds_or_reports_its_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |dir: &str, env: Option<(&str, &str)>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_reshard"));
        cmd.args(["demo", "--rows", "400", "--dir"])
            .arg(tmp.path().join(dir))
            .env_remove("RESHARD_FAILPOINT");
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = run("clean", None);
    assert_eq!(out.status.code(), Some(OK), "{}", stderr(&out));
    let out = run("damaged", Some(("RESHARD_FAILPOINT", "demo_damage:1")));
    assert_eq!(out.status.code(), Some(MISMATCH), "{}", stderr(&out));
}

/// A session at `shard` holding SQLite's write lock: every write there waits, past any
/// lock timeout reshard allows itself.
async fn hold(s: &Setup, shard: &str) -> RawConn {
    let mut c = RawConn::open(s.c.db(shard)).await;
    c.execute("BEGIN IMMEDIATE").await.unwrap();
    c.execute("UPDATE users SET name = name WHERE id = 2")
        .await
        .unwrap();
    c
}

/// The binary with bounded lock retries, its output.
async fn run_env(s: &Setup, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = s.c.cmd(args);
    cmd.env("RESHARD_LOCK_RETRIES", "3");
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

/// Exit 1: a run that fails on the way (a shard whose lock is never let go) stops resumable,
/// with the reason printed and recorded; once the shard is free the same job goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_runs_exit_1_and_stay_resumable() {
    let s = setup(Kind::Sqlite, "xfl").unwrap();
    let apply = ["apply", s.plan.as_str(), "--yes", "--lock-timeout", "200ms"];
    let held = hold(&s, "s0").await;
    let out = run_env(&s, &apply, &[]).await;
    assert_eq!(code(&out), Some(FAILED), "apply: {}", stderr(&out));
    let job = common::cluster::job_id(&out).expect("a job id");
    let v = status(&s.c, &job).await;
    assert_eq!(v["state"], "failed", "{v}");
    assert!(
        v["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "no reason recorded: {v}"
    );
    let resume = ["resume", job.as_str(), "--lock-timeout", "200ms"];
    let out = run_env(&s, &resume, &[]).await;
    assert_eq!(code(&out), Some(FAILED), "resume: {}", stderr(&out));
    drop(held);
    let out = run_env(&s, &resume, &[]).await;
    assert_eq!(code(&out), Some(OK), "resume: {}", stderr(&out));
    assert_eq!(status(&s.c, &job).await["state"], "dual_write");

    // rollback: its fenced drain fails (as on a lost connection); the next one finishes.
    let rollback = ["rollback", job.as_str()];
    let out = run_env(
        &s,
        &rollback,
        &[("RESHARD_FAILPOINT", "rollback_drain_fails:1")],
    )
    .await;
    assert_eq!(code(&out), Some(FAILED), "rollback: {}", stderr(&out));
    let out = run_env(&s, &rollback, &[]).await;
    assert_eq!(code(&out), Some(OK), "rollback: {}", stderr(&out));
    assert_eq!(status(&s.c, &job).await["state"], "rolled_back");

    // cancel has no failure of its own to provoke cheaply here: with a shard's write lock
    // held it gives up only after about 90 s (its deletes are not bounded by --lock-timeout).
    let out = run_env(&s, &["cancel", job.as_str()], &[]).await;
    assert_eq!(code(&out), Some(OK), "cancel: {}", stderr(&out));
    assert_eq!(status(&s.c, &job).await["state"], "cancelled");
}

/// Starts `args` in the background, writes `input` to its stdin, waits (bounded) until a line
/// of its stdout or stderr contains `ready`, sends SIGINT; its exit code and output.
fn interrupted(c: &Cluster, args: &[&str], input: &str, ready: &str) -> (Option<i32>, String) {
    let mut child: Child = c
        .cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, input.as_bytes()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let read = |r: Box<dyn std::io::Read + Send>, tx: std::sync::mpsc::Sender<String>| {
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()), tx.clone());
    let err = read(Box::new(child.stderr.take().unwrap()), tx);
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(ready) {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                panic!("{args:?} ended before printing {ready:?}:\n{seen}")
            }
        }
        assert!(
            Instant::now() < deadline,
            "{args:?} never printed {ready:?}:\n{seen}"
        );
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let st = child.wait().unwrap();
    drop(stdin);
    out.join().unwrap();
    err.join().unwrap();
    seen.extend(rx.try_iter().map(|l| l + "\n"));
    (st.code(), seen)
}

/// Exit 130: every command that runs until it is stopped, or is stopped mid-way, exits 130 on
/// SIGINT, and the job it served goes on afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_130() {
    let s = setup(Kind::Sqlite, "xin").unwrap();
    let c = &s.c;
    // apply mid-copy: capped so that the copy is still running when the signal lands.
    let apply = [
        "apply",
        &s.plan,
        "--yes",
        "--progress",
        "json",
        "--batch-size",
        "5",
        "--max-rows-per-sec",
        "10",
    ];
    let (code, seen) = tokio::task::block_in_place(|| interrupted(c, &apply, "", "\"copying\""));
    assert_eq!(code, Some(INTERRUPTED), "apply:\n{seen}");
    let job = common::online::job_when(c, "interrupted", |j| j["state"] == "interrupted").await;
    let out = common::online::run(c, &["throttle", &job, "--max-rows-per-sec", "0"]).await;
    assert_eq!(out.status.code(), Some(OK), "throttle: {}", stderr(&out));
    let out = common::online::run(c, &["resume", &job, "--progress", "plain"]).await;
    assert_eq!(out.status.code(), Some(OK), "resume: {}", stderr(&out));
    assert_eq!(status(c, &job).await["state"], "dual_write");
    let rows: &[(&[&str], &str, &str)] = &[
        (&["sync", &job], "", "reverse sync running"),
        (&["worker"], "", "serving catalog"),
        (&["log", &job, "--follow"], "", "dual_write"),
        (&["route", "--follow"], "2\n", "s2"),
        (
            &[
                "verify",
                &job,
                "--max-rows-per-sec",
                "1",
                "--progress",
                "plain",
            ],
            "",
            "verif",
        ),
    ];
    let mut wrong = Vec::new();
    for (args, input, ready) in rows {
        let (code, seen) = tokio::task::block_in_place(|| interrupted(c, args, input, ready));
        if code != Some(INTERRUPTED) {
            wrong.push(format!("{args:?}: exit {code:?}\n{seen}"));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    assert_eq!(status(c, &job).await["state"], "dual_write");
}

/// `throttle` of a job not in the catalog exited 1 ("failed, resumable") where every other
/// command exits 2 for an unknown job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_throttle_of_an_unknown_job_exited_1() {
    let s = setup(Kind::Sqlite, "xrt").unwrap();
    applied(&s).await;
    let out = common::online::run(&s.c, &["throttle", "j-nosuch", "--max-rows-per-sec", "5"]).await;
    assert_eq!(out.status.code(), Some(BAD), "{}", stderr(&out));
    assert!(stderr(&out).contains("j-nosuch"), "{}", stderr(&out));
}

/// `worker` stopped by SIGINT exited 0, as if its work were done (`sync` had the same bug).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_worker_exited_0_on_sigint() {
    let s = setup(Kind::Sqlite, "xrw").unwrap();
    applied(&s).await;
    let (code, seen) =
        tokio::task::block_in_place(|| interrupted(&s.c, &["worker"], "", "reverse sync running"));
    assert_eq!(code, Some(INTERRUPTED), "{seen}");
}

/// `log --follow` and `route --follow` had no signal handler: SIGINT killed them, so they had
/// no exit code (a shell showed 130 for SIGINT but 143 for SIGTERM).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_followers_were_killed_by_sigint() {
    let s = setup(Kind::Sqlite, "xrf").unwrap();
    let job = applied(&s).await;
    for (args, input, ready) in [
        (&["log", job.as_str(), "--follow"][..], "", "dual_write"),
        (&["route", "--follow"][..], "2\n", "s2"),
    ] {
        let (code, seen) = tokio::task::block_in_place(|| interrupted(&s.c, args, input, ready));
        assert_eq!(code, Some(INTERRUPTED), "{args:?}: {seen}");
    }
}
