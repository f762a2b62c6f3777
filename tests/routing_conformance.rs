//! The routing conformance fixture, `tests/fixtures/routing_conformance.json`: recorded jobs,
//! and at each routing version of each job the `live_routing` row and the owner of every key as
//! `reshard::Router` answers it. A client in any language checks itself against the file
//! without a database (clients/python/test_conformance.py does).
//!
//! The jobs are real: SQLite shards, the binary's `plan`, `apply`, `resume`, `rollback` and
//! `complete`, stopped after each of the first flips with the `after_flip` failpoint, so the
//! versions a writer observes between flips are recorded too. The test rebuilds the file and fails when it differs from
//! the committed one; `RESHARD_BLESS=1` rewrites it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};
use sqlx::{Connection, Executor};

use common::cluster::stderr;
use common::online::{LiveRoutingRow as ViewRow, LIVE_ROUTING as VIEW};
use reshard::{Key, Router};

const FIXTURE: &str = "tests/fixtures/routing_conformance.json";
/// Past this many single flips the rest of a job's moves flip in one run: the versions between
/// are of the same kind and would only make the file longer.
const SINGLE_FLIPS: usize = 4;

struct Job {
    name: &'static str,
    source: &'static str,
    from: Value,
    to: Value,
    text_keys: bool,
    keys: Vec<Value>,
}

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_json(rel: &str) -> Value {
    let text = std::fs::read_to_string(manifest().join(rel)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Integer keys: small ones of both signs, every range bound of the recorded maps and its
/// neighbours, the extremes of i64, and a fixed pseudo-random spread over the whole key space
/// and over the range that moves in the range split.
fn int_keys() -> Vec<i64> {
    let mut keys: Vec<i64> = (-8..=40).collect();
    for b in [1i64 << 61, 1 << 62, 3 << 61] {
        keys.extend([b - 1, b, b + 1]);
    }
    keys.extend([
        i64::MIN,
        i64::MIN + 1,
        i64::MAX,
        -1_000_000,
        1 << 31,
        1 << 53,
    ]);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..48 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        keys.push(if i % 2 == 0 {
            x as i64
        } else {
            (x >> 2) as i64
        });
    }
    keys
}

/// Text keys a hash or text-range map routes by their bytes, including ones a naive
/// implementation gets wrong: empty, non-ASCII (bytewise order), digits (text, not integers), a
/// string shaped like a ring token's input.
fn text_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "",
        "a",
        "alice",
        "bob",
        "g",
        "gz",
        "m",
        "m\u{0}",
        "Zoë",
        "zoe",
        "zz",
        "ë",
        "日本語",
        "user:17",
        "17",
        "-7",
        " spaced ",
        "s0:0",
        "s4:63",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    keys.push("x".repeat(100));
    keys.extend((0..24).map(|i| format!("user-{}", i * 37)));
    keys
}

/// Strings given to a map of integer keys: some parse as an i64 exactly as Rust parses one, the
/// others are refused (owner null).
fn integer_strings() -> Vec<String> {
    [
        "17",
        "+17",
        "-0",
        "-9223372036854775808",
        "9223372036854775807",
        "9223372036854775808",
        " 17",
        "17 ",
        "1_7",
        "0x11",
        "١٧",
        "",
        "abc",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn jobs() -> Vec<Job> {
    let plan_job = |name: &'static str, text_keys: bool| Job {
        name,
        source: "plans/",
        from: read_json(&format!("plans/{name}/old.json")),
        to: read_json(&format!("plans/{name}/new.json")),
        text_keys,
        keys: Vec::new(),
    };
    let shards = |n: usize| -> Value {
        (0..n)
            .map(|i| (format!("s{i}"), json!(format!("sqlite://data/s{i}.db"))))
            .collect::<serde_json::Map<String, Value>>()
            .into()
    };
    let text_range = |bounds: &[(Value, Value, &str)]| -> Value {
        json!({
            "shards": shards(3),
            "tables": [{"name": "users", "key": "id"}, {"name": "posts", "key": "user_id"}],
            "partitioning": {"kind": "range", "ranges": bounds.iter()
                .map(|(f, t, s)| json!({"from": f, "to": t, "shard": s})).collect::<Vec<_>>()},
        })
    };
    let mut out = vec![
        plan_job("modulo-4-to-8", false),
        plan_job("range-split", false),
        plan_job("ring-add", true),
        plan_job("modulo-to-ring", true),
        Job {
            name: "text-range-split",
            source: "this test",
            from: text_range(&[
                (json!(null), json!("m"), "s0"),
                (json!("m"), json!(null), "s1"),
            ]),
            to: text_range(&[
                (json!(null), json!("g"), "s0"),
                (json!("g"), json!("m"), "s2"),
                (json!("m"), json!(null), "s1"),
            ]),
            text_keys: true,
            keys: Vec::new(),
        },
    ];
    for j in &mut out {
        let text_range = j.name == "text-range-split";
        if !text_range {
            j.keys.extend(int_keys().into_iter().map(Value::from));
        } else {
            j.keys.extend([json!(7), json!(-1)]);
        }
        if j.text_keys {
            j.keys.extend(text_keys().into_iter().map(Value::from));
        } else {
            j.keys
                .extend(integer_strings().into_iter().map(Value::from));
        }
    }
    out
}

fn text_key_column(job: &Job) -> bool {
    job.name == "text-range-split"
}

async fn create_shards(dir: &Path, job: &Job) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let mut names: Vec<String> = Vec::new();
    for m in [&job.from, &job.to] {
        for k in m["shards"].as_object().unwrap().keys() {
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
    }
    let key_type = if text_key_column(job) {
        "TEXT"
    } else {
        "INTEGER"
    };
    for n in names {
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.join(format!("data/{n}.db")).display()
        );
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        c.execute(
            format!(
                "CREATE TABLE users (id {key_type} NOT NULL PRIMARY KEY, name TEXT NOT NULL); \
                 CREATE TABLE posts (user_id {key_type} NOT NULL, post_id INTEGER NOT NULL, \
                 body TEXT, PRIMARY KEY (user_id, post_id))"
            )
            .as_str(),
        )
        .await
        .unwrap();
        c.close().await.unwrap();
    }
}

