//! `reshard worker --metrics ADDR`: Prometheus (OpenMetrics) text at `GET /metrics`.
//!
//! Every scrape reads the catalog (and the change logs of the job's shards), so the figures are
//! the same ones `reshard status` shows, whichever worker did the work: rows and bytes copied per
//! move, the backlog each move waits on per direction, the fence of every flipped move, the copy
//! tasks by state. The worker's own counters add its errors by kind. The encoding is the
//! `prometheus-client` crate's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::backlog::{self, ShardLogs};
use crate::catalog::Catalog;
use crate::plan::Plan;

type Labels = Vec<(String, String)>;

/// What the worker counts itself (errors of its rounds, by kind).
#[derive(Default)]
pub struct Local {
    errors: Family<Labels, Counter>,
}

impl Local {
    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&vec![("kind".to_string(), kind.to_string())])
            .inc();
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Binds `addr` and answers scrapes until the process ends.
pub async fn serve(
    addr: SocketAddr,
    catalog: Arc<Catalog>,
    local: Arc<Local>,
    me: String,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics: cannot listen on {addr}"))?;
    eprintln!("reshard worker: metrics at http://{addr}/metrics");
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let (catalog, local, me) = (catalog.clone(), local.clone(), me.clone());
            tokio::spawn(async move {
                // A scraper that sends nothing is dropped; a scrape reads shards for up to 3 s.
                let mut buf = [0u8; 2048];
                let n =
                    match tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf)).await {
                        Ok(Ok(n)) => n,
                        _ => return,
                    };
                let head = String::from_utf8_lossy(&buf[..n]);
                let reply = if head.starts_with("GET /metrics ") {
                    match scrape(&catalog, &local, &me).await {
                        Ok(body) => response(
                            "200 OK",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            &body,
                        ),
                        Err(e) => response(
                            "500 Internal Server Error",
                            "text/plain",
                            &format!("{e:#}\n"),
                        ),
                    }
                } else {
                    response("404 Not Found", "text/plain", "GET /metrics\n")
                };
                let _ = conn.write_all(reply.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Ok(())
}

fn response(status: &str, kind: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The metric families of one scrape.
#[derive(Default)]
struct Scrape {
    rows: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
    rows_total: Family<Labels, Gauge>,
    backlog_entries: Family<Labels, Gauge>,
    backlog_age: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    tasks: Family<Labels, Gauge>,
    state: Family<Labels, Gauge>,
    held: Gauge,
    throttled: Family<Labels, Gauge>,
    rate_cap: Family<Labels, Gauge>,
}

/// The registry for one scrape, filled from the catalog.
pub async fn scrape(catalog: &Catalog, local: &Local, me: &str) -> Result<String> {
    let m = Scrape::default();
    let fences = Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0]);
    if let Some(job) = catalog.unfinished_job_id().await? {
        m.fill(catalog, &job, me, &fences).await?;
    }
    let mut reg = Registry::with_prefix("reshard");
    reg.register("rows_copied", "Rows copied per move", m.rows);
    reg.register("bytes_copied", "Bytes copied per move", m.bytes);
    reg.register(
        "rows",
        "Rows to copy per move (estimated at job start)",
        m.rows_total,
    );
    reg.register(
        "backlog_entries",
        "Change-log entries a move waits on, by direction (forward before its flip, reverse after)",
        m.backlog_entries,
    );
    reg.register(
        "backlog_oldest_seconds",
        "Age of the oldest change-log entry a move waits on, by the shard's clock",
        m.backlog_age,
    );
    reg.register(
        "fence_seconds",
        "How long each flipped move's keys were fenced",
        fences,
    );
    reg.register("tasks", "Copy tasks by state (free, held, done)", m.tasks);
    reg.register("worker_tasks_held", "Copy tasks this worker holds", m.held);
    reg.register("job_state", "The unfinished job's state (1)", m.state);
    reg.register(
        "throttled",
        "1 while a throttle holds the job back, labelled with why (as `status` shows it)",
        m.throttled,
    );
    reg.register(
        "rate_cap_rows_per_second",
        "The job's rate cap (--max-rows-per-sec, `reshard throttle`); absent without one",
        m.rate_cap,
    );
    reg.register(
        "worker_errors",
        "Errors of this worker's rounds, by kind",
        local.errors.clone(),
    );
    let mut out = String::new();
    encode(&mut out, &reg).context("encoding metrics")?;
    Ok(out)
}

impl Scrape {
    async fn fill(&self, catalog: &Catalog, job: &str, me: &str, fences: &Histogram) -> Result<()> {
        let row = catalog
            .job(job)
            .await?
            .with_context(|| format!("job {job}: not in the catalog"))?;
        self.state
            .get_or_create(&labels(&[("job", job), ("state", &row.state)]))
            .set(1);
        let why = catalog.job_throttled(job).await?;
        self.throttled
            .get_or_create(&labels(&[
                ("job", job),
                ("reason", why.as_deref().unwrap_or("")),
            ]))
            .set(i64::from(why.is_some()));
        let cap = serde_json::from_str::<serde_json::Value>(&row.options_json)
            .ok()
            .and_then(|o| o.get("max_rows_per_sec").and_then(|v| v.as_u64()));
        if let Some(cap) = cap {
            self.rate_cap
                .get_or_create(&labels(&[("job", job)]))
                .set(cap as i64);
        }
        let moves = catalog.moves(job).await?;
        for m in &moves {
            let l = labels(&[("job", job), ("move", &m.id)]);
            self.rows.get_or_create(&l).inc_by(m.rows_copied);
            self.bytes.get_or_create(&l).inc_by(m.bytes_copied);
            self.rows_total.get_or_create(&l).set(m.rows_total as i64);
            if let (true, Some(ms)) = (m.flipped, m.fence_ms) {
                fences.observe(ms as f64 / 1000.0);
            }
        }
        let now = crate::catalog::now_ms();
        for t in catalog.tasks(job).await? {
            let s = match t.live_holder(now) {
                _ if t.done() => "done",
                Some(h) => {
                    if h == me {
                        self.held.inc();
                    }
                    "held"
                }
                None => "free",
            };
            self.tasks
                .get_or_create(&labels(&[("job", job), ("state", s)]))
                .inc();
        }
        if let Ok(plan) = Plan::parse(&row.plan_json, "job plan") {
            self.backlog(job, &plan, &moves).await;
        }
        Ok(())
    }

    /// A move waits on the log it consumes: its source's before the flip (forward), its
    /// destination's after (reverse); the log is the shard's, shared by its moves. A shard that
    /// does not answer is left out.
    async fn backlog(&self, job: &str, plan: &Plan, moves: &[crate::catalog::MoveRow]) {
        let logs: Vec<_> = backlog::read(plan)
            .await
            .into_iter()
            .filter_map(|s| match s {
                ShardLogs::Read(l) => Some(l),
                ShardLogs::Unreachable { .. } => None,
            })
            .flatten()
            .collect();
        for m in moves {
            let (shard, direction) = if m.flipped {
                (&m.destination, "reverse")
            } else {
                (&m.source, "forward")
            };
            let mine: Vec<_> = logs.iter().filter(|l| &l.shard == shard).collect();
            let l = labels(&[("job", job), ("move", &m.id), ("direction", direction)]);
            let n: u64 = mine.iter().map(|l| l.entries).sum();
            self.backlog_entries.get_or_create(&l).set(n as i64);
            let age = mine.iter().filter_map(|l| l.oldest_ms).max().unwrap_or(0);
            self.backlog_age.get_or_create(&l).set(age as f64 / 1000.0);
        }
    }
}
