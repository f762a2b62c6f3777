//! Throttles (issue 15): work that can wait is slowed so that it does not hurt the shards it
//! reads and writes. Two today:
//! - the rate cap, `--max-rows-per-sec`: the rows a job's copy reads at its sources plus the
//!   change-log entries its catch-up and reverse sync apply, summed over every move;
//! - the load limit, `--max-load`: that work waits while a shard the job reads or writes has
//!   more active sessions than that (PostgreSQL: active backends of the shard's database;
//!   MariaDB: `Threads_running`; reshard's own probe not counted);
//! - the lag limit, `--max-lag` (default 5 s): that work waits while a replica (listed in the
//!   map) of a shard the job reads or writes lags more than that (src/lag.rs).
//!
//! A fence never waits on a throttle: the fenced drain of a cutover or rollback is not paced
//! (`capture::Online::drain` with `defer`). Both are set by `apply` (stored in the job's
//! options) and changed while the job runs by `reshard throttle JOB`, which the running process
//! reads within a second ([`Watching`]). Whether the job is being held back, and why, goes to
//! the catalog (`jobs.throttled`, an event at each start and end), so `status` and the metrics
//! show it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::catalog::Catalog;
use crate::ident::Dialect;
use crate::lag::ReplicaSet;
use crate::signals::StopFlag;

/// A wait at most this long does not count as being throttled (scheduling noise).
const NOTICEABLE: Duration = Duration::from_millis(5);
/// How long after its last wait a job still reads as throttled: the pacing waits come between
/// batches, so a capped job waits about once per batch.
const HELD_FOR: Duration = Duration::from_secs(3);
/// How often [`watch`] reads the job's settings and reports the throttle state.
const WATCH_EVERY: Duration = Duration::from_millis(500);
/// The longest single sleep, so that a lifted cap or a stop is seen promptly.
const SLICE: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct Inner {
    rate: Option<u64>,
    /// Why work waits regardless of the rate (a shard over `--max-load`), if it does.
    held: Option<String>,
    /// `--batch-time`, for the copy's adaptive batches.
    batch_time: Option<Duration>,
    /// When the next batch may start; None when nothing is owed.
    next_free: Option<Instant>,
    waited_at: Option<Instant>,
}

/// One job's throttle in this process, shared by every task of the job ([`for_job`]).
#[derive(Debug, Default)]
pub struct Throttle(Mutex<Inner>);

/// When the next batch may start after `rows` were charged at `now`: strict pacing at `rate`
/// rows per second, with no credit saved up while idle (a job that waited for a lock does not
/// then burst).
pub fn charge(next_free: Option<Instant>, now: Instant, rows: u64, rate: u64) -> Instant {
    let from = next_free.map_or(now, |t| t.max(now));
    from + Duration::from_secs_f64(rows as f64 / rate.max(1) as f64)
}

/// The reason a job reads as throttled, from its cap and its last wait.
pub fn reason(rate: Option<u64>, waited_at: Option<Instant>, now: Instant) -> Option<String> {
    let rate = rate?;
    let held = waited_at.is_some_and(|t| now.saturating_duration_since(t) < HELD_FOR);
    held.then(|| format!("rate cap {} rows/s", group_thousands(rate)))
}