struct Run {
    dir: tempfile::TempDir,
}

impl Run {
    fn catalog(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("catalog.db").display())
    }

    /// The binary in the job's directory, where the maps' `sqlite://data/sN.db` resolve.
    async fn reshard(&self, args: &[&str], failpoint: Option<&str>) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_reshard"));
        c.args(args)
            .env("RESHARD_CATALOG", self.catalog())
            .env("RESHARD_RETRY_MAX", "2")
            .env("RESHARD_BATCH_TIME", "0s")
            .env_remove("RESHARD_FAILPOINT")
            .current_dir(self.dir.path());
        if let Some(f) = failpoint {
            c.env("RESHARD_FAILPOINT", f);
        }
        tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap()
    }

    async fn ok(&self, args: &[&str]) {
        let out = self.reshard(args, None).await;
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }

    /// Runs until the failpoint aborts it; a run that ends otherwise had nothing left to stop.
    async fn until(&self, args: &[&str], failpoint: &str) -> bool {
        let out = self.reshard(args, Some(failpoint)).await;
        let aborted = stderr(&out).contains("failpoint");
        assert!(
            aborted || out.status.success(),
            "{args:?}: {}",
            stderr(&out)
        );
        aborted
    }

    async fn view(&self) -> ViewRow {
        let mut c = sqlx::SqliteConnection::connect(&self.catalog())
            .await
            .unwrap();
        let rows: Vec<ViewRow> = sqlx::query_as(VIEW).fetch_all(&mut c).await.unwrap();
        c.close().await.unwrap();
        assert_eq!(rows.len(), 1, "one job at a time: {rows:?}");
        rows.into_iter().next().unwrap()
    }

    /// The row and every key's owner by the Router; refused keys get null.
    async fn record(&self, label: &str, keys: &[Value]) -> Value {
        let row = self.view().await;
        let router = Router::connect(&self.catalog()).await.unwrap();
        assert_eq!(
            router.version(),
            row.0,
            "{label}: the view and the Router disagree"
        );
        let mut owners = Vec::new();
        for k in keys {
            let key = match k {
                Value::Number(n) => Key::Int(n.as_i64().unwrap()),
                Value::String(s) => Key::Text(s.clone()),
                _ => unreachable!(),
            };
            owners.push(match router.route(&key).await {
                Ok(r) => json!(r.shard),
                Err(_) => Value::Null,
            });
        }
        router.close().await;
        let flipped_n = row
            .6
            .as_deref()
            .map_or(0, |f| serde_json::from_str::<Vec<Value>>(f).unwrap().len());
        let label = format!("{label} ({flipped_n} flipped)");
        json!({
            "label": label,
            "version": row.0,
            "map_json": row.1,
            "job_state": row.3,
            "from_map": row.4,
            "to_map": row.5,
            "flipped": row.6,
            "owners": owners,
        })
    }
}

