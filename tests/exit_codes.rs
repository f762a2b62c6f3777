//! The README's exit-code table, true for every command (issue 17): each subcommand is run,
//! through the real binary on SQLite, into every code it can end with (0 done; 1 failed,
//! resumable, or `plan --check` found a difference; 2 bad input or refused, nothing written;
//! 3 verification mismatch; 130 interrupted by SIGINT or SIGTERM).
//!
//! The tables read like shell lines: `CODE  [ENV=VALUE ...] ARGS  # what the code means there`.
//! Words in capitals are filled in per cluster: JOB (its job), PLAN (the setup's plan), MAP and
//! TO (its maps), OTHER (a map that PLAN does not lead to), BAD_JSON (a file that is not JSON),
//! MISSING (a path that does not exist), OUT (a path no case may create) and NEW (one a case
//! may). After each code-2 case the catalog's bytes (or its absence), OUT and ./reshard.db are
//! checked unchanged. Codes that take more than one command line (1, 130) have their own tests.

mod common;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{modulo, stderr, Cluster};
use common::conn::RawConn;
use common::db::Kind;
use common::online::{applied, setup, status, Setup};

const OK: i32 = 0;
const FAILED: i32 = 1;
const BAD: i32 = 2;
const MISMATCH: i32 = 3;
const INTERRUPTED: i32 = 130;

/// A server address that refuses connections at once.
const DOWN: &str = "postgres://reshard@127.0.0.1:1/catalog";

/// The tables: a line per case, `CODE  [ENV=VALUE ...] ARGS  # what the code means there`.
type Table = &'static str;

/// A table's cases: (arguments, code, meaning).
fn rows(table: Table) -> Vec<(Vec<&'static str>, i32, &'static str)> {
    table
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (cmd, means) = l.split_once('#').expect("# what it means");
            let mut words = cmd.split_whitespace();
            let code = words.next().unwrap().parse().expect("a code first");
            (words.collect(), code, means.trim())
        })
        .collect()
}

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
0   apply PLAN --dry-run                        # checked against the shards, nothing written
0   suggest --from MAP -o NEW                   # measured (read-only), the next map written
";

/// One job in dual write: every command that reads it succeeds; every one pointed at a job
/// that is not there, or at a step the job is not ready for, is refused without a write.
const ON_A_JOB_IN_DUAL_WRITE: Table = "
0   status                        # the newest job
0   status JOB --format json      # the job named
2   status j-nosuch               # unknown job
0   jobs --format json            # listed
0   log JOB                       # the job's history
2   log j-nosuch                  # unknown job
0   route 2                       # routed live from RESHARD_CATALOG
2   route two                     # a key that is not an integer
0   verify JOB                    # source and destination agree
2   verify j-nosuch               # unknown job
2   verify JOB --move m-nosuch    # unknown move
0   throttle JOB                  # shows the throttles
2   throttle j-nosuch             # unknown job
2   throttle JOB --max-lag long   # bad option value
2   resume j-nosuch               # unknown job
2   resume                        # nothing to resume: the job waits for complete
2   pause j-nosuch                # unknown job
2   switch j-nosuch               # unknown job
2   switch JOB                    # the job was not started with --switch manual
2   complete j-nosuch             # unknown job
2   rollback j-nosuch             # unknown job
2   rollback JOB --move m-nosuch  # unknown move
2   cancel j-nosuch               # unknown job
2   cancel JOB                    # moves have flipped: cancel is too late (rollback)
2   sync j-nosuch                 # unknown job
2   apply PLAN --yes              # another job is unfinished
2   apply PLAN --dry-run          # the dry run finds the unfinished job
2   worker --parallel 0           # bad option value
";

/// A destination row deleted behind reshard's back: verification says so, and so does every
/// command that verifies before it acts; nothing is deleted and the job stays resumable.
const AFTER_A_ROW_LOST_AT_THE_DESTINATION: Table = "
3   verify JOB                          # the lost row is found    
3   complete JOB                        # complete verifies first and deletes nothing
0   status JOB                          # the job is still there
0   verify JOB --repair                 # repaired
0   verify JOB                          # agree again
0   complete JOB                        # completed
0   status JOB                          # a finished job
2   resume JOB                          # a completed job cannot be resumed
0   complete JOB                        # already completed: nothing left to do
2   rollback JOB                        # a completed job cannot be rolled back
2   cancel JOB                          # a completed job cannot be cancelled
2   pause JOB                           # nothing to pause
2   switch JOB                          # nothing to switch
2   sync JOB                            # nothing to sync
2   throttle JOB --max-rows-per-sec 10  # nothing to throttle
";