fn group_thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Throttle {
    fn get(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing panics while holding it; a poisoned lock still holds whole values.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the cap (None or 0: none). Lifting or raising it ends the waits in progress.
    pub fn set_rate(&self, rate: Option<u64>) {
        let rate = rate.filter(|r| *r > 0);
        let mut g = self.get();
        if rate != g.rate {
            g.next_free = None;
        }
        g.rate = rate;
    }

    pub fn rate(&self) -> Option<u64> {
        self.get().rate
    }

    /// The time per copy batch to size batches toward (None: fixed batches).
    pub fn batch_time(&self) -> Option<Duration> {
        self.get().batch_time
    }

    pub fn set_batch_time(&self, t: Option<Duration>) {
        self.get().batch_time = t;
    }

    /// Holds all paced work while `why` is Some (a shard over the load limit).
    pub fn hold(&self, why: Option<String>) {
        self.get().held = why;
    }

    /// Charges `rows` just read or applied to the job, then waits until the cap lets the next
    /// batch start and no hold is on. Returns at once without either, and early on a stop.
    pub async fn pace(&self, rows: u64, stop: Option<&StopFlag>) {
        {
            let mut g = self.get();
            if let Some(rate) = g.rate {
                g.next_free = Some(charge(g.next_free, Instant::now(), rows, rate));
            }
        }
        loop {
            if stop.is_some_and(StopFlag::requested) || crate::signals::is_hard_stopped() {
                return;
            }
            let now = Instant::now();
            let wait = {
                let mut g = self.get();
                let owed = g.next_free.filter(|t| *t > now).map(|t| t - now);
                let wait = match (&g.held, owed) {
                    (Some(_), owed) => owed.unwrap_or(SLICE).max(SLICE),
                    (None, Some(left)) => left,
                    (None, None) => return,
                };
                if g.held.is_some() || wait > NOTICEABLE {
                    g.waited_at = Some(now);
                }
                wait
            };
            tokio::time::sleep(wait.min(SLICE)).await;
        }
    }

    /// Why the job is being held back now by the rate cap, if it is.
    pub fn reason(&self) -> Option<String> {
        let g = self.get();
        reason(g.rate, g.waited_at, Instant::now())
    }

    fn held(&self) -> Option<String> {
        self.get().held.clone()
    }
}

/// The throttle of `job` in this process: one per job, whichever task asks.
pub fn for_job(job: &str) -> Arc<Throttle> {
    static ALL: OnceLock<Mutex<HashMap<String, Arc<Throttle>>>> = OnceLock::new();
    let mut all = ALL
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    all.entry(job.to_string()).or_default().clone()
}

/// This process's share of a job's cap: the job's processes (its lease holder and the workers
/// copying its moves) each take an equal part, so that together they stay under it.
pub fn share(cap: Option<u64>, processes: usize) -> Option<u64> {
    cap.map(|c| c.div_ceil(processes.max(1) as u64).max(1))
}

/// The live processes working on `job`: its lease holder and its copy tasks' holders.
async fn processes(catalog: &Catalog, job: &str, row: &crate::catalog::JobRow) -> usize {
    let now = crate::catalog::now_ms();
    let mut who: std::collections::BTreeSet<String> = Default::default();
    if let Some(h) =
        crate::catalog::live_lease(row.lease_owner.as_deref(), row.lease_expires_ms, now)
    {
        who.insert(h.to_string());
    }
    if let Ok(tasks) = catalog.tasks(job).await {
        for t in tasks.iter().filter(|t| !t.done()) {
            if let Some(h) = crate::catalog::live_lease(t.owner.as_deref(), t.lease_expires_ms, now)
            {
                who.insert(h.to_string());
            }
        }
    }
    who.len().max(1)
}

/// Keeps `job`'s throttle in step with the catalog while the job runs here: reads the cap from
/// the job's options (changed by `reshard throttle`), takes this process's share of it, and
/// records each start and end of being throttled. Runs until aborted; a catalog hiccup is
/// retried at the next tick. Hold it through a [`Watching`] so that one runs per job.
/// The job's throttle settings, from its stored options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    /// `--max-rows-per-sec`.
    pub max_rows_per_sec: Option<u64>,
    /// `--max-load`.
    pub max_load: Option<u64>,
    /// `--max-lag` in milliseconds (default 5 s; 0: off).
    pub max_lag_ms: Option<u64>,
    /// `--batch-time` in milliseconds (absent or 0: fixed batches, as jobs before it).
    pub batch_time_ms: Option<u64>,
}

/// `--max-lag`'s default, as gh-ost's and the replication guide's healthy-replica bound.
pub const DEFAULT_MAX_LAG: Duration = Duration::from_secs(5);

