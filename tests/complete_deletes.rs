//! `complete` deletes the moved rows at their old owners in batches: on PostgreSQL and MariaDB,
//! where the move's SQL filter is exact, one `DELETE` over each batch's primary-key range and
//! the filter (src/cleanup.rs). Killed -9 after a batch's delete and before its cursor was
//! recorded, it resumes, and the audit finds every row on its owner, no more and no fewer.

#[macro_use]
mod common;

use common::cluster::stderr;
use common::db::Kind;
use common::online::{applied, complete_and_audit, run, setup_users};

/// Identity modulo 2 -> 3: each old owner keeps the keys of some residues and loses the others,
/// interleaved in primary-key order, so a range delete that ignored the filter would take rows
/// that stay. 6,000 users with 2 orders each, in batches of 1,000 (`RESHARD_CLEANUP_BATCH`):
/// several batches per move and table, so the resume continues from a recorded cursor.
async fn killed_between_a_batch_and_its_cursor(kind: Kind) {
    let Some(s) = setup_users(kind, "cdel", 6_000) else {
        return;
    };
    let job = applied(&s).await;
    let before: Vec<usize> = ["s0", "s1"]
        .iter()
        .map(|sh| s.c.dump(sh, "orders").len())
        .collect();
    let out =
        s.c.cmd(&["complete", &job])
            .env("RESHARD_FAILPOINT", "cleanup_batch:3")
            .env("RESHARD_CLEANUP_BATCH", "1000")
            .output()
            .unwrap();
    assert!(!out.status.success(), "the failpoint must stop complete");
    assert!(
        stderr(&out).contains("failpoint cleanup_batch:3 reached"),
        "{}",
        stderr(&out)
    );
    // Some rows are gone already: the kill came after a batch's delete.
    let mid: Vec<usize> = ["s0", "s1"]
        .iter()
        .map(|sh| s.c.dump(sh, "orders").len())
        .collect();
    assert!(
        mid.iter().zip(&before).any(|(m, b)| m < b),
        "{mid:?} {before:?}"
    );
    let mut cmd = s.c.cmd(&["complete", &job]);
    cmd.env("RESHARD_CLEANUP_BATCH", "1000");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "complete: {}", stderr(&out));
    // Each move says what it deleted, stamped with the time of day.
    let err = stderr(&out);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("old copies deleted in"))
        .collect();
    assert_eq!(
        lines.len(),
        4,
        "a line per move (modulo 2 -> 3 has four): {err}"
    );
    for l in lines {
        let stamp = l
            .strip_prefix("reshard: ")
            .and_then(|r| r.get(..9))
            .unwrap_or("");
        assert!(stamp.ends_with('Z') && stamp.as_bytes()[2] == b':', "{l}");
    }
    complete_and_audit(&s.c, &job).await;
    // What stays at each old owner is exactly its keys under the new map.
    for (shard, residue) in [("s0", 0), ("s1", 1)] {
        for row in s.c.dump(shard, "users") {
            let id: i64 = row[0].parse().unwrap();
            assert_eq!(id.rem_euclid(3), residue, "{shard} kept user {id}");
        }
    }
    let out = run(&s.c, &["status", &job, "--format", "json"]).await;
    assert!(out.status.success(), "status: {}", stderr(&out));
}

per_backend_async!(killed_between_a_batch_and_its_cursor);