/// A job stopped (kill -9) after catch-up, before any flip, and a row at the destination
/// damaged behind reshard's back: the cutover's own verification refuses to flip.
const BEFORE_THE_CUTOVER_A_ROW_DAMAGED: Table = "
3   resume JOB                          # the cutover verifies, finds the row; nothing flips
2   complete JOB                        # nothing has flipped yet
3   verify JOB                          # the damaged row is found
0   verify JOB --repair                 # mended from the source
0   resume JOB                          # verified again, every move flipped
0   complete JOB                        # done
";

/// A job started with `--switch manual`, stopped (kill -9) while it catches up: pause, switch
/// and resume act on it with nobody running it.
const A_MANUAL_JOB_NOBODY_RUNS: Table = "
2   switch JOB --move m-nosuch          # unknown move
0   switch JOB --dry-run                # what each fence would do; nothing changes
0   pause JOB                           # nobody runs it: paused at once
0   switch JOB --no-wait                # recorded for whoever runs the job next
0   resume JOB                          # catches up and flips, as switched
2   switch JOB                          # nothing left to switch
2   pause JOB                           # nothing left to pause: it waits for complete
";

/// A catalog (or a shard) that refuses connections: a failure, not bad input; the same command
/// succeeds once it is back. Nothing is recorded, since the catalog is what is down. (apply's
/// preflight refuses a plan whose shard is unreachable: exit 2, before anything is written.)
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
1   suggest --from DOWN_MAP -o OUT      # a shard refuses connections
2   apply DOWN_PLAN --dry-run           # preflight: a shard is not reachable
2   apply DOWN_PLAN --yes               # preflight: a shard is not reachable, nothing written
";

/// The words a table's rows use, filled in.
struct Words {
    dir: PathBuf,
    job: String,
    plan: String,
}

impl Words {
    fn of(s: &Setup, job: &str) -> Words {
        let dir = s.c.dir.path().to_path_buf();
        let to =
            s.c.map(&["s0", "s1", "s2"], modulo("identity", &["s0", "s1", "s2"]));
        let other =
            s.c.map(&["s0", "s1", "s2"], modulo("md5", &["s0", "s1", "s2"]));
        std::fs::write(dir.join("from.json"), s.from.to_string()).unwrap();
        std::fs::write(dir.join("to.json"), to.to_string()).unwrap();
        std::fs::write(dir.join("other.json"), other.to_string()).unwrap();
        std::fs::write(dir.join("bad.json"), "{\"shards\": ").unwrap();
        // s1 on a port nothing listens on.
        let mut down = s.from.clone();
        down["shards"]["s1"] = DOWN.into();
        std::fs::write(dir.join("down.json"), down.to_string()).unwrap();
        let mut down_to = to.clone();
        down_to["shards"]["s1"] = DOWN.into();
        let from = reshard::map::Map::from_value(&down, "from").unwrap();
        let to_map = reshard::map::Map::from_value(&down_to, "to").unwrap();
        let plan = reshard::planner::plan(&from, &to_map).unwrap();
        std::fs::write(dir.join("down-plan.json"), plan.to_json()).unwrap();
        Words {
            dir,
            job: job.to_string(),
            plan: s.plan.clone(),
        }
    }

    fn fill(&self, word: &str) -> String {
        let file = |f: &str| self.dir.join(f).display().to_string();
        match word {
            "JOB" => self.job.clone(),
            "PLAN" => self.plan.clone(),
            "MAP" => file("from.json"),
            "TO" => file("to.json"),
            "OTHER" => file("other.json"),
            "BAD_JSON" => file("bad.json"),
            "MISSING" => file("missing.json"),
            "OUT" => self.out().display().to_string(),
            "NEW" => file("new.json"),
            "DOWN" => DOWN.to_string(),
            "DOWN_MAP" => file("down.json"),
            "DOWN_PLAN" => file("down-plan.json"),
            w => w.to_string(),
        }
    }

    fn out(&self) -> PathBuf {
        self.dir.join("out.json")
    }
}

