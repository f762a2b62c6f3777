//! `reshard log`: a job's history from the catalog's events, as text that fits 100 columns or
//! as JSON lines, and with `--follow` new events as they happen until the job is finished.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cluster::{stderr, stdout};
use common::db::Kind;
use common::online::{applied, run, setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_text_json_and_follow() {
    let Some(s) = setup(Kind::Sqlite, "log") else {
        return;
    };
    let out = run(&s.c, &["log"]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "no catalog yet: {}",
        stderr(&out)
    );
    let job = applied(&s).await;

    let text = stdout(&run(&s.c, &["log", &job]).await);
    for kind in ["job_created", "flip", "job_state"] {
        assert!(text.contains(kind), "{kind} missing:\n{text}");
    }
    assert!(
        text.lines().all(|l| l.chars().count() <= 100),
        "fits 100 columns:\n{text}"
    );
    let json = stdout(&run(&s.c, &["log", &job, "--format", "json"]).await);
    let events: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(events
        .windows(2)
        .all(|w| w[0]["id"].as_i64() < w[1]["id"].as_i64()));
    let flips = events.iter().filter(|e| e["kind"] == "flip").count();
    assert!(
        flips >= 1 && events.iter().all(|e| e["at"].is_string()),
        "{json}"
    );

    // Follow: events after it started appear, and it ends by itself once the job is over.
    let mut follow =
        s.c.cmd(&["log", &job, "--follow", "--format", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    for args in [["rollback", &job], ["cancel", &job]] {
        let out = run(&s.c, &args).await;
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while matches!(follow.try_wait(), Ok(None)) {
        assert!(
            Instant::now() < deadline,
            "--follow did not end with the job"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = follow.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let followed = String::from_utf8_lossy(&out.stdout);
    assert!(followed.contains("\"flip_back\""), "{followed}");
    assert!(followed.contains("-> cancelled"), "{followed}");
}