/// Records one job: no job yet, job started and nothing flipped, after each flip, after a
/// rollback of one move and of all, after the cutover again, after completion.
async fn record_job(job: &Job) -> Value {
    let run = Run {
        dir: tempfile::tempdir().unwrap(),
    };
    let dir = run.dir.path();
    create_shards(dir, job).await;
    for (f, m) in [("old.json", &job.from), ("new.json", &job.to)] {
        std::fs::write(dir.join(f), serde_json::to_string_pretty(m).unwrap()).unwrap();
    }
    run.ok(&[
        "plan",
        "--from",
        "old.json",
        "--to",
        "new.json",
        "-o",
        "plan.json",
    ])
    .await;
    let plan: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("plan.json")).unwrap()).unwrap();
    let moves = plan["moves"].as_array().unwrap().len();
    let from = reshard::Map::from_value(&job.from, "from").unwrap();
    reshard::workload::init_routing(&run.catalog(), &from)
        .await
        .unwrap();

    let keys = &job.keys;
    let mut versions = vec![run.record("no job yet", keys).await];
    // One cutover at a time (resume keeps the job's --parallel): side by side, a second move
    // may or may not flip before the first flip's failpoint stops the run, and the recorded
    // versions would differ from run to run.
    let apply = [
        "apply",
        "plan.json",
        "--yes",
        "--parallel",
        "1",
        "--progress",
        "plain",
    ];
    assert!(
        run.until(&apply, "before_flip:1").await,
        "apply flipped nothing"
    );
    versions.push(run.record("job started, before any flip", keys).await);
    let job_id = run.view().await.2.unwrap();
    for i in 1..=moves.min(SINGLE_FLIPS) {
        let resume = ["resume", job_id.as_str()];
        assert!(run.until(&resume, "after_flip:1").await, "flip {i}");
        versions.push(run.record(&format!("after flip {i}"), keys).await);
    }
    if moves > SINGLE_FLIPS {
        run.ok(&["resume", &job_id]).await;
        versions.push(run.record("after every flip", keys).await);
    } else {
        // Every move flipped; this run only moves the job to dual_write (no new version).
        run.ok(&["resume", &job_id]).await;
    }
    run.ok(&["rollback", &job_id, "--move", "m1"]).await;
    versions.push(run.record("after rollback of m1", keys).await);
    // With one move, that rollback was the whole rollback: the same row again would add nothing.
    if run.view().await.6.as_deref() != Some("[]") {
        run.ok(&["rollback", &job_id]).await;
        versions.push(run.record("after rollback", keys).await);
    }
    run.ok(&["resume", &job_id]).await;
    versions.push(run.record("after the cutover again", keys).await);
    run.ok(&["complete", &job_id]).await;
    versions.push(run.record("after complete", keys).await);
    json!({
        "name": job.name,
        "maps": job.source,
        "keys": keys,
        "versions": versions,
    })
}

/// One line per version entry, so a diff of the file shows which entry changed and the file
/// stays small.
fn render(jobs: &[Value]) -> String {
    let mut s = String::from("{\n");
    s.push_str(&format!(
        "  \"about\": {},\n",
        json!(
            "Generated by tests/routing_conformance.rs from real jobs run by the reshard binary; \
             owners are reshard::Router's answers (null: the router refuses the key). Each \
             version entry holds the live_routing row (job_id omitted: it differs per run). \
             Integer keys are JSON integers (64-bit: parse them exactly), text keys JSON strings."
        )
    ));
    s.push_str(&format!(
        "  \"rule\": {},\n  \"jobs\": [\n",
        json!(
            "with no job row, or no flipped pair, the key's owner under map_json; otherwise its \
             to_map owner when [from_map owner, to_map owner] is in flipped, else its from_map \
             owner"
        )
    ));
    for (ji, j) in jobs.iter().enumerate() {
        s.push_str(&format!(
            "    {{\"name\": {}, \"maps\": {},\n     \"keys\": {},\n     \"versions\": [\n",
            j["name"], j["maps"], j["keys"]
        ));
        let vs = j["versions"].as_array().unwrap();
        for (vi, v) in vs.iter().enumerate() {
            let sep = if vi + 1 < vs.len() { "," } else { "" };
            s.push_str(&format!("      {v}{sep}\n"));
        }
        let sep = if ji + 1 < jobs.len() { "," } else { "" };
        s.push_str(&format!("    ]}}{sep}\n"));
    }
    s.push_str("  ]\n}\n");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_matches_the_router() {
    let mut recorded = Vec::new();
    for job in jobs() {
        recorded.push(record_job(&job).await);
    }
    // The fixture is only useful if keys change owner between versions of every job.
    for j in &recorded {
        let vs = j["versions"].as_array().unwrap();
        let first = &vs[0]["owners"];
        let last = &vs[vs.len() - 1]["owners"];
        assert_ne!(first, last, "{}: no key moved", j["name"]);
    }
    let text = render(&recorded);
    let path = manifest().join(FIXTURE);
    if std::env::var("RESHARD_BLESS").as_deref() == Ok("1") {
        std::fs::write(&path, &text).unwrap();
        eprintln!("wrote {FIXTURE} ({} bytes)", text.len());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != text {
        let line = committed
            .lines()
            .zip(text.lines())
            .position(|(a, b)| a != b)
            .map_or(committed.lines().count().min(text.lines().count()), |i| i);
        panic!(
            "{FIXTURE} differs from what the Router answers now (first at line {}): if the \
             change in routing is intended, rewrite it with \
             `RESHARD_BLESS=1 cargo test --test routing_conformance` and review the diff",
            line + 1
        );
    }
}
