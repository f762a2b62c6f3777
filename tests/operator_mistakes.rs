//! Sequences of reshard's own commands that once lost data (issue 12), run with the real
//! binary: a second `apply` (with and without `--allow-existing`) or a second plan while a job
//! is unfinished, commands aimed at the wrong job, `complete` after rows were damaged behind
//! reshard's back, and kill -9s between job creation and the first copied row. Each ends with
//! the layout the plan implies: `verify --audit` clean against the counts recorded at job
//! creation, and routing answering.

#[macro_use]
mod common;

use common::cluster::{job_id, modulo, stderr, Cluster, TABLES};
use common::db::Kind;
use common::online::{applied, complete_and_audit, killed_at, run, setup};

/// Rows per table over every shard.
fn totals(c: &Cluster) -> Vec<usize> {
    let snap = c.snapshot();
    TABLES
        .iter()
        .map(|(t, _)| {
            snap.iter()
                .filter(|((_, table), _)| table == t)
                .map(|(_, rows)| rows.len())
                .sum()
        })
        .collect()
}

/// Regression: a second `apply` of the same plan was refused with the hint "pass
/// --allow-existing to overwrite them"; with it, job B started on job A's shards, routing
/// became ambiguous, and B's cancel deleted A's copied rows. Now any second job is refused
/// while A is unfinished, naming A, its state and the command that finishes it.
async fn regression_overlapping_jobs_apply_twice_then_allow_existing(kind: Kind) {
    let Some(s) = setup(kind, "omo") else { return };
    let rows = totals(&s.c);
    let a = applied(&s).await;
    let during = s.c.snapshot();
    let to4 =
        s.c.map(&["s0", "s1", "s2"], modulo("md5", &["s0", "s1", "s2"]));
    let other = s.c.write_plan("other", &s.from, &to4).display().to_string();
    for args in [
        vec!["apply", s.plan.as_str(), "--yes"],
        vec!["apply", s.plan.as_str(), "--yes", "--allow-existing"],
        vec!["apply", other.as_str(), "--yes", "--allow-existing"],
    ] {
        let out = run(&s.c, &args).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!("job {a} is unfinished (dual_write")),
            "{err}"
        );
        assert!(err.contains(&format!("reshard complete {a}")), "{err}");
        assert!(!err.contains("--allow-existing to overwrite"), "{err}");
    }
    for p in [&other, &s.plan] {
        let out = run(&s.c, &["apply", p, "--dry-run"]).await;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(out.status.code(), Some(2), "dry run: {text}");
        assert!(
            text.contains(&format!("job {a} is unfinished")),
            "dry run: {text}"
        );
        // The rows at the destinations are A's: never reported as someone else's.
        assert!(
            !text.contains("no job in flight copied them"),
            "dry run: {text}"
        );
    }
    assert_eq!(s.c.snapshot(), during, "the refusals wrote nothing");
    let jobs = run(&s.c, &["jobs", "--format", "json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&jobs.stdout).unwrap_or_default();
    assert_eq!(v.as_array().map(Vec::len), Some(1), "one job only: {v}");
    complete_and_audit(&s.c, &a).await;
    assert_eq!(totals(&s.c), rows);
}

/// Commands aimed at a job that is over are refused and change nothing.
async fn wrong_job_commands_are_refused(kind: Kind) {
    let Some(s) = setup(kind, "omw") else { return };
    let a = applied(&s).await;
    complete_and_audit(&s.c, &a).await;
    let after = s.c.snapshot();
    for args in [
        vec!["cancel", a.as_str()],
        vec!["rollback", a.as_str()],
        vec!["cancel", "j00000000000000abcd"],
        vec!["complete", "j00000000000000abcd"],
    ] {
        let out = run(&s.c, &args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(s.c.snapshot(), after);
}

/// Regression: `complete` deleted the old copies without looking, after rows at the new owner
/// had been deleted behind reshard's back (another job's cleanup did exactly that). Now it
/// verifies every move first and refuses with exit 3, deleting nothing.
async fn regression_complete_deletes_unverified_after_damage(kind: Kind) {
    let Some(s) = setup(kind, "omd") else { return };
    let rows = totals(&s.c);
    let a = applied(&s).await;
    // Key 2 moved s0 -> s2. SQLite's bypass drops only the guards, so its capture log, which
    // would carry the delete back to s0 as an application's delete, is emptied too.
    let damage = match kind {
        Kind::Sqlite => "DELETE FROM users WHERE id = 2; DELETE FROM _rs_log_users",
        _ => "DELETE FROM users WHERE id = 2",
    };
    s.c.db("s2").exec_unguarded(damage);
    let before = s.c.dump("s0", "users");
    let out = run(&s.c, &["complete", &a]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "complete: {err}");
    assert!(err.contains("nothing was deleted"), "{err}");
    assert_eq!(s.c.dump("s0", "users"), before, "old copies untouched");
    // The operator repairs the new owner from the old copy, then completes.
    let out = run(&s.c, &["verify", &a, "--repair"]).await;
    assert!(out.status.success(), "repair: {}", stderr(&out));
    complete_and_audit(&s.c, &a).await;
    assert_eq!(totals(&s.c), rows);
}

/// Regression: the audit counts were recorded after the job was committed, so a kill -9 in
/// between lost them, and `verify --audit` then passed without comparing counts. Now they are
/// written with the job: a kill at every point before the first copied row, then resume and
/// complete, leaves an audit that compares counts and fails when a row goes missing.
///
/// The points, in the order a run passes them: the install of each of the plan's three shards
/// (`install:N` is after the Nth shard's DDL, before it is recorded installed), the first batch
/// read but not written (`before_upsert:1`), and the first rows written but their cursor not
/// recorded (`after_upsert:1`).
async fn regression_audit_counts_lost_to_a_kill_after_job_creation(kind: Kind) {
    for point in [
        "install:1",
        "install:2",
        "install:3",
        "before_upsert:1",
        "after_upsert:1",
    ] {
        let Some(s) = setup(kind, "omk") else { return };
        let rows = totals(&s.c);
        let a = killed_at(&s, point, &[]);
        let out = run(&s.c, &["resume", &a]).await;
        assert!(out.status.success(), "{point}: resume: {}", stderr(&out));
        complete_and_audit(&s.c, &a).await;
        assert_eq!(totals(&s.c), rows, "{point}");
        // A row lost behind reshard's back is now seen by the count.
        s.c.db("s2")
            .exec_unguarded("DELETE FROM users WHERE id = 2");
        let out = run(&s.c, &["verify", &a, "--audit"]).await;
        assert_eq!(out.status.code(), Some(3), "{point}: audit must fail");
    }
}

/// The job's row, events and progress in the catalog: what a refused command must not change.
fn catalog_state(c: &Cluster, job: &str) -> String {
    let cat = rusqlite::Connection::open(c.catalog_path()).unwrap();
    cat.query_row(
        "SELECT state || '|' || updated_at || '|' || COALESCE(last_error, '') || '|' || \
         (SELECT COUNT(*) FROM events) || '|' || \
         (SELECT COALESCE(SUM(rows_copied), 0) FROM cursors WHERE job_id = ?1) \
         FROM jobs WHERE id = ?1",
        [job],
        |r| r.get(0),
    )
    .unwrap()
}

/// Regression: `resume` (and the commands acting on a job) read the plan back from the catalog
/// unchecked, so a plan edited there (a move deleted from jobs.plan_json) was carried out as
/// stored, routing the deleted move's keys to a shard that never received their rows. Now the
/// stored plan is authenticated as `apply` authenticates the file: exit 2 naming the JSON path,
/// nothing written; restored, the job finishes.
async fn regression_resume_runs_a_plan_edited_in_the_catalog(kind: Kind) {
    let Some(s) = setup(kind, "omt") else { return };
    let rows = totals(&s.c);
    let a = killed_at(&s, "before_upsert:1", &[]);
    let cat = rusqlite::Connection::open(s.c.catalog_path()).unwrap();
    let stored: String = cat
        .query_row("SELECT plan_json FROM jobs WHERE id = ?1", [&a], |r| {
            r.get(0)
        })
        .unwrap();
    let mut edited: serde_json::Value = serde_json::from_str(&stored).unwrap();
    let n = edited["moves"].as_array().unwrap().len();
    assert!(n >= 2, "{edited}");
    edited["moves"].as_array_mut().unwrap().pop();
    let edited = serde_json::to_string(&edited).unwrap();
    cat.execute(
        "UPDATE jobs SET plan_json = ?1 WHERE id = ?2",
        [&edited, &a],
    )
    .unwrap();
    let before = s.c.snapshot();
    let job_before = catalog_state(&s.c, &a);
    for cmd in ["resume", "cancel"] {
        let out = run(&s.c, &[cmd, &a]).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains(&format!(
                "job {a} plan (jobs.plan_json): moves[{}] differs from what the maps give",
                n - 1
            )),
            "{cmd}: {err}"
        );
        assert!(err.contains("nothing was done"), "{cmd}: {err}");
        assert_eq!(s.c.snapshot(), before, "{cmd}: a shard was written");
        assert_eq!(
            catalog_state(&s.c, &a),
            job_before,
            "{cmd}: the job changed"
        );
    }
    cat.execute(
        "UPDATE jobs SET plan_json = ?1 WHERE id = ?2",
        [&stored, &a],
    )
    .unwrap();
    drop(cat);
    let out = run(&s.c, &["resume", &a]).await;
    assert!(out.status.success(), "resume: {}", stderr(&out));
    complete_and_audit(&s.c, &a).await;
    assert_eq!(totals(&s.c), rows);
}

/// An audit with no count to compare fails loudly, unless the operator gives one.
async fn audit_without_counts_fails(kind: Kind) {
    let Some(s) = setup(kind, "oma") else { return };
    let rows = totals(&s.c);
    let a = applied(&s).await;
    complete_and_audit(&s.c, &a).await;
    let cat = rusqlite::Connection::open(s.c.catalog_path()).unwrap();
    cat.execute("DELETE FROM job_row_counts", []).unwrap();
    drop(cat);
    let out = run(&s.c, &["verify", &a, "--audit"]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("NO EXPECTED COUNT"), "{text}");
    let out = common::online::audit_expecting(&s.c, &a, rows[0], rows[1]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Regression: a completed job leaves its guards and raised fence rows on its old owners, and
/// fence rows are keyed by owner indices under each job's maps. The next job reused that table,
/// so a row the first job had raised refused the second job's writers of keys their shard still
/// owned. Job A moves 2 -> 3 shards, job B 3 -> 4; key 6 is s0's under both of A's new map and
/// B's old one, and its (0, 2) pair was raised by A.
async fn regression_second_job_inherits_a_completed_jobs_fence_rows(kind: Kind) {
    let Some(c) = Cluster::create(kind, "omf", 4) else {
        return;
    };
    c.create_tables(&["s0", "s1", "s2", "s3"]);
    let m2 = c.map(&["s0", "s1"], modulo("identity", &["s0", "s1"]));
    let m3 = c.map(&["s0", "s1", "s2"], modulo("identity", &["s0", "s1", "s2"]));
    let m4 = c.map(
        &["s0", "s1", "s2", "s3"],
        modulo("identity", &["s0", "s1", "s2", "s3"]),
    );
    c.populate(&m2, 40, 2);
    let rows = totals(&c);
    let pa = c.write_plan("a", &m2, &m3).display().to_string();
    let pb = c.write_plan("b", &m3, &m4).display().to_string();
    let out = run(&c, &["apply", &pa, "--yes", "--complete"]).await;
    assert!(out.status.success(), "apply A: {}", stderr(&out));
    // B stops right after installing on its last shard, before copying.
    let out = c
        .cmd(&["apply", &pb, "--yes"])
        .env("RESHARD_FAILPOINT", "install:4")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the failpoint must stop apply B");
    let b = job_id(&out).unwrap();
    // An application write of key 6 at its owner, s0, passes the guard.
    c.db("s0")
        .exec("UPDATE users SET name = 'still s0' WHERE id = 6");
    let out = run(&c, &["resume", &b]).await;
    assert!(out.status.success(), "resume B: {}", stderr(&out));
    complete_and_audit(&c, &b).await;
    assert_eq!(totals(&c), rows);
    assert_eq!(
        c.db("s2").scalar("SELECT name FROM users WHERE id = 6"),
        "still s0"
    );
}

per_backend_async!(
    regression_second_job_inherits_a_completed_jobs_fence_rows,
    regression_overlapping_jobs_apply_twice_then_allow_existing,
    wrong_job_commands_are_refused,
    regression_complete_deletes_unverified_after_damage,
    regression_audit_counts_lost_to_a_kill_after_job_creation,
    audit_without_counts_fails,
    regression_resume_runs_a_plan_edited_in_the_catalog,
);
