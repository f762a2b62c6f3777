//! A writer workload that follows the writer contract (docs/writer-contract.md), and the checker
//! that proves no acknowledged write was lost. The online tests and `reshard demo` run it
//! during a job; it is library code so that both can.
//!
//! The schema is `users (id PK, name, score)` sharded by `id`, and a second table of rows per
//! user sharded by `user_id` ([`ChildTable`]: `orders (user_id, order_id, note)` in the tests,
//! `posts (user_id, post_id, body)` in the demo; [`table_ddl`]). Several tokio tasks upsert and delete rows of user ids from a configured
//! range (ids that exist are updated, new ids inserted), each write in its own transaction at
//! the owner shard the [`Router`] names. A write refused by the fence is retried after a
//! reload; any other error is retried with backoff until `give_up_after`, then counted failed.
//! Each task owns the user ids congruent to its index, so the last acknowledged state of every
//! primary key is known exactly: that is the [`Tally`] the checker ([`check()`]) compares the
//! shards with.

mod check;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use crate::ident::Dialect;
use crate::map::{Key, Map};
use crate::router::{Router, ShardTx};

pub use check::{check, snapshot, CheckReport, Snapshot};

/// The workload's second table: rows per user, sharded by `user_id`, primary key
/// `(user_id, id)` and one text column. Names are constants of the program, never input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildTable {
    pub name: &'static str,
    pub id: &'static str,
    pub text: &'static str,
}

/// The tests' second table.
pub const ORDERS: ChildTable = ChildTable {
    name: "orders",
    id: "order_id",
    text: "note",
};

/// The demo's second table.
pub const POSTS: ChildTable = ChildTable {
    name: "posts",
    id: "post_id",
    text: "body",
};

/// A primary key of one of the workload's tables: a user, or a row of the [`ChildTable`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pk {
    User(i64),
    Child(i64, i64),
}

impl Pk {
    /// The shard key: the user id.
    pub fn key(&self) -> Key {
        match self {
            Pk::User(id) | Pk::Child(id, _) => Key::Int(*id),
        }
    }

    /// The row's identity for messages, such as `posts(user_id=5, post_id=2)`.
    pub fn describe(&self, child: &ChildTable) -> String {
        match self {
            Pk::User(id) => format!("users(id={id})"),
            Pk::Child(u, c) => format!("{}(user_id={u}, {}={c})", child.name, child.id),
        }
    }
}

/// The non-key columns of a row; floats as bits so equality is exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowVal {
    User { name: String, score: Option<u64> },
    Child { text: Option<String> },
}

/// The last acknowledged state of a primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Last {
    Row(RowVal),
    Deleted,
    /// A write that was given up on: it may or may not have been applied.
    Unknown,
}

#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// User ids written to (ids already in the tables are updated, others inserted).
    pub users: RangeInclusive<i64>,
    /// The second table written to.
    pub child: ChildTable,
    /// Its ids 1..=this are written for each user.
    pub child_rows_per_user: i64,
    pub tasks: usize,
    /// Total writes per second over all tasks; 0 for as fast as the shards answer.
    pub rate: f64,
    /// Stop after this many acknowledged writes (None: until `stop`).
    pub max_writes: Option<u64>,
    pub seed: u64,
    /// A write still failing after this long is counted failed and its key's state unknown.
    pub give_up_after: Duration,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            users: 1..=100,
            child: ORDERS,
            child_rows_per_user: 3,
            tasks: 4,
            rate: 300.0,
            max_writes: None,
            seed: 1,
            give_up_after: Duration::from_secs(60),
        }
    }
}

/// The CREATE TABLE statements of the workload's schema.
pub fn table_ddl(d: Dialect, child: &ChildTable) -> Vec<String> {
    let (users, [int, id_int, text]) = match d {
        Dialect::Sqlite => (
            "CREATE TABLE users (id INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, score REAL)",
            ["INTEGER", "INTEGER", "TEXT"],
        ),
        Dialect::Postgres => (
            "CREATE TABLE users (id bigint NOT NULL PRIMARY KEY, name text NOT NULL, \
             score double precision)",
            ["bigint", "integer", "varchar(64)"],
        ),
        Dialect::Mysql => (
            "CREATE TABLE users (id bigint NOT NULL PRIMARY KEY, name varchar(64) NOT NULL, \
             score double)",
            ["bigint", "int", "varchar(64)"],
        ),
    };
    let ChildTable {
        name,
        id,
        text: text_col,
    } = child;
    vec![
        users.to_string(),
        format!(
            "CREATE TABLE {name} (user_id {int} NOT NULL, {id} {id_int} NOT NULL, \
             {text_col} {text}, PRIMARY KEY (user_id, {id}))"
        ),
    ]
}

