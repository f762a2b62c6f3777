//! Two writer processes with routers of their own, as two application instances: one inserts
//! orders, the other deletes every second one as soon as its insert is acknowledged. They run
//! across `apply`, three rollback / re-cutover cycles and `complete`, with reshard killed -9 at
//! random moments in every phase. Every acknowledged insert that was not deleted is at its
//! key's final owner exactly once, and every acknowledged delete removed its row: before the
//! ownership assertion, a delete whose router was stale matched no row at the old owner and was
//! acknowledged, and the row it meant to delete, inserted at the new owner, stayed.
//!
//! The writers are this test binary run again with `--ignored --exact writer_process`.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{job_id, stderr};
use common::db::Kind;
use common::online::{setup, status, Setup};
use reshard::router::{RouterOptions, ShardTx};
use reshard::{Key, Map, Router};

const ROLE: &str = "RESHARD_TEST_WRITER_ROLE";
const DIR: &str = "RESHARD_TEST_WRITER_DIR";
/// Order ids of the writers start here, above the ones `populate` made.
const FIRST_ORDER: i64 = 100_000;
const USERS: i64 = 90;
/// Kills per phase: reach dual write, each rollback, each re-cutover, complete.
const KILLS_PER_PHASE: usize = 2;

fn xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Runs one statement with two integer binds in the transaction; the rows it affected.
async fn exec2(tx: &mut ShardTx, sql: &str, a: i64, b: i64) -> Result<u64, sqlx::Error> {
    Ok(match tx {
        ShardTx::Postgres(t) => sqlx::query(sql)
            .bind(a)
            .bind(b)
            .execute(&mut **t)
            .await?
            .rows_affected(),
        ShardTx::Mysql(t) => sqlx::query(sql)
            .bind(a)
            .bind(b)
            .execute(&mut **t)
            .await?
            .rows_affected(),
        ShardTx::Sqlite(t) => sqlx::query(sql)
            .bind(a)
            .bind(b)
            .execute(&mut **t)
            .await?
            .rows_affected(),
    })
}

async fn commit(tx: ShardTx) -> Result<(), sqlx::Error> {
    match tx {
        ShardTx::Postgres(t) => t.commit().await,
        ShardTx::Mysql(t) => t.commit().await,
        ShardTx::Sqlite(t) => t.commit().await,
    }
}

fn statement(dialect: reshard::ident::Dialect, insert: bool) -> &'static str {
    use reshard::ident::Dialect::*;
    match (dialect, insert) {
        (Postgres, true) => {
            "INSERT INTO orders (user_id, order_id, note) VALUES ($1, $2, 'w') \
                             ON CONFLICT DO NOTHING"
        }
        (Mysql, true) => {
            "INSERT INTO orders (user_id, order_id, note) VALUES (?, ?, 'w') \
                          ON DUPLICATE KEY UPDATE note = note"
        }
        (Sqlite, true) => {
            "INSERT INTO orders (user_id, order_id, note) VALUES (?, ?, 'w') \
                           ON CONFLICT DO NOTHING"
        }
        (Postgres, false) => "DELETE FROM orders WHERE user_id = $1 AND order_id = $2",
        (_, false) => "DELETE FROM orders WHERE user_id = ? AND order_id = ?",
    }
}

/// One write as the writer contract says: `Router::begin` (ownership asserted), the statement,
/// commit; the fence error and other errors retried with a bounded backoff. Returns the rows
/// the acknowledged attempt affected and whether an earlier attempt failed at commit (its
/// outcome unknown, so a retried delete may find its row already gone).
async fn write(router: &Router, user: i64, order: i64, insert: bool) -> (u64, bool) {
    let key = Key::Int(user);
    let mut ambiguous = false;
    let mut backoff = Duration::from_millis(2);
    for _ in 0..2000 {
        let attempt = async {
            let (_, mut tx) = router.begin(&key).await.map_err(|e| (e, false))?;
            let sql = statement(tx.dialect(), insert);
            let n = exec2(&mut tx, sql, user, order)
                .await
                .map_err(|e| (e.into(), false))?;
            commit(tx).await.map_err(|e| (e.into(), true))?;
            Ok::<u64, (anyhow::Error, bool)>(n)
        };
        match attempt.await {
            Ok(n) => return (n, ambiguous),
            Err((e, at_commit)) => {
                ambiguous |= at_commit;
                router.note_error_any(&e);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(200));
            }
        }
    }
    panic!("user {user} order {order}: no write after 2000 attempts");
}

fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    // One write per line: the other process never reads half a line it will not finish.
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

