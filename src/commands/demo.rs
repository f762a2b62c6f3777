//! `reshard demo [--dir DIR] [--rows N] [--keep]`: the whole story on one machine with nothing
//! but this binary. Four SQLite shards on a sha1 ring get a fifth, online, while the writer
//! workload of the tests (`crate::workload`) writes through `reshard::Router`; the job runs
//! through the same library code as `reshard apply`, then verification, completion, and the
//! checks that decide the exit code: no acknowledged write lost (the workload's checker reads
//! every shard), every move verified by chunked checksums, and the audit of the final layout.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use indicatif::HumanCount;
use serde_json::json;

use super::apply::{start_job, ApplyOptions};
use super::{Format, ProgressMode};
use crate::capture::Online;
use crate::catalog::Catalog;
use crate::demo::{self, Counts, Layout, NEW_SHARD, OLD_SHARDS};
use crate::error::{InputError, Stop};
use crate::lease::Lease;
use crate::plan::Plan;
use crate::planner::{self, PlannerOptions};
use crate::router::RouterOptions;
use crate::signals::StopFlag;
use crate::verify::{self, audit::AuditReport, MoveReport, Scope, Verifier};
use crate::workload::{self, CheckReport, Last, Pk, Snapshot, Tally, WorkloadConfig, POSTS};
use crate::Router;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where to put the files (None: a new directory under the system's temporary directory).
    pub dir: Option<PathBuf>,
    pub rows: u64,
    pub keep: bool,
}

/// The checker holds every row in memory; beyond this the demo is no longer a demo.
pub const MAX_ROWS: u64 = 20_000_000;
/// The writer updates the last this many users (and their posts) and inserts new ones.
const HOT_USERS: u64 = 3_000;
const WRITES_PER_SECOND: f64 = 400.0;
/// Writes acknowledged before the job starts, and again in dual write before the writer stops.
const WRITES_BEFORE: u64 = 200;
const WRITES_IN_DUAL_WRITE: u64 = 200;
const STEPS: usize = 7;

/// The directory to use, decided (and checked) before anything is written.
#[derive(Debug)]
enum Target {
    /// `--dir` names an existing empty directory: the demo's files are removed from it at the
    /// end, the directory stays.
    Empty(PathBuf),
    /// Created by the demo (`--dir` that does not exist yet, or a temporary one): removed.
    New(PathBuf),
    Temp,
}

fn validate(opts: &DemoOptions) -> Result<Target, InputError> {
    let mut problems = Vec::new();
    if opts.rows == 0 {
        problems.push("--rows: must be at least 1".to_string());
    } else if opts.rows > MAX_ROWS {
        problems.push(format!(
            "--rows: at most {MAX_ROWS} (the checker holds every row in memory)"
        ));
    }
    let target = match &opts.dir {
        None => Target::Temp,
        Some(d) => {
            let abs = std::path::absolute(d).unwrap_or_else(|_| d.clone());
            let shown = d.display();
            if !demo::url_safe_path(&abs) {
                problems.push(format!(
                    "--dir {shown}: the path must be UTF-8 without '?', '#' or '%' (it goes into \
                     sqlite:// URLs in the maps)"
                ));
            }
            match std::fs::read_dir(&abs) {
                Ok(mut entries) => {
                    if entries.next().is_some() {
                        problems.push(format!(
                            "--dir {shown}: exists and is not empty; give a new or empty \
                             directory (the demo writes its shards and catalog there)"
                        ));
                    }
                    Target::Empty(abs)
                }
                Err(_) if abs.exists() => {
                    problems.push(format!("--dir {shown}: exists and is not a directory"));
                    Target::Empty(abs)
                }
                Err(_) => Target::New(abs),
            }
        }
    };
    if problems.is_empty() {
        Ok(target)
    } else {
        Err(InputError::many(problems))
    }
}

pub fn run(opts: DemoOptions) -> i32 {
    let target = match validate(&opts) {
        Ok(t) => t,
        Err(e) => return super::report(e.into()),
    };
    super::block_on(demo(opts, target))
}

fn temp_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir();
    for _ in 0..10 {
        let d = base.join(format!(
            "reshard-demo-{:08x}",
            crate::job::random_u64() as u32
        ));
        match std::fs::create_dir(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("creating a directory in {}", base.display()))
            }
        }
    }
    anyhow::bail!("could not create a fresh directory in {}", base.display())
}