/// For tests and the demo: records `map` as routing version 1 of a new catalog (creating and
/// migrating it), so that a [`Router`] can run before the first `apply`. An existing routing
/// must be the same map.
pub async fn init_routing(catalog_url: &str, map: &Map) -> Result<()> {
    let cat = crate::catalog::Catalog::open_rw(catalog_url).await?;
    let res = cat.init_routing(map).await;
    cat.close().await;
    res
}

// ---------------------------------------------------------------------------------------------
// Writing

#[derive(Debug, Clone)]
enum Op {
    UpsertUser { id: i64, name: String, score: f64 },
    DeleteUser { id: i64 },
    UpsertChild { user: i64, id: i64, text: String },
    DeleteChild { user: i64, id: i64 },
}

impl Op {
    fn pk(&self) -> Pk {
        match self {
            Op::UpsertUser { id, .. } | Op::DeleteUser { id } => Pk::User(*id),
            Op::UpsertChild { user, id, .. } | Op::DeleteChild { user, id } => {
                Pk::Child(*user, *id)
            }
        }
    }

    fn result(&self) -> Last {
        match self {
            Op::UpsertUser { name, score, .. } => Last::Row(RowVal::User {
                name: name.clone(),
                score: Some(score.to_bits()),
            }),
            Op::UpsertChild { text, .. } => Last::Row(RowVal::Child {
                text: Some(text.clone()),
            }),
            Op::DeleteUser { .. } | Op::DeleteChild { .. } => Last::Deleted,
        }
    }

    fn is_delete(&self) -> bool {
        matches!(self, Op::DeleteUser { .. } | Op::DeleteChild { .. })
    }

    /// The statement in the dialect's placeholder style. Upserts make every retry idempotent,
    /// so a write whose acknowledgement was lost can simply be repeated.
    fn sql(&self, d: Dialect, child: &ChildTable) -> String {
        let my = d == Dialect::Mysql;
        let ChildTable { name, id, text } = child;
        match (self, my) {
            (Op::UpsertUser { .. }, false) => {
                "INSERT INTO users (id, name, score) VALUES ($1, $2, $3) ON CONFLICT (id) \
                 DO UPDATE SET name = excluded.name, score = excluded.score"
                    .into()
            }
            (Op::UpsertUser { .. }, true) => {
                "INSERT INTO users (id, name, score) VALUES (?, ?, ?) \
                 ON DUPLICATE KEY UPDATE name = VALUES(name), score = VALUES(score)"
                    .into()
            }
            (Op::DeleteUser { .. }, false) => "DELETE FROM users WHERE id = $1".into(),
            (Op::DeleteUser { .. }, true) => "DELETE FROM users WHERE id = ?".into(),
            (Op::UpsertChild { .. }, false) => format!(
                "INSERT INTO {name} (user_id, {id}, {text}) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id, {id}) DO UPDATE SET {text} = excluded.{text}"
            ),
            (Op::UpsertChild { .. }, true) => format!(
                "INSERT INTO {name} (user_id, {id}, {text}) VALUES (?, ?, ?) \
                 ON DUPLICATE KEY UPDATE {text} = VALUES({text})"
            ),
            (Op::DeleteChild { .. }, false) => {
                format!("DELETE FROM {name} WHERE user_id = $1 AND {id} = $2")
            }
            (Op::DeleteChild { .. }, true) => {
                format!("DELETE FROM {name} WHERE user_id = ? AND {id} = ?")
            }
        }
    }
}

macro_rules! bind_op {
    ($op:expr, $sql:expr) => {{
        let q = sqlx::query($sql);
        match $op {
            Op::UpsertUser { id, name, score } => q.bind(*id).bind(name.clone()).bind(*score),
            Op::DeleteUser { id } => q.bind(*id),
            Op::UpsertChild { user, id, text } => q.bind(*user).bind(*id as i32).bind(text.clone()),
            Op::DeleteChild { user, id } => q.bind(*user).bind(*id as i32),
        }
    }};
}