impl Settings {
    /// Settings as stored in `jobs.options_json` (0 or absent: off).
    pub fn of_options(options_json: &str) -> Settings {
        let o = serde_json::from_str::<serde_json::Value>(options_json).unwrap_or_default();
        let get = |k: &str| o.get(k).and_then(|v| v.as_u64()).filter(|n| *n > 0);
        let max_lag_ms = match o.get("max_lag_ms").and_then(|v| v.as_u64()) {
            None => Some(DEFAULT_MAX_LAG.as_millis() as u64),
            Some(0) => None,
            Some(ms) => Some(ms),
        };
        Settings {
            max_rows_per_sec: get("max_rows_per_sec"),
            max_load: get("max_load"),
            max_lag_ms,
            batch_time_ms: get("batch_time_ms"),
        }
    }
}

/// Reads the job's settings and sets this process's share of its cap: (settings, processes
/// sharing the cap).
async fn settle_rate(catalog: &Catalog, job: &str) -> Option<(Settings, usize)> {
    let row = catalog.job(job).await.ok()??;
    let set = Settings::of_options(&row.options_json);
    let n = if set.max_rows_per_sec.is_some() {
        processes(catalog, job, &row).await
    } else {
        1
    };
    let t = for_job(job);
    t.set_rate(share(set.max_rows_per_sec, n));
    t.set_batch_time(set.batch_time_ms.map(Duration::from_millis));
    Some((set, n))
}

/// What the watcher reads: the shards the job reads or writes, and those of them that have
/// replicas.
pub struct Probe {
    pub shards: Vec<Arc<dyn Backend>>,
    pub replicas: Vec<ReplicaSet>,
}

impl Probe {
    /// The job's moving shards, with the replicas either map lists for them.
    pub fn of(ctx: &crate::preflight::Context) -> Probe {
        let shards = ctx.moving_shards();
        let replicas = shards
            .iter()
            .filter_map(|b| {
                let name = b.shard();
                let urls = crate::replica_read::replicas_of(&ctx.plan, name);
                (!urls.is_empty()).then(|| ReplicaSet::new(name.to_string(), b.clone(), urls))
            })
            .collect();
        Probe { shards, replicas }
    }
}

/// [`settle_rate`], then holds paced work while a replica lags past the lag limit or a shard
/// is over the load limit.
async fn settle(catalog: &Catalog, job: &str, probe: &mut Probe) -> Option<(Settings, usize)> {
    let (set, n) = settle_rate(catalog, job).await?;
    let mut held = None;
    if let Some(ms) = set.max_lag_ms {
        let mut lags = Vec::new();
        for r in &mut probe.replicas {
            r.beat().await;
            lags.extend(r.lags().await);
        }
        held = crate::lag::over_lag(&lags, Duration::from_millis(ms));
    }
    if held.is_none() {
        if let Some(max) = set.max_load {
            held = over_load(&loads(&probe.shards).await, max);
        }
    }
    for_job(job).hold(held);
    Some((set, n))
}

/// The statement that counts a shard's other active sessions; None where there is no such
/// figure (SQLite: one process's file, its "load" is reshard's own).
pub fn load_sql(dialect: Dialect) -> Option<&'static str> {
    match dialect {
        Dialect::Postgres => Some(
            "SELECT count(*)::bigint FROM pg_stat_activity WHERE state = 'active' \
             AND datname = current_database() AND pid <> pg_backend_pid()",
        ),
        // Threads_running counts the thread running this statement.
        Dialect::Mysql => Some(
            "SELECT CAST(VARIABLE_VALUE AS SIGNED) - 1 FROM information_schema.GLOBAL_STATUS \
             WHERE VARIABLE_NAME = 'THREADS_RUNNING'",
        ),
        Dialect::Sqlite => None,
    }
}

/// The first shard over `max`, as the reason shown: "s1 load 35 active sessions > 30".
pub fn over_load(loads: &[(String, u64)], max: u64) -> Option<String> {
    loads
        .iter()
        .find(|(_, n)| *n > max)
        .map(|(s, n)| format!("{s} load {n} active sessions > {max}"))
}

