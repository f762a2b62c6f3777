//! docs/your-own-shards.md, tried end to end: its script (docs/your-own-shards.sh) creates a
//! role with the privileges the document lists, two databases and a table, then plans, checks,
//! dry-runs, applies, verifies, completes and audits as that role, finds the leftovers the
//! document names, and removes the old owner's guard as it says. On PostgreSQL and MariaDB.

mod common;

use std::process::Command;

use common::db::{Kind, TestDb};

fn walk(kind: Kind) {
    // The harness's reachability rule: skipped (one line) or, under CI, failed.
    if TestDb::create(kind, "walk").is_none() {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/your-own-shards.sh");
    let arg = match kind {
        Kind::Postgres => "postgres",
        _ => "mysql",
    };
    let out = Command::new("bash")
        .args([script, arg, env!("CARGO_BIN_EXE_reshard")])
        .output()
        .expect("run bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the walk failed:\n{text}");
    assert!(text.contains(&format!("walk done: {arg}")), "{text}");
    assert!(
        !text.contains("walk-secret"),
        "a password was printed:\n{text}"
    );
}

#[test]
fn postgres() {
    walk(Kind::Postgres)
}

#[test]
fn mysql() {
    walk(Kind::Mysql)
}