enum Outcome {
    Acknowledged,
    /// The fence refused the write: routing is reloaded before the retry.
    Fenced,
    Failed(anyhow::Error),
}

fn classify(router: &Router, e: sqlx::Error) -> Outcome {
    if router.note_error(&e) {
        Outcome::Fenced
    } else {
        Outcome::Failed(e.into())
    }
}

/// One attempt: the write in its own transaction at the owner, begun with ownership asserted
/// (`Router::begin`), so that even a stale statement matching no row is refused.
async fn attempt(router: &Router, op: &Op, child: &ChildTable) -> Outcome {
    let tx = match router.begin(&op.pk().key()).await {
        Ok((_, tx)) => tx,
        // begin has noted a fence error already: the next route reloads.
        Err(e) if crate::router::is_fence_error_any(&e) => return Outcome::Fenced,
        Err(e) => return Outcome::Failed(e),
    };
    let sql = op.sql(tx.dialect(), child);
    let sql = sql.as_str();
    macro_rules! run {
        ($tx:expr) => {{
            let mut tx = $tx;
            if let Err(e) = bind_op!(op, sql).execute(&mut *tx).await {
                return classify(router, e);
            }
            match tx.commit().await {
                Ok(()) => Outcome::Acknowledged,
                Err(e) => classify(router, e),
            }
        }};
    }
    match tx {
        ShardTx::Postgres(t) => run!(t),
        ShardTx::Mysql(t) => run!(t),
        ShardTx::Sqlite(t) => run!(t),
    }
}

/// Live counters, readable while the workload runs.
#[derive(Debug, Default)]
pub struct Counters {
    pub acknowledged: AtomicU64,
    pub refused_retried: AtomicU64,
    pub errors_retried: AtomicU64,
    pub failed: AtomicU64,
}

/// What the writer did, and the last acknowledged state of every primary key it wrote.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub acknowledged: u64,
    pub upserts: u64,
    pub deletes: u64,
    /// Writes refused by the fence, then retried after a routing reload.
    pub refused_retried: u64,
    /// Other errors, retried with backoff.
    pub errors_retried: u64,
    /// Writes given up on after `give_up_after`.
    pub failed: u64,
    /// The first few errors, for diagnosis.
    pub error_samples: Vec<String>,
    pub last: BTreeMap<Pk, Last>,
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} writes acknowledged ({} upserts, {} deletes), {} refused by the fence and retried, \
             {} other errors retried, {} failed",
            self.acknowledged,
            self.upserts,
            self.deletes,
            self.refused_retried,
            self.errors_retried,
            self.failed
        )?;
        for e in &self.error_samples {
            write!(f, "\n  error: {e}")?;
        }
        Ok(())
    }
}

/// splitmix64: a deterministic stream from the seed, with no dependency (the workload's
/// operations, and tests that want reproducible data).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

struct Shared {
    router: Arc<Router>,
    cfg: WorkloadConfig,
    stop: AtomicBool,
    counters: Counters,
}