async fn demo(opts: DemoOptions, target: Target) -> Result<()> {
    let (dir, created) = match target {
        Target::Empty(d) => (d, false),
        Target::New(d) => {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            (d, true)
        }
        Target::Temp => (temp_dir()?, true),
    };
    if !demo::url_safe_path(&dir) {
        anyhow::bail!(
            "{}: the temporary directory's path cannot go into a sqlite:// URL; give --dir",
            dir.display()
        );
    }
    let layout = Layout { dir };
    println!("reshard demo: a fifth shard joins a four-shard ring, online, under a live writer");
    println!(
        "  files in {} ({})",
        layout.dir.display(),
        if opts.keep {
            "kept at the end"
        } else {
            "removed at the end unless --keep"
        }
    );
    let outcome = Demo::new(layout.clone(), opts.rows).run().await;
    let passed = matches!(outcome, Ok(true));
    if opts.keep || !passed {
        print_kept(&layout, passed);
    } else if let Err(e) = remove_files(&layout.dir, created) {
        eprintln!("reshard: removing {}: {e:#}", layout.dir.display());
    }
    match outcome {
        Ok(true) => Ok(()),
        Ok(false) => Err(Stop::Mismatch(
            "the demo's checks failed (see above); its files are kept".into(),
        )
        .into()),
        Err(e) => Err(e),
    }
}