/// What a refused command must leave as it was: the catalog's bytes (after a checkpoint, so
/// that its write-ahead log is in them), or its absence, and the default catalog's absence.
fn written(c: &Cluster, w: &Words) -> (Option<u64>, bool, bool) {
    let path = c.catalog_path();
    let digest = path.exists().then(|| {
        let url = c.catalog_url();
        common::db::run_blocking(move || async move {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        });
        let mut h = DefaultHasher::new();
        std::fs::read(&path).unwrap().hash(&mut h);
        h.finish()
    });
    (digest, w.out().exists(), w.dir.join("reshard.db").exists())
}

/// Runs every row; one failure report listing every row that exited otherwise.
fn check(c: &Cluster, w: &Words, table: Table) {
    let mut wrong = Vec::new();
    for (args, code, means) in rows(table) {
        let before = written(c, w);
        let (env, args): (Vec<&str>, Vec<&str>) = args.into_iter().partition(|a| {
            a.split_once('=')
                .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        });
        let args: Vec<String> = args.iter().map(|a| w.fill(a)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = c.cmd(&args);
        for e in &env {
            let (k, v) = e.split_once('=').unwrap();
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run reshard");
        let line = format!("{} reshard {}", env.join(" "), args.join(" "));
        if out.status.code() != Some(code) {
            wrong.push(format!(
                "{line}: exit {:?}, want {code} ({means})\n    {}",
                out.status.code(),
                stderr(&out).trim().replace('\n', "\n    ")
            ));
        } else if code == BAD && written(c, w) != before {
            wrong.push(format!(
                "{line}: refused ({means}) but wrote: (catalog digest, OUT, ./reshard.db) went \
                 {before:?} -> {:?}",
                written(c, w)
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_job_through_to_complete() {
    let s = setup(Kind::Sqlite, "xdw").unwrap();
    let job = applied(&s).await;
    let w = Words::of(&s, &job);
    tokio::task::block_in_place(|| check(&s.c, &w, ON_A_JOB_IN_DUAL_WRITE));
    assert_eq!(status(&s.c, &job).await["state"], "dual_write");
    // `resume` with nothing to resume says what the waiting job needs (it said "every job has
    // finished").
    let out = common::online::run(&s.c, &["resume"]).await;
    assert!(
        stderr(&out).contains(&format!("job {job} is dual_write")),
        "{}",
        stderr(&out)
    );
    for cmd in ["status", "jobs", "log", "route 2"] {
        let args: Vec<&str> = cmd.split(' ').collect();
        let out = into_closed_pipe(s.c.cmd(&args));
        assert_eq!(
            out.status.code(),
            Some(OK),
            "{cmd} | (closed): {}",
            stderr(&out)
        );
        assert!(
            !stderr(&out).contains("panicked"),
            "{cmd}: {}",
            stderr(&out)
        );
    }
    // Key 2 moved s0 -> s2; SQLite's bypass drops only the guards, so the capture log that
    // would carry the delete back to s0 is emptied too (as in tests/operator_mistakes.rs).
    s.c.db("s2")
        .exec_unguarded("DELETE FROM users WHERE id = 2; DELETE FROM _rs_log_users");
    tokio::task::block_in_place(|| check(&s.c, &w, AFTER_A_ROW_LOST_AT_THE_DESTINATION));
    assert_eq!(status(&s.c, &job).await["state"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_verification_refuses_a_damaged_row() {
    let s = setup(Kind::Sqlite, "xcv").unwrap();
    let job = common::online::killed_at(&s, "after_apply:1", &[]);
    s.c.db("s2")
        .exec_unguarded("UPDATE users SET name = 'damaged' WHERE id = 2");
    let w = Words::of(&s, &job);
    tokio::task::block_in_place(|| check(&s.c, &w, BEFORE_THE_CUTOVER_A_ROW_DAMAGED));
    assert_eq!(status(&s.c, &job).await["state"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_job_is_paused_and_switched() {
    let s = setup(Kind::Sqlite, "xsw").unwrap();
    let job = common::online::killed_at(&s, "after_apply:1", &["--switch", "manual"]);
    let w = Words::of(&s, &job);
    tokio::task::block_in_place(|| check(&s.c, &w, A_MANUAL_JOB_NOBODY_RUNS));
    assert_eq!(status(&s.c, &job).await["state"], "dual_write");
}

/// The command with its stdout a pipe whose reader has already gone (`reshard status | head`
/// once head has quit): every write fails with EPIPE.
fn into_closed_pipe(mut cmd: Command) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    cmd.stdout(writer).stderr(Stdio::piped());
    cmd.output().expect("run reshard")
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
