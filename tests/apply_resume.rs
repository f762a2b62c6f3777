//! Crash and interruption: a process killed (failpoint abort or a real kill -9) at any point
//! of a batch, or stopped by SIGINT, leaves a job that `resume` finishes with exactly the
//! source's moving rows at each destination, and no recorded batch copied twice.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::cluster::*;
use common::db::Kind;
use serde_json::Value;

struct Setup {
    c: Cluster,
    from: Value,
    to: Value,
    before: std::collections::BTreeMap<(String, String), Vec<Vec<String>>>,
    plan: String,
}

fn setup(kind: Kind, tag: &str, users: i64) -> Option<Setup> {
    let c = Cluster::create(kind, tag, 3)?;
    c.create_tables(&["s0", "s1", "s2"]);
    let from = c.map(&["s0", "s1"], modulo("identity", &["s0", "s1"]));
    let to = c.map(&["s0", "s1", "s2"], modulo("identity", &["s0", "s1", "s2"]));
    c.populate(&from, users, 2);
    let before = c.snapshot();
    let plan = c.write_plan("plan", &from, &to).display().to_string();
    Some(Setup {
        c,
        from,
        to,
        before,
        plan,
    })
}

/// Resumes until the job is done, and checks the end state: rows compared one by one, and
/// each move's copied counter equal to its total (a recorded batch copied again would count
/// twice).
fn resume_and_check(s: &Setup) {
    let st = s.c.run(&["status", "--format", "json"]);
    let v: Value = serde_json::from_slice(&st.stdout).unwrap();
    // A run that was not killed in time may have finished the job already.
    if v["state"] != "dual_write" {
        let out = s.c.run(&["resume", "--progress", "plain"]);
        assert!(out.status.success(), "resume: {}", stderr(&out));
    }
    s.c.assert_copied(&s.before, &s.from, &s.to);
    let st = s.c.run(&["status", "--format", "json"]);
    let v: Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["state"], "dual_write", "{v}");
    for m in v["moves"].as_array().unwrap() {
        assert_eq!(m["rows_copied"], m["rows_total"], "{m}");
    }
}

fn has_job(c: &Cluster) -> bool {
    let out = c.run(&["jobs", "--format", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.as_array().is_some_and(|a| !a.is_empty())
}

fn failpoints(kind: Kind) {
    for point in [
        "before_upsert:3",
        "after_upsert:3",
        "after_cursor:3",
        "after_upsert:7",
    ] {
        let Some(s) = setup(kind, "fp", 150) else {
            return;
        };
        let out =
            s.c.cmd(&[
                "apply",
                &s.plan,
                "--yes",
                "--batch-size",
                "16",
                "--parallel",
                "1",
                "--progress",
                "plain",
            ])
            .env("RESHARD_FAILPOINT", point)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: the failpoint did not fire");
        assert!(
            stderr(&out).contains("failpoint"),
            "{point}: {}",
            stderr(&out)
        );
        resume_and_check(&s);
        if kind == Kind::Postgres {
            // Identity modulo on integer keys: the PostgreSQL copy goes through the COPY pipe,
            // and a batch written but not recorded is written again through the upsert.
            let log = s.c.run(&["log", "--format", "json"]);
            let log = String::from_utf8_lossy(&log.stdout);
            assert!(log.contains("COPY piped from"), "{point}: {log}");
            assert_eq!(
                log.contains("written again through the upsert"),
                point.starts_with("after_upsert"),
                "{point}: {log}"
            );
        }
    }
}

fn kill9_at_random_moments(kind: Kind) {
    let Some(s) = setup(kind, "k9", 1500) else {
        return;
    };
    use std::hash::{BuildHasher, Hasher};
    let mut kills = 0;
    for _ in 0..3 {
        // A kill before the job was recorded leaves nothing to resume: apply again.
        let args: Vec<&str> = if !has_job(&s.c) {
            vec![
                "apply",
                &s.plan,
                "--yes",
                "--batch-size",
                "7",
                "--progress",
                "plain",
            ]
        } else {
            vec!["resume", "--progress", "plain"]
        };
        let mut child =
            s.c.cmd(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
        let r = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        std::thread::sleep(Duration::from_millis(150 + r % 600));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let _ = child.wait();
    }
    eprintln!("{kind:?}: killed {kills} times");
    if !has_job(&s.c) {
        let out = s.c.run(&["apply", &s.plan, "--yes", "--progress", "plain"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    resume_and_check(&s);
}

fn sigint_then_resume(kind: Kind) {
    let Some(s) = setup(kind, "int", 1500) else {
        return;
    };
    let mut child =
        s.c.cmd(&[
            "apply",
            &s.plan,
            "--yes",
            "--batch-size",
            "5",
            "--progress",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    // Interrupt once a move is copying, so the signal lands mid-copy.
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push_str(&line);
        if line.contains("\"copying\"") {
            let st = std::process::Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(st.success());
            break;
        }
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    seen.push_str(&rest);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(seen.contains("reshard resume j"), "{seen}");
    let st = s.c.run(&["status", "--format", "json"]);
    let v: Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["state"], "interrupted", "{v}");
    resume_and_check(&s);
}

macro_rules! per_backend {
    ($($name:ident),*) => {
        mod sqlite { use super::*; $(#[test] fn $name() { super::$name(Kind::Sqlite) })* }
        mod postgres { use super::*; $(#[test] fn $name() { super::$name(Kind::Postgres) })* }
        mod mysql { use super::*; $(#[test] fn $name() { super::$name(Kind::Mysql) })* }
    };
}

per_backend!(failpoints, kill9_at_random_moments, sigint_then_resume);