fn remove_files(dir: &Path, created: bool) -> std::io::Result<()> {
    if created {
        return std::fs::remove_dir_all(dir);
    }
    // The directory was empty before: everything in it is the demo's.
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

fn print_kept(layout: &Layout, passed: bool) {
    let cat = layout.catalog_url();
    let results: serde_json::Value = std::fs::read_to_string(layout.dir.join("demo.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let job = results["job"].as_str().unwrap_or("JOB");
    let expect = |t: &str| match results["expected_rows"][t].as_u64() {
        Some(n) => format!("{t}={n}"),
        None => format!("{t}=N"),
    };
    println!(
        "\nfiles kept in {}{}:",
        layout.dir.display(),
        if passed { "" } else { " for inspection" }
    );
    println!("  s0.db .. s4.db (shards), catalog.db, old.json, new.json, plan.json, demo.json");
    println!("  reshard jobs --catalog {cat}");
    println!("  reshard status {job} --catalog {cat}");
    println!("  reshard route 1 2 3 --catalog {cat}");
    println!("  reshard verify {job} --audit --catalog {cat} \\");
    println!(
        "    --expect-rows {} --expect-rows {}",
        expect("users"),
        expect(POSTS.name)
    );
}

/// `println!` of one numbered step, with the time since the previous one.
struct Steps {
    n: usize,
    at: Instant,
}

impl Steps {
    fn step(&mut self, what: &str) {
        self.n += 1;
        println!("\n[{}/{STEPS}] {what}", self.n);
        self.at = Instant::now();
    }

    fn took(&self) -> String {
        format!("{:.1} s", self.at.elapsed().as_secs_f64())
    }
}

struct Demo {
    layout: Layout,
    rows: u64,
    steps: Steps,
    started: Instant,
}

/// What the writer and the checks found, written to `demo.json`.
struct Findings {
    job: String,
    tally: Tally,
    check: CheckReport,
    expected: Option<(u64, u64)>,
    verified: Vec<MoveReport>,
    audit: AuditReport,
    fences: Vec<(String, String, String, Option<u64>)>,
}

impl Demo {
    fn new(layout: Layout, rows: u64) -> Demo {
        Demo {
            layout,
            rows,
            steps: Steps {
                n: 0,
                at: Instant::now(),
            },
            started: Instant::now(),
        }
    }

    /// Runs every step; Ok(passed) once the checks ran, Err when a step could not.
    async fn run(mut self) -> Result<bool> {
        let (users, posts) = demo::split_rows(self.rows);
        self.steps.step(&format!(
            "cluster: {} SQLite shards on a sha1 ring, {} rows ({} users, {} posts)",
            OLD_SHARDS.len(),
            HumanCount(self.rows),
            HumanCount(users),
            HumanCount(posts)
        ));
        let (old, new) = demo::write_maps(&self.layout)?;
        let before = demo::create_cluster(&self.layout, &old, self.rows).await?;
        println!("  generated in {}; {NEW_SHARD} is empty", self.steps.took());

        let catalog_url = self.layout.catalog_url();
        workload::init_routing(&catalog_url, &old).await?;
        let router = Arc::new(Router::connect_with(&catalog_url, RouterOptions::default()).await?);
        let hi = users as i64 + (users as i64 / 50).max(10);
        let lo = (hi - HOT_USERS as i64 + 1).max(1);
        self.steps.step(&format!(
            "writer: 4 tasks via reshard::Router, {WRITES_PER_SECOND} writes/s to users {}..{} \
             and their posts",
            HumanCount(lo as u64),
            HumanCount(hi as u64)
        ));
        let snapshot = workload::snapshot(&router, POSTS).await?;
        println!(
            "  every row read first ({}), for the final check to compare with",
            self.steps.took()
        );
        println!("  upserts and deletes, each its own transaction at the owner the router names;");
        println!("  ids above {} are new users", HumanCount(users));
        let writer = workload::start(
            router.clone(),
            WorkloadConfig {
                users: lo..=hi,
                child: POSTS,
                child_rows_per_user: demo::POSTS_PER_USER as i64,
                tasks: 4,
                rate: WRITES_PER_SECOND,
                max_writes: None,
                seed: crate::job::random_u64(),
                give_up_after: Duration::from_secs(30),
            },
        );
        wait_for_writes(&writer, WRITES_BEFORE).await;

        self.steps
            .step("plan: the ring gains s4 (old.json -> new.json, saved as plan.json)");
        let plan = planner::plan_labeled(
            &old,
            "old.json",
            &new,
            "new.json",
            &PlannerOptions::default(),
        )?;
        crate::atomic::write(&self.layout.plan_path(), &plan.to_json())
            .with_context(|| format!("writing {}", self.layout.plan_path().display()))?;
        print!("{}", indent(&planner::render(&plan), 2));

        self.steps.step(
            "apply, online: capture, copy, catch up, then per move fence, drain, compare, flip",
        );
        let stop = crate::signals::install().context("installing signal handlers")?;
        let job = start_job(plan.clone(), &apply_options(&catalog_url)).await?;
        let catalog = Arc::new(Catalog::open_rw(&catalog_url).await?);
        let mut fences = Vec::new();
        println!(
            "  {:<5} {:<12} {:>12} {:>10}",
            "move", "from -> to", "rows copied", "fence"
        );
        for m in catalog.moves(&job).await? {
            println!(
                "  {:<5} {:<12} {:>12} {:>10}",
                m.id,
                format!("{} -> {}", m.source, m.destination),
                HumanCount(m.rows_copied).to_string(),
                m.fence_ms.map_or("-".into(), |f| format!("{f} ms"))
            );
            fences.push((m.id, m.source, m.destination, m.fence_ms));
        }
        println!(
            "  every move flipped in {}; the job is in dual write (new owners authoritative)",
            self.steps.took()
        );
        let n = writer.acknowledged();
        wait_for_writes(&writer, n + WRITES_IN_DUAL_WRITE).await;
        // A write the fence keeps refusing is retried without end; do not wait for it forever.
        let tally = tokio::time::timeout(Duration::from_secs(60), writer.stop())
            .await
            .map_err(|_| anyhow::anyhow!("the writer did not stop within 60 s"))??;
        interrupted(&stop, &job, &catalog_url)?;

        self.steps.step(
            "verify: chunked sha1 of every move, old owner against new owner (writer stopped)",
        );
        let settled = settle_verify_complete(&plan, &catalog, &job, &stop).await?;
        let verified = settled.reports;
        for r in &verified {
            let tables: Vec<String> = r
                .tables
                .iter()
                .map(|t| format!("{} {}", t.table, HumanCount(t.rows_source)))
                .collect();
            let chunks: u64 = r.tables.iter().map(|t| t.chunks).sum();
            println!(
                "  {} {} -> {}: {} rows in {chunks} chunks: {}",
                r.move_id,
                r.source,
                r.destination,
                tables.join(" + "),
                if r.ok { "match" } else { "MISMATCH" }
            );
            if !r.ok {
                print!("{}", indent(&r.render_text(), 4));
            }
        }
        println!(
            "  verified in {:.1} s, after draining reverse sync",
            settled.verify_secs
        );
        self.steps
            .step("complete: moved rows deleted from old owners, capture removed");
        let Some(version) = settled.version else {
            println!(
                "  not completed: verification found differences (the job stays in dual write)"
            );
            println!("\nFAILED: verification");
            return Ok(false);
        };
        println!(
            "  routing version {version} is the new map; completed in {:.1} s",
            settled.complete_secs
        );
        interrupted(&stop, &job, &catalog_url)?;

        self.steps.step("check: every shard read directly");
        if crate::failpoint::triggered("demo_damage") {
            if let Some(id) = demo::misplace_one_user(&self.layout, "s0", "s1").await? {
                eprintln!("reshard: failpoint demo_damage: moved users(id={id}) from s0 to s1");
            }
        }
        let check = workload::check(&router, &snapshot, &tally, true).await?;
        router.close().await;
        let expected = expected_rows(&snapshot, &tally);
        let mut expect = std::collections::BTreeMap::new();
        if let Some((u, p)) = expected {
            expect.insert("users".to_string(), u);
            expect.insert(POSTS.name.to_string(), p);
        }
        let recorded = catalog.row_counts(&job).await?;
        let audit = verify::audit::audit(&job, &plan, &recorded, &expect, 10).await?;
        catalog
            .verify_save_report(&job, None, audit.ok, &serde_json::to_string(&audit)?)
            .await?;
        let after = demo::count_rows(&self.layout).await?;
        println!("  checker, audit and counts took {}", self.steps.took());
        print_balance(&before, &after);
        let findings = Findings {
            job,
            tally,
            check,
            expected,
            verified,
            audit,
            fences,
        };
        let passed = findings.print();
        findings.save(&self.layout, self.rows, passed)?;
        catalog.close().await;
        let secs = self.started.elapsed().as_secs_f64();
        if passed {
            println!("\nPASSED in {secs:.1} s: lost 0, every move verified, audit clean");
        } else {
            println!("\nFAILED after {secs:.1} s (see above)");
        }
        Ok(passed)
    }
}

fn apply_options(catalog_url: &str) -> ApplyOptions {
    ApplyOptions {
        no_wait: false,
        plan: PathBuf::from("plan.json"),
        catalog: catalog_url.to_string(),
        dry_run: false,
        format: Format::Text,
        batch_size: 1000,
        parallel: 2,
        progress: ProgressMode::Auto,
        yes: true,
        create_tables: false,
        allow_existing: false,
        max_fence: "2s".into(),
        switch_manual: false,
        complete: false,
        lock_timeout: crate::lockwait::DEFAULT_TIMEOUT,
        max_rows_per_sec: None,
        max_load: None,
        max_lag: "5s".into(),
        batch_time: "500ms".into(),
        read_from_replica: false,
    }
}

/// Waits for the writer, but not forever: a writer stuck behind errors shows in its tally.
async fn wait_for_writes(writer: &workload::Running, n: u64) {
    let _ = tokio::time::timeout(Duration::from_secs(20), writer.wait_for(n)).await;
}

fn interrupted(stop: &StopFlag, job: &str, catalog_url: &str) -> Result<()> {
    if stop.requested() {
        return Err(Stop::Interrupted {
            resume: format!("reshard complete {job} --catalog {catalog_url}"),
        }
        .into());
    }
    Ok(())
}

fn indent(text: &str, by: usize) -> String {
    text.lines()
        .map(|l| match l {
            "" => "\n".to_string(),
            _ => format!("{:by$}{l}\n", ""),
        })
        .collect()
}

/// What [`settle_verify_complete`] did.
struct Settled {
    reports: Vec<MoveReport>,
    verify_secs: f64,
    /// The routing version completion published; None when a move did not verify.
    version: Option<i64>,
    complete_secs: f64,
}

/// Under the job's lease: reverse sync drained (the new owners' last writes reach the old
/// owners, so both ends hold the same rows), every move verified in full, and, when all match,
/// the job completed.
async fn settle_verify_complete(
    plan: &Plan,
    catalog: &Arc<Catalog>,
    job: &str,
    stop: &StopFlag,
) -> Result<Settled> {
    let (mut ctx, mut problems) = crate::preflight::connect(plan).await;
    problems.extend(crate::preflight::describe_all(&mut ctx).await);
    if !problems.is_empty() {
        anyhow::bail!(
            "job {job} cannot continue:\n  - {}",
            problems.join("\n  - ")
        );
    }
    let lease = Lease::acquire(catalog, job, Some(stop.clone())).await?;
    let result = async {
        let mut online = Online::new(&ctx, catalog, job).await?;
        online.load_logs().await?;
        online.reconcile().await?;
        for (shard, _) in online.shards() {
            online.drain(&shard, false).await?;
        }
        let v = Verifier {
            ctx: &ctx,
            catalog,
            job,
            options: verify::Options::default(),
            stop: Some(stop),
            progress: None,
            paced: false,
        };
        let started = Instant::now();
        let mut reports = Vec::new();
        for m in &plan.moves {
            reports.push(
                verify::verify_move(&v, m, Scope::Full)
                    .await
                    .with_context(|| format!("verifying move {}", m.id))?,
            );
        }
        let verify_secs = started.elapsed().as_secs_f64();
        if !reports.iter().all(|r| r.ok) {
            return Ok(Settled {
                reports,
                verify_secs,
                version: None,
                complete_secs: 0.0,
            });
        }
        let started = Instant::now();
        // Every move was verified just above, with the writer stopped.
        let version = online.complete(false).await?;
        Ok(Settled {
            reports,
            verify_secs,
            version: Some(version),
            complete_secs: started.elapsed().as_secs_f64(),
        })
    }
    .await;
    lease.release().await;
    result
}

/// Rows per table the shards must hold after the writer: the snapshot with every acknowledged
/// write applied. None when a write was given up on (its outcome is unknown).
fn expected_rows(before: &Snapshot, tally: &Tally) -> Option<(u64, u64)> {
    let (mut users, mut posts) = (0u64, 0u64);
    let mut count = |pk: &Pk| match pk {
        Pk::User(_) => users += 1,
        Pk::Child(..) => posts += 1,
    };
    for pk in before.rows.keys() {
        if !tally.last.contains_key(pk) {
            count(pk);
        }
    }
    for (pk, last) in &tally.last {
        match last {
            Last::Row(_) => count(pk),
            Last::Deleted => {}
            Last::Unknown => return None,
        }
    }
    Some((users, posts))
}

fn print_balance(before: &Counts, after: &Counts) {
    let total = |c: &Counts| c.values().map(|(u, p)| u + p).sum::<u64>().max(1);
    let (tb, ta) = (total(before), total(after));
    println!(
        "  {:<8} {:>22} {:>22}",
        "shard", "rows before (share)", "rows after (share)"
    );
    let cell = |c: Option<&(u64, u64)>, t: u64| match c {
        Some((u, p)) if u + p > 0 => format!(
            "{} ({:.1}%)",
            HumanCount(u + p),
            (u + p) as f64 * 100.0 / t as f64
        ),
        _ => "-".into(),
    };
    for shard in after.keys() {
        println!(
            "  {shard:<8} {:>22} {:>22}",
            cell(before.get(shard), tb),
            cell(after.get(shard), ta)
        );
    }
    println!(
        "  {:<8} {:>22} {:>22}",
        "total",
        HumanCount(tb).to_string(),
        HumanCount(ta).to_string()
    );
}

impl Findings {
    /// Prints the tally and the checks; returns whether all passed.
    fn print(&self) -> bool {
        let t = &self.tally;
        println!(
            "  writer: {} writes acknowledged ({} upserts, {} deletes), {} given up",
            HumanCount(t.acknowledged),
            HumanCount(t.upserts),
            HumanCount(t.deletes),
            HumanCount(t.failed)
        );
        println!(
            "          {} refused by a fence and retried after a routing refresh; {} other \
             errors retried",
            HumanCount(t.refused_retried),
            HumanCount(t.errors_retried)
        );
        for e in &t.error_samples {
            println!("          error: {e}");
        }
        let c = &self.check;
        println!(
            "  lost: {} (checked {} keys on the shards: {} resurrected, {} stray, {} untouched \
             changed)",
            c.lost,
            HumanCount(c.keys_checked),
            c.resurrected,
            c.stray,
            c.untouched_changed + c.unexpected
        );
        for p in &c.problems {
            println!("    {p}");
        }
        for a in &self.audit.tables {
            let expected = match (a.expected_rows, self.expected.is_some()) {
                (Some(n), true) => format!("the writer's tally expects {}", HumanCount(n)),
                (Some(n), false) => format!("{} recorded at job start", HumanCount(n)),
                (None, _) => "no expected count".into(),
            };
            println!(
                "  audit {}: {} rows ({expected}{}), {} misplaced under the new map",
                a.table,
                HumanCount(a.rows),
                if a.expected_rows.is_some_and(|n| n != a.rows) {
                    ": MISMATCH"
                } else {
                    ""
                },
                a.misplaced_rows
            );
            for m in &a.misplaced {
                println!(
                    "    key {} ({} rows) at {}, owner {}",
                    m.key, m.rows, m.shard, m.owner
                );
            }
        }
        c.ok() && t.failed == 0 && self.audit.ok
    }

    fn save(&self, layout: &Layout, rows: u64, passed: bool) -> Result<()> {
        let t = &self.tally;
        let c = &self.check;
        let v = json!({
            "job": self.job,
            "passed": passed,
            "rows": rows,
            "catalog": layout.catalog_url(),
            "expected_rows": self.expected.map(|(u, p)| json!({"users": u, POSTS.name: p})),
            "writer": {
                "acknowledged": t.acknowledged, "upserts": t.upserts, "deletes": t.deletes,
                "refused_retried": t.refused_retried,
                "errors_retried": t.errors_retried, "failed": t.failed,
            },
            "check": {
                "keys_checked": c.keys_checked, "lost": c.lost, "resurrected": c.resurrected,
                "stray": c.stray, "untouched_changed": c.untouched_changed,
                "unexpected": c.unexpected, "unknown": c.unknown,
            },
            "verified": self.verified.iter().map(|r| json!({"move": r.move_id, "ok": r.ok}))
                .collect::<Vec<_>>(),
            "audit_ok": self.audit.ok,
            "fences": self.fences.iter().map(|(id, s, d, ms)| json!({
                "move": id, "source": s, "destination": d, "fence_ms": ms,
            })).collect::<Vec<_>>(),
        });
        let path = layout.dir.join("demo.json");
        crate::atomic::write(&path, &(serde_json::to_string_pretty(&v)? + "\n"))
            .with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(rows: u64, dir: Option<PathBuf>) -> DemoOptions {
        DemoOptions {
            dir,
            rows,
            keep: false,
        }
    }

    #[test]
    fn bad_input_is_refused_before_anything_is_written() {
        let e = validate(&opts(0, None)).unwrap_err();
        assert!(e.problems[0].starts_with("--rows"), "{e}");
        assert!(validate(&opts(MAX_ROWS + 1, None)).is_err());
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("x"), "").unwrap();
        let e = validate(&opts(10, Some(d.path().to_path_buf()))).unwrap_err();
        assert!(e.problems[0].contains("not empty"), "{e}");
        let e = validate(&opts(0, Some(d.path().join("x")))).unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
        assert!(matches!(
            validate(&opts(10, Some(d.path().join("new")))),
            Ok(Target::New(_))
        ));
        assert!(!d.path().join("new").exists());
    }

    #[test]
    fn expected_rows_apply_the_tally_to_the_snapshot() {
        use crate::workload::RowVal;
        let user = |n: &str| RowVal::User {
            name: n.into(),
            score: None,
        };
        let mut before = Snapshot {
            rows: Default::default(),
            child: POSTS,
        };
        before.rows.insert(Pk::User(1), user("a"));
        before.rows.insert(Pk::User(2), user("b"));
        before
            .rows
            .insert(Pk::Child(1, 1), RowVal::Child { text: None });
        let mut tally = Tally::default();
        tally.last.insert(Pk::User(2), Last::Deleted);
        tally.last.insert(Pk::User(3), Last::Row(user("c")));
        tally
            .last
            .insert(Pk::Child(3, 1), Last::Row(RowVal::Child { text: None }));
        assert_eq!(expected_rows(&before, &tally), Some((2, 2)));
        tally.last.insert(Pk::User(4), Last::Unknown);
        assert_eq!(expected_rows(&before, &tally), None);
    }
}