async fn inserter(router: Router, dir: &Path) {
    let mut seed = reshard::job::random_u64() | 1;
    let mut order = FIRST_ORDER;
    while !dir.join("stop").exists() {
        let user = (xorshift(&mut seed) % USERS as u64) as i64 + 1;
        write(&router, user, order, true).await;
        append(&dir.join("inserted"), &format!("{user} {order}"));
        order += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    append(&dir.join("inserter_done"), "done");
}

async fn deleter(router: Router, dir: &Path) {
    let mut done_lines = 0usize;
    loop {
        let finished = dir.join("inserter_done").exists();
        let text = std::fs::read_to_string(dir.join("inserted")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for line in &lines[done_lines..] {
            let mut it = line.split(' ').map(|v| v.parse::<i64>().unwrap());
            let (user, order) = (it.next().unwrap(), it.next().unwrap());
            if order % 2 == 0 {
                let (n, ambiguous) = write(&router, user, order, false).await;
                append(
                    &dir.join("deleted"),
                    &format!("{user} {order} {n} {}", ambiguous as u8),
                );
            }
        }
        done_lines = lines.len();
        if finished
            && done_lines
                == std::fs::read_to_string(dir.join("inserted"))
                    .unwrap_or_default()
                    .lines()
                    .count()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The writer process (run by `two_writers_*` through this binary; on its own it has nothing
/// to do and says so).
#[test]
#[ignore = "a writer process started by the two_writers tests"]
fn writer_process() {
    let role = std::env::var(ROLE).expect("started by the two_writers tests");
    let dir = PathBuf::from(std::env::var(DIR).unwrap());
    let catalog = std::env::var("RESHARD_CATALOG").unwrap();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            // The deleter's cache may be older: its stale deletes are what the assertion
            // refuses.
            let check_interval = Duration::from_millis(if role == "delete" { 400 } else { 100 });
            let opts = RouterOptions {
                check_interval,
                ..RouterOptions::default()
            };
            let router = Router::connect_with(&catalog, opts).await.unwrap();
            match role.as_str() {
                "insert" => inserter(router, &dir).await,
                _ => deleter(router, &dir).await,
            }
        });
}

fn spawn_writer(s: &Setup, role: &str, dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "writer_process",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(ROLE, role)
        .env(DIR, dir)
        .env("RESHARD_CATALOG", s.c.catalog_url())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn lines(path: &Path) -> Vec<Vec<i64>> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(' ').map(|v| v.parse().unwrap()).collect())
        .collect()
}

/// Runs reshard commands until the job is in `goal`, killing the first `kills` of them -9 at
/// a random moment; the kills made.
struct Driver<'a> {
    s: &'a Setup,
    job: Option<String>,
    seed: u64,
    window_ms: u64,
}

impl Driver<'_> {
    async fn state(&self) -> (String, bool, bool) {
        let Some(j) = &self.job else {
            return (String::new(), false, false);
        };
        let v = status(&self.s.c, j).await;
        let moves = v["moves"].as_array().cloned().unwrap_or_default();
        let any = moves.iter().any(|m| m["flipped"] == true);
        let all = !moves.is_empty() && moves.iter().all(|m| m["flipped"] == true);
        (v["state"].as_str().unwrap_or("").to_string(), any, all)
    }

    async fn reach(&mut self, goal: &str, mut kills: usize) -> usize {
        let mut made = 0;
        for _ in 0..100 {
            let (state, any, all) = self.state().await;
            let args: Vec<String> = match (goal, state.as_str()) {
                ("dual_write", "dual_write") | ("completed", "completed") => return made,
                ("rolled_back", "rolled_back") if !any => return made,
                (_, "") => vec!["apply".into(), self.s.plan.clone(), "--yes".into()],
                ("rolled_back", "dual_write" | "failed" | "rolled_back") if any => {
                    vec!["rollback".into(), self.job.clone().unwrap()]
                }
                ("completed", "dual_write" | "completing") => {
                    vec!["complete".into(), self.job.clone().unwrap()]
                }
                ("completed", "failed") if all => {
                    vec!["complete".into(), self.job.clone().unwrap()]
                }
                _ => vec!["resume".into(), self.job.clone().unwrap()],
            };
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut cmd = self.s.c.cmd(&argv);
            if matches!(argv[0], "apply" | "resume") {
                cmd.args(["--progress", "plain"]);
            }
            let mut child = cmd
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let delay = Duration::from_millis(20 + xorshift(&mut self.seed) % self.window_ms);
            let started = Instant::now();
            while kills > 0 && started.elapsed() < delay && matches!(child.try_wait(), Ok(None)) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let killed = kills > 0 && matches!(child.try_wait(), Ok(None));
            if killed {
                child.kill().unwrap();
                kills -= 1;
                made += 1;
            } else if kills > 0 {
                self.window_ms =
                    ((self.window_ms + started.elapsed().as_millis() as u64) / 2).max(50);
            }
            let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
                .await
                .unwrap();
            if self.job.is_none() {
                self.job = job_id(&out);
            }
            if !killed && !out.status.success() {
                eprintln!("{argv:?} ended with {:?}: {}", out.status, stderr(&out));
            }
        }
        panic!("the job never reached {goal}: {:?}", self.state().await);
    }
}

