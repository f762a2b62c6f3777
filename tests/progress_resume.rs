//! Progress after a resume (issue 17): a resumed move's rate counts only this run's rows over
//! this run's time, not the killed run's rows as done in no time (which once read
//! 293,767,175/s), and `--progress json` prints nothing but JSON lines.

#[macro_use]
mod common;

use serde_json::Value;

use common::cluster::*;
use common::db::Kind;
use common::online::{applied, run, setup};

const ROWS: i64 = 12_000;
const CAP: u64 = 2_000;

/// Every row of s0 moves to s1; the job is capped at `CAP` rows/s, so the resumed copy of
/// 9,000 rows takes at least 4.5 s and prints progress lines (every 2 s).
async fn resumed_rate_is_this_runs(kind: Kind) {
    let Some(c) = Cluster::create(kind, "prs", 2) else {
        return;
    };
    c.table_t(&["s0", "s1"]);
    c.fill_t("s0", 1..=ROWS);
    let urls = serde_json::json!({"s0": c.db("s0").url, "s1": c.db("s1").url});
    let m = |split: i64| {
        serde_json::json!({"shards": urls, "tables": [{"name": "t", "key": "id"}],
               "partitioning": ranges(&["s0", "s1"], &[split])})
    };
    let plan = c.write_plan("plan", &m(ROWS + 1), &m(1));
    let plan = plan.to_str().unwrap();
    let cap = CAP.to_string();
    let out = c
        .cmd(&[
            "apply",
            plan,
            "--yes",
            "--progress",
            "plain",
            "--batch-size",
            "1000",
            "--max-rows-per-sec",
            &cap,
        ])
        .env("RESHARD_FAILPOINT", "after_cursor:3")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the failpoint must stop apply");
    let job = job_id(&out).expect("job id");
    let out = c.run(&["resume", &job, "--progress", "json"]);
    assert!(out.status.success(), "resume: {}", stderr(&out));
    let err = stderr(&out);
    let events: Vec<Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}\n{err}")))
        .collect();
    let progress: Vec<&Value> = events.iter().filter(|e| e["event"] == "progress").collect();
    assert!(!progress.is_empty(), "no progress line in {err}");
    for p in &progress {
        // The cap holds the real rate near CAP; three times it leaves room for a burst.
        let limit = 3 * CAP;
        if let Some(r) = p["rows_per_second"].as_u64() {
            assert!(r <= limit, "job rate {r} rows/s under a {CAP} cap: {p}");
        }
        for mv in p["moves"].as_array().unwrap() {
            if let Some(r) = mv["rows_per_second"].as_u64() {
                assert!(r <= limit, "move rate {r} rows/s under a {CAP} cap: {p}");
            }
            if mv["state"] == "pending" {
                assert!(mv["eta_seconds"].is_null(), "a pending move's ETA: {p}");
            }
            let (done, all) = (mv["rows_copied"].as_u64(), mv["rows_total"].as_u64());
            assert!(done <= all, "more rows copied than in all: {p}");
        }
    }
    assert!(
        progress
            .iter()
            .any(|p| p["rows_per_second"].as_u64().is_some()),
        "some line knows the rate: {err}"
    );
}

/// Every stderr line of `out` is a JSON event; the texts of its `message` events.
fn json_only(what: &str, out: &std::process::Output) -> Vec<String> {
    let err = stderr(out);
    err.lines()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|_| panic!("{what}: not JSON: {l}\n{err}"));
            assert!(v["event"].is_string(), "{what}: {l}");
            v["text"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

/// `--progress json` on rollback, cancel and complete: nothing but JSON lines, and the steps
/// are in them (regression: these commands had no --progress, and printed plain lines).
async fn regression_job_actions_had_no_progress_json(kind: Kind) {
    let Some(s) = setup(kind, "pjs") else { return };
    let job = applied(&s).await;
    let out = run(&s.c, &["rollback", &job, "--progress", "json"]).await;
    assert!(out.status.success(), "rollback: {}", stderr(&out));
    let texts = json_only("rollback", &out);
    assert!(
        texts.iter().any(|t| t.contains("flipped back")),
        "{texts:?}"
    );
    let out = run(&s.c, &["cancel", &job, "--progress", "json"]).await;
    assert!(out.status.success(), "cancel: {}", stderr(&out));
    let texts = json_only("cancel", &out);
    assert!(
        texts.iter().any(|t| t.contains("copied rows deleted")),
        "{texts:?}"
    );
    let job = applied(&s).await;
    let out = run(&s.c, &["complete", &job, "--progress", "json"]).await;
    assert!(out.status.success(), "complete: {}", stderr(&out));
    let texts = json_only("complete", &out);
    assert!(
        texts.iter().any(|t| t.contains("old copies deleted")),
        "{texts:?}"
    );
}

per_backend_async!(
    resumed_rate_is_this_runs,
    regression_job_actions_had_no_progress_json
);
