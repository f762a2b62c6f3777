//! The README's exit-code table, true for every command (issue 17): each subcommand is run,
//! through the real binary on SQLite, into every code it can end with.

mod common;

use common::cluster::stderr;
use common::db::Kind;
use common::online::{applied, setup};

const BAD: i32 = 2;

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