async fn wait_for(child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read as _;
                e.read_to_string(&mut err).unwrap();
            }
            assert!(st.success(), "{what} failed: {err}");
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn regression_two_writers_stale_delete_acknowledged_across_cycles_and_kills(kind: Kind) {
    let Some(s) = setup(kind, "twp") else { return };
    let map = Map::from_value(&s.from, "from").unwrap();
    reshard::workload::init_routing(&s.c.catalog_url(), &map)
        .await
        .unwrap();
    let count = |t: &str| -> usize {
        ["s0", "s1", "s2"]
            .iter()
            .map(|sh| s.c.dump(sh, t).len())
            .sum()
    };
    let (users, orders) = (count("users"), count("orders"));
    let dir = s.c.dir.path().join("writers");
    std::fs::create_dir_all(&dir).unwrap();
    let mut ins = spawn_writer(&s, "insert", &dir);
    let mut del = spawn_writer(&s, "delete", &dir);
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines(&dir.join("inserted")).len() < 20 {
        assert!(Instant::now() < deadline, "the inserter never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let seed = 0x2545_f491_4f6c_dd1d ^ reshard::job::random_u64();
    eprintln!("two_writers seed {seed:#x}");
    let mut d = Driver {
        s: &s,
        job: None,
        seed,
        window_ms: 600,
    };
    // A command that ends before its random kill leaves that kill to the next phase, so that a
    // fast backend still sees kills in every phase after the first miss.
    let mut kills = 0;
    let mut owed = 0;
    let phases = std::iter::once("dual_write")
        .chain(["rolled_back", "dual_write"].repeat(3))
        .chain(std::iter::once("completed"));
    for goal in phases {
        owed += KILLS_PER_PHASE;
        let made = d.reach(goal, owed).await;
        kills += made;
        owed -= made;
    }
    std::fs::write(dir.join("stop"), "").unwrap();
    wait_for(&mut ins, "the inserter").await;
    wait_for(&mut del, "the deleter").await;
    eprintln!("two_writers {}: {kills} kills", kind.name());
    assert!(kills >= 6, "only {kills} kills");

    let inserted: BTreeSet<(i64, i64)> = lines(&dir.join("inserted"))
        .into_iter()
        .map(|l| (l[0], l[1]))
        .collect();
    let deleted = lines(&dir.join("deleted"));
    for l in &deleted {
        assert!(
            l[2] == 1 || l[3] == 1,
            "the acknowledged delete of user {} order {} matched no row: its row was elsewhere",
            l[0],
            l[1]
        );
    }
    let deleted: BTreeSet<(i64, i64)> = deleted.into_iter().map(|l| (l[0], l[1])).collect();
    assert!(
        deleted.len() * 2 + 2 >= inserted.len(),
        "the deleter kept up"
    );
    // Where each writer row is now, shard by shard.
    let mut found: BTreeMap<(i64, i64), Vec<String>> = BTreeMap::new();
    for shard in ["s0", "s1", "s2"] {
        for row in s.c.dump(shard, "orders") {
            let (u, o): (i64, i64) = (row[0].parse().unwrap(), row[1].parse().unwrap());
            if o >= FIRST_ORDER {
                found.entry((u, o)).or_default().push(shard.to_string());
            }
        }
    }
    let to = reshard::Plan::parse(&std::fs::read_to_string(&s.plan).unwrap(), "plan")
        .unwrap()
        .to
        .compile();
    let mut lost = Vec::new();
    for k in &inserted {
        let want = to.owner(&Key::Int(k.0)).unwrap().to_string();
        let at = found.get(k).cloned().unwrap_or_default();
        let expected = if deleted.contains(k) {
            vec![]
        } else {
            vec![want]
        };
        if at != expected {
            lost.push(format!(
                "user {} order {}: at {at:?}, expected {expected:?}",
                k.0, k.1
            ));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost or misplaced ({} deletes): {:?}",
        lost.len(),
        inserted.len(),
        deleted.len(),
        &lost[..lost.len().min(10)]
    );
    eprintln!(
        "two_writers {}: {} inserts, {} deletes acknowledged, none lost",
        kind.name(),
        inserted.len(),
        deleted.len()
    );
    // Every row on its owner and nowhere else, with the counts the writers' tallies predict
    // (the writers touch only their own orders).
    let job = d.job.clone().unwrap();
    let orders = orders + inserted.len() - deleted.len();
    let out = common::online::audit_expecting(&s.c, &job, users, orders).await;
    assert!(
        out.status.success(),
        "audit: {}{}",
        common::cluster::stdout(&out),
        stderr(&out)
    );
}

per_backend_async!(regression_two_writers_stale_delete_acknowledged_across_cycles_and_kills);