async fn task_loop(sh: Arc<Shared>, index: usize) -> Tally {
    let cfg = &sh.cfg;
    let tasks = cfg.tasks.max(1) as i64;
    let mine: Vec<i64> = cfg
        .users
        .clone()
        .filter(|u| u.rem_euclid(tasks) == index as i64)
        .collect();
    let mut tally = Tally::default();
    if mine.is_empty() {
        return tally;
    }
    let mut rng = Rng(cfg.seed ^ ((index as u64 + 1) << 32));
    let mut pace = (cfg.rate > 0.0).then(|| {
        let mut i = tokio::time::interval(Duration::from_secs_f64(tasks as f64 / cfg.rate));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut n = 0u64;
    loop {
        if sh.stop.load(Ordering::Acquire) {
            break;
        }
        if let Some(max) = cfg.max_writes {
            if sh.counters.acknowledged.load(Ordering::Acquire) >= max {
                break;
            }
        }
        if let Some(p) = pace.as_mut() {
            p.tick().await;
        }
        n += 1;
        let user = mine[rng.below(mine.len() as u64) as usize];
        let child_id = 1 + rng.below(cfg.child_rows_per_user.max(1) as u64) as i64;
        let token = format!("w{index}-{n}");
        let op = match rng.below(100) {
            0..=39 => Op::UpsertUser {
                id: user,
                name: token,
                score: n as f64 + 0.5,
            },
            40..=54 => Op::DeleteUser { id: user },
            55..=89 => Op::UpsertChild {
                user,
                id: child_id,
                text: token,
            },
            _ => Op::DeleteChild { user, id: child_id },
        };
        write_until_done(&sh, &op, &mut tally).await;
    }
    tally
}

async fn write_until_done(sh: &Shared, op: &Op, tally: &mut Tally) {
    let started = Instant::now();
    let mut fence_wait = Duration::from_millis(5);
    let mut error_wait = Duration::from_millis(20);
    loop {
        match attempt(&sh.router, op, &sh.cfg.child).await {
            Outcome::Acknowledged => {
                tally.acknowledged += 1;
                if op.is_delete() {
                    tally.deletes += 1;
                } else {
                    tally.upserts += 1;
                }
                tally.last.insert(op.pk(), op.result());
                sh.counters.acknowledged.fetch_add(1, Ordering::AcqRel);
                return;
            }
            Outcome::Fenced => {
                // A refused write did not happen, so when asked to stop the writer may drop it
                // and claim nothing: a fence left up by a killed reshard (until resume lowers
                // it) must not make stop() wait forever.
                if sh.stop.load(Ordering::Acquire) {
                    return;
                }
                tally.refused_retried += 1;
                sh.counters.refused_retried.fetch_add(1, Ordering::AcqRel);
                // The fence lasts until the flip (bounded by --max-fence): back off gently.
                tokio::time::sleep(fence_wait).await;
                fence_wait = (fence_wait * 2).min(Duration::from_millis(200));
            }
            Outcome::Failed(e) => {
                if tally.error_samples.len() < 5 {
                    tally
                        .error_samples
                        .push(format!("{}: {e:#}", op.pk().describe(&sh.cfg.child)));
                }
                if started.elapsed() >= sh.cfg.give_up_after {
                    tally.failed += 1;
                    sh.counters.failed.fetch_add(1, Ordering::AcqRel);
                    tally.last.insert(op.pk(), Last::Unknown);
                    return;
                }
                tally.errors_retried += 1;
                sh.counters.errors_retried.fetch_add(1, Ordering::AcqRel);
                tokio::time::sleep(error_wait).await;
                error_wait = (error_wait * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// A running workload.
pub struct Running {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
}

/// Starts the writer tasks on the current tokio runtime.
pub fn start(router: Arc<Router>, cfg: WorkloadConfig) -> Running {
    let shared = Arc::new(Shared {
        router,
        stop: AtomicBool::new(false),
        counters: Counters::default(),
        cfg,
    });
    let tasks = (0..shared.cfg.tasks.max(1))
        .map(|i| tokio::spawn(task_loop(shared.clone(), i)))
        .collect();
    Running { shared, tasks }
}

impl Running {
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    pub fn acknowledged(&self) -> u64 {
        self.shared.counters.acknowledged.load(Ordering::Acquire)
    }

    /// Waits until at least `n` writes were acknowledged (or every task has ended).
    pub async fn wait_for(&self, n: u64) {
        while self.acknowledged() < n && self.tasks.iter().any(|t| !t.is_finished()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Lets the tasks finish on their own (`max_writes`) and returns the tally.
    pub async fn finish(self) -> Result<Tally> {
        let mut total = Tally::default();
        for t in self.tasks {
            let part = t
                .await
                .map_err(|e| anyhow!("a writer task panicked: {e}"))?;
            total.acknowledged += part.acknowledged;
            total.upserts += part.upserts;
            total.deletes += part.deletes;
            total.refused_retried += part.refused_retried;
            total.errors_retried += part.errors_retried;
            total.failed += part.failed;
            for e in part.error_samples {
                if total.error_samples.len() < 5 {
                    total.error_samples.push(e);
                }
            }
            // Tasks own disjoint user ids, so their key sets are disjoint.
            total.last.extend(part.last);
        }
        Ok(total)
    }

    /// Stops after each task's write in flight is acknowledged (or given up) and returns the
    /// tally.
    pub async fn stop(self) -> Result<Tally> {
        self.shared.stop.store(true, Ordering::Release);
        self.finish().await
    }
}