/// Each shard's active sessions; a shard that does not answer within a second is left out
/// (it holds nothing back: the work itself then meets the error and retries).
async fn loads(shards: &[Arc<dyn Backend>]) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for b in shards {
        let Some(sql) = load_sql(b.dialect()) else {
            continue;
        };
        let probe = tokio::time::timeout(Duration::from_secs(1), b.int_row(sql)).await;
        if let Ok(Ok(row)) = probe {
            if let Some(Some(n)) = row.first() {
                out.push((b.shard().to_string(), (*n).max(0) as u64));
            }
        }
    }
    out
}

async fn watch(catalog: Arc<Catalog>, job: String, mut probe: Probe) {
    let t = for_job(&job);
    let mut shown: Option<String> = None;
    let mut first = true;
    loop {
        if let Some((set, n)) = settle(&catalog, &job, &mut probe).await {
            // The job's cap, not this process's share, is what the operator set.
            let capped = t.reason().and(set.max_rows_per_sec).map(|c| {
                let r = format!("rate cap {} rows/s", group_thousands(c));
                if n > 1 {
                    format!("{r} (shared by {n} processes)")
                } else {
                    r
                }
            });
            let now = t.held().or(capped);
            if now != shown || first {
                let (kind, text) = match &now {
                    Some(r) => ("throttled", format!("throttled: {r}")),
                    None => ("throttle_ended", "throttle ended".to_string()),
                };
                let recorded = catalog.set_throttled(&job, now.as_deref()).await;
                // The first tick only clears a state left by an earlier process; no event.
                if recorded.is_ok() && !(first && now.is_none()) {
                    let _ = catalog.event(&job, None, kind, &text).await;
                    crate::progress::say(format!("reshard: job {job}: {text}"));
                }
                if recorded.is_ok() {
                    shown = now;
                    first = false;
                }
            }
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

/// While held, this process keeps `job`'s throttle in step with the catalog (one watcher per
/// job however many tasks hold one). [`Watching::end`] stops it with the last holder and
/// clears the recorded state.
pub struct Watching {
    job: String,
    catalog: Arc<Catalog>,
}

type Watchers = Mutex<HashMap<String, (usize, tokio::task::JoinHandle<()>)>>;

fn watchers() -> &'static Watchers {
    static W: OnceLock<Watchers> = OnceLock::new();
    W.get_or_init(Default::default)
}

impl Watching {
    /// Starts watching what `probe` names (every throttle is in force when this returns).
    pub async fn start(catalog: &Arc<Catalog>, job: &str, mut probe: Probe) -> Watching {
        let running = || {
            let w = watchers().lock().unwrap_or_else(|e| e.into_inner());
            w.contains_key(job)
        };
        if !running() {
            settle(catalog, job, &mut probe).await;
        }
        let mut w = watchers().lock().unwrap_or_else(|e| e.into_inner());
        let e = w.entry(job.to_string()).or_insert_with(|| {
            let w = watch(catalog.clone(), job.to_string(), probe);
            (0, tokio::spawn(w))
        });
        e.0 += 1;
        Watching {
            job: job.to_string(),
            catalog: catalog.clone(),
        }
    }

    /// Lets go; the last holder stops the watcher and clears what it recorded (best effort:
    /// the next run's watcher clears it too).
    pub async fn end(self) {
        let last = {
            let mut w = watchers().lock().unwrap_or_else(|e| e.into_inner());
            let left = w.get_mut(&self.job).map(|e| {
                e.0 -= 1;
                e.0
            });
            match left {
                Some(0) => w.remove(&self.job).map(|(_, h)| h),
                _ => None,
            }
        };
        if let Some(h) = last {
            h.abort();
            if let Ok(Some(_)) = self.catalog.job_throttled(&self.job).await {
                if self.catalog.set_throttled(&self.job, None).await.is_ok() {
                    let what = "throttle ended (the run here ended)";
                    let _ = self
                        .catalog
                        .event(&self.job, None, "throttle_ended", what)
                        .await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_spends_rows_at_the_rate_without_saving_credit() {
        let t0 = Instant::now();
        let n1 = charge(None, t0, 1000, 2000);
        assert_eq!(n1 - t0, Duration::from_millis(500));
        // Charged again before the slot came: the slots queue up.
        let n2 = charge(Some(n1), t0 + Duration::from_millis(100), 1000, 2000);
        assert_eq!(n2 - t0, Duration::from_millis(1000));
        // Idle for long: no burst saved up, pacing starts from now.
        let late = t0 + Duration::from_secs(60);
        assert_eq!(
            charge(Some(n2), late, 500, 2000) - late,
            Duration::from_millis(250)
        );
        // 20,000 rows in batches of 1,000 at 2,000 rows/s: the 20th batch starts 9.5 s in.
        let mut next = None;
        for _ in 0..19 {
            next = Some(charge(next, t0, 1000, 2000));
        }
        assert_eq!(next.unwrap() - t0, Duration::from_millis(9500));
        // A zero rate is read as 1 row/s, never a division by zero.
        assert_eq!(charge(None, t0, 2, 0) - t0, Duration::from_secs(2));
    }

    #[test]
    fn throttled_only_while_the_cap_made_it_wait() {
        let now = Instant::now();
        assert_eq!(reason(None, Some(now), now), None);
        assert_eq!(reason(Some(5000), None, now), None);
        assert_eq!(
            reason(Some(5000), Some(now), now + Duration::from_millis(200)).as_deref(),
            Some("rate cap 5,000 rows/s")
        );
        assert_eq!(reason(Some(5000), Some(now), now + HELD_FOR), None);
        assert_eq!(group_thousands(1234567), "1,234,567");
        assert_eq!(group_thousands(999), "999");
    }

    #[test]
    fn the_first_shard_over_the_load_limit_is_named() {
        let l = vec![
            ("s0".to_string(), 3),
            ("s1".to_string(), 35),
            ("s2".to_string(), 40),
        ];
        assert_eq!(
            over_load(&l, 30).as_deref(),
            Some("s1 load 35 active sessions > 30")
        );
        assert_eq!(over_load(&l, 40), None, "at the limit is not over it");
        assert_eq!(over_load(&[], 1), None);
        assert!(load_sql(Dialect::Sqlite).is_none());
        let set = Settings::of_options(r#"{"max_rows_per_sec": 0, "max_load": 25}"#);
        let five = Some(5000);
        let want = Settings {
            max_rows_per_sec: None,
            max_load: Some(25),
            max_lag_ms: five,
            batch_time_ms: None,
        };
        assert_eq!(set, want);
        let default = Settings {
            max_lag_ms: five,
            ..Settings::default()
        };
        assert_eq!(
            Settings::of_options("{}"),
            default,
            "the lag limit is on by default"
        );
        assert_eq!(
            Settings::of_options(r#"{"max_lag_ms": 0}"#).max_lag_ms,
            None
        );
        assert_eq!(
            Settings::of_options(r#"{"max_lag_ms": 800}"#).max_lag_ms,
            Some(800)
        );
    }

    #[tokio::test]
    async fn a_hold_keeps_work_waiting_until_lifted() {
        let t = Arc::new(Throttle::default());
        t.hold(Some("s1 load 9 active sessions > 5".into()));
        let waiting = {
            let t = t.clone();
            tokio::spawn(async move { t.pace(10, None).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "held without a rate cap");
        t.hold(None);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the wait ended once the hold was lifted")
            .unwrap();
    }

    #[test]
    fn processes_share_the_cap() {
        assert_eq!(share(None, 3), None);
        assert_eq!(share(Some(2000), 1), Some(2000));
        assert_eq!(share(Some(2000), 3), Some(667));
        assert_eq!(share(Some(2), 5), Some(1));
        assert_eq!(share(Some(2000), 0), Some(2000));
    }

    #[tokio::test]
    async fn a_lifted_cap_ends_the_wait() {
        let t = Arc::new(Throttle::default());
        t.set_rate(Some(1));
        let waiting = {
            let t = t.clone();
            tokio::spawn(async move { t.pace(3600, None).await })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(t.reason().is_some(), "waiting under the cap");
        t.set_rate(None);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the wait ended once the cap was lifted")
            .unwrap();
    }
}
