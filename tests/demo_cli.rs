//! `reshard demo` with the real binary: a small run passes and leaves a completed job whose rows
//! all sit on their owners under the new map; a row damaged behind its back (failpoint
//! `demo_damage`) makes it fail; bad flags exit 2 and write nothing. SQLite only: the demo is
//! the embedded cluster.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use sqlx::Connection;

use reshard::map::{Key, Map};

fn reshard(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reshard"));
    c.args(args)
        .env_remove("RESHARD_FAILPOINT")
        .env_remove("RESHARD_CATALOG");
    c
}

fn run(c: &mut Command) -> Output {
    c.output().expect("run reshard")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn demo(dir: &Path, rows: u64, keep: bool) -> Command {
    let rows = rows.to_string();
    let mut args = vec!["demo", "--rows", &rows, "--dir", dir.to_str().unwrap()];
    if keep {
        args.push("--keep");
    }
    reshard(&args)
}

fn results(dir: &Path) -> Value {
    let t = std::fs::read_to_string(dir.join("demo.json")).expect("demo.json");
    serde_json::from_str(&t).expect("demo.json is JSON")
}

/// (shard, user key) of every row of both tables, read straight from the shard files.
async fn keys_on_shards(dir: &Path, map: &Map) -> Vec<(String, &'static str, i64)> {
    let mut out = Vec::new();
    for shard in map.shards.keys() {
        let url = format!("sqlite://{}", dir.join(format!("{shard}.db")).display());
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        for (table, key) in [("users", "id"), ("posts", "user_id")] {
            let keys: Vec<i64> = sqlx::query_scalar(&format!("SELECT {key} FROM {table}"))
                .fetch_all(&mut c)
                .await
                .unwrap();
            out.extend(keys.into_iter().map(|k| (shard.clone(), table, k)));
        }
        c.close().await.unwrap();
    }
    out
}

#[tokio::test]
async fn demo_passes_and_leaves_a_completed_job_on_the_new_map() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let out = run(&mut demo(&dir, 3000, true));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "demo: {stdout}\n{stderr}");
    eprintln!("{stdout}");
    assert!(stdout.contains("\n  lost: 0 "), "{stdout}");
    assert!(stdout.contains("PASSED"), "{stdout}");
    for line in stdout.lines() {
        assert!(
            line.chars().count() <= 100,
            "wider than 100 columns: {line}"
        );
    }

    let r = results(&dir);
    assert_eq!(r["passed"], true, "{r}");
    assert_eq!(r["check"]["lost"], 0, "{r}");
    assert!(r["writer"]["acknowledged"].as_u64().unwrap() > 0, "{r}");
    let job = r["job"].as_str().unwrap().to_string();
    let catalog = r["catalog"].as_str().unwrap().to_string();

    let out = run(&mut reshard(&[
        "status",
        &job,
        "--catalog",
        &catalog,
        "--format",
        "json",
    ]));
    assert!(out.status.success(), "status: {}", text(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], "completed", "{status}");
    let moves = status["moves"].as_array().unwrap();
    assert_eq!(moves.len(), 4, "{status}");
    for m in moves {
        assert!(m["fence_ms"].is_u64(), "{m}");
    }

    // The audit, run separately against what the demo left, with the writer's tally.
    let users = format!("users={}", r["expected_rows"]["users"]);
    let posts = format!("posts={}", r["expected_rows"]["posts"]);
    let out = run(&mut reshard(&[
        "verify",
        &job,
        "--audit",
        "--catalog",
        &catalog,
        "--expect-rows",
        &users,
        "--expect-rows",
        &posts,
        "--format",
        "json",
    ]));
    let audit: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("audit: {}", text(&out.stderr)));
    assert!(out.status.success(), "audit: {audit}");
    assert_eq!(audit["ok"], true, "{audit}");

    // And without reshard: every row is at its owner under new.json, and the counts add up.
    let new = Map::load(&dir.join("new.json")).unwrap();
    let ring = new.compile();
    let rows = keys_on_shards(&dir, &new).await;
    let mut at_new_shard = 0;
    for (shard, table, k) in &rows {
        assert_eq!(ring.owner(&Key::Int(*k)).unwrap(), shard, "{table} key {k}");
        at_new_shard += usize::from(shard == "s4");
    }
    assert!(
        at_new_shard > 0,
        "nothing moved to s4: the test could not fail"
    );
    let count = |t: &str| rows.iter().filter(|(_, table, _)| *table == t).count() as u64;
    assert_eq!(
        count("users"),
        r["expected_rows"]["users"].as_u64().unwrap()
    );
    assert_eq!(
        count("posts"),
        r["expected_rows"]["posts"].as_u64().unwrap()
    );
}

#[test]
fn a_row_damaged_before_the_checks_fails_the_demo_and_keeps_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let out = run(demo(&dir, 2000, false).env("RESHARD_FAILPOINT", "demo_damage:1"));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(stdout.contains("FAILED"), "{stdout}");
    assert!(stderr.contains("checks failed"), "{stderr}");
    // Kept without --keep, for inspection.
    let r = results(&dir);
    assert_eq!(r["passed"], false, "{r}");
    assert_eq!(r["audit_ok"], false, "{r}");
    assert_eq!(r["check"]["stray"], 1, "{r}");
}

#[test]
fn without_keep_the_files_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let out = run(&mut demo(&dir, 400, false));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!dir.exists(), "{} is left behind", dir.display());
}

#[test]
fn bad_flags_exit_2_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let fresh = tmp.path().join("fresh");
    let out = run(&mut demo(&fresh, 0, false));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--rows"),
        "{}",
        text(&out.stderr)
    );
    assert!(!fresh.exists());

    let out = run(&mut reshard(&["demo", "--rows", "many"]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = run(&mut reshard(&["demo", "--no-such-flag"]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    let busy = tmp.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("mine.txt"), "keep me").unwrap();
    let out = run(&mut demo(&busy, 100, false));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not empty"),
        "{}",
        text(&out.stderr)
    );
    let names: Vec<_> = std::fs::read_dir(&busy).unwrap().collect();
    assert_eq!(names.len(), 1);
}
