//! `apply --read-from replica`: the copy of a move reads its pages from a replica of the
//! source, to spare the primary. Catch-up, the fenced drain and verification keep reading the
//! primary.
//!
//! Why this loses nothing: capture is installed on the primary before any copy starts, and a
//! trigger's install waits for the transactions writing the table (PostgreSQL's CREATE
//! TRIGGER and MariaDB's metadata lock). Every commit after the install is therefore logged,
//! and catch-up re-reads those rows from the primary after the copy (docs/online.md). Every
//! commit before it must be in what the copy reads. The copy takes the primary's position
//! after the install (PostgreSQL `pg_current_wal_lsn()`, MariaDB `@@gtid_binlog_pos`) and reads
//! a replica only once it has replayed past that position (`pg_last_wal_replay_lsn() >= lsn`,
//! `MASTER_GTID_WAIT(pos)`). A replica that has not is waited for, never read. A page read
//! later from a replica that lags is older than the primary but never older than the install,
//! so whatever it misses was logged and comes back through catch-up. A resumed run takes a
//! fresh position, which is later still.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::backend::replication::Replayed;
use crate::backend::Backend;
use crate::catalog::Catalog;
use crate::lag::replica_label;
use crate::plan::Plan;
use crate::shard_url::ShardUrl;
use crate::signals::StopFlag;

/// The longest the copy of one move waits for a replica to replay past the install point
/// before the job stops, resumable.
pub const MAX_WAIT: Duration = Duration::from_secs(600);

const POLL: Duration = Duration::from_millis(250);

/// The replicas the plan lists for a shard (either map), in the order given.
pub fn replicas_of(plan: &Plan, shard: &str) -> Vec<ShardUrl> {
    let mut urls: Vec<ShardUrl> = Vec::new();
    for m in [&plan.from, &plan.to] {
        for u in m.replicas.get(shard).into_iter().flatten() {
            if !urls.contains(u) {
                urls.push(u.clone());
            }
        }
    }
    urls
}

/// The problems `--read-from replica` has with a plan, checked before any I/O: every source
/// of a move needs a replica, and SQLite has none reshard could read.
pub fn check_plan(plan: &Plan, file: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for m in &plan.moves {
        if seen.contains(&m.source) {
            continue;
        }
        seen.push(m.source.clone());
        let sqlite = plan
            .from
            .shards
            .get(&m.source)
            .and_then(|u| u.dialect())
            .is_some_and(|d| d == crate::ident::Dialect::Sqlite);
        if sqlite {
            out.push(format!(
                "{file}: from.shards.{}: --read-from replica: an SQLite shard has no replica \
                 reshard can read; use --read-from primary",
                m.source
            ));
        } else if replicas_of(plan, &m.source).is_empty() {
            out.push(format!(
                "{file}: from.shards.{}: --read-from replica: shard {} (the source of move {}) \
                 lists no replicas; give it as {{\"url\": ..., \"replicas\": [...]}} in the \
                 map and plan again, or use --read-from primary",
                m.source, m.source, m.id
            ));
        }
    }
    out
}

/// What one look at the replicas found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    /// Read from this replica (its index).
    Read(usize),
    /// None is past yet; why, for the operator.
    Wait(String),
}

/// Picks the first replica past the position; otherwise says where each one is.
pub fn pick(shard: &str, pos: &str, states: &[(String, Result<Replayed, String>)]) -> Look {
    if let Some(i) = states
        .iter()
        .position(|(_, s)| matches!(s, Ok(Replayed::Past)))
    {
        return Look::Read(i);
    }
    let each: Vec<String> = states
        .iter()
        .map(|(label, s)| match s {
            Ok(Replayed::Behind(at)) => format!("{label} is at {at}"),
            Ok(Replayed::NotReplica) => format!("{label} is not replaying (not a replica?)"),
            Ok(Replayed::Past) => format!("{label} is past"),
            Err(e) => format!("{label} does not answer ({e})"),
        })
        .collect();
    Look::Wait(format!(
        "waiting for a replica of {shard} to replay past {pos}, the primary's position after \
         capture was installed: {}",
        each.join("; ")
    ))
}

/// The replica the copy of `move_id` reads from, once one has replayed past the primary's
/// position now; None when a stop is asked while waiting.
pub async fn open(
    plan: &Plan,
    catalog: &Catalog,
    job: &str,
    move_id: &str,
    primary: &Arc<dyn Backend>,
    stop: &StopFlag,
) -> Result<Option<Arc<dyn Backend>>> {
    let shard = primary.shard().to_string();
    let urls = replicas_of(plan, &shard);
    let pos = crate::retry::retry(&format!("{shard}: reading its position"), || {
        primary.position()
    })
    .await?
    .ok_or_else(|| anyhow::anyhow!("shard {shard}: it has no replication position"))?;
    let mut conns: Vec<Option<Arc<dyn Backend>>> = urls.iter().map(|_| None).collect();
    let started = Instant::now();
    let mut told = None;
    loop {
        let mut states = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            let label = replica_label(url);
            states.push((
                label.clone(),
                look(&shard, &label, url, &mut conns[i], &pos).await,
            ));
        }
        match pick(&shard, &pos, &states) {
            Look::Read(i) => {
                let what = format!(
                    "copy reads from {shard} replica {}, which has replayed past {pos}",
                    states[i].0
                );
                tell(catalog, job, move_id, "replica_read", &what).await;
                return Ok(conns[i].take());
            }
            Look::Wait(why) => {
                if told.as_ref() != Some(&why) {
                    tell(catalog, job, move_id, "replica_wait", &why).await;
                    told = Some(why.clone());
                }
                if started.elapsed() >= MAX_WAIT {
                    anyhow::bail!(
                        "move {move_id}: {why}; gave up after {} s. Resume the job once a \
                         replica has caught up",
                        MAX_WAIT.as_secs()
                    );
                }
            }
        }
        if stop.requested() {
            return Ok(None);
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn look(
    shard: &str,
    label: &str,
    url: &ShardUrl,
    conn: &mut Option<Arc<dyn Backend>>,
    pos: &str,
) -> Result<Replayed, String> {
    let bound = Duration::from_secs(2);
    if conn.is_none() {
        let name = format!("{shard} replica {label}");
        match tokio::time::timeout(bound, crate::backend::connect(&name, url)).await {
            Ok(Ok(b)) => *conn = Some(b),
            Ok(Err(e)) => return Err(format!("{e:#}")),
            Err(_) => return Err("no connection within 2 s".into()),
        }
    }
    let Some(b) = conn.as_ref() else {
        return Err("not connected".into());
    };
    match tokio::time::timeout(bound, b.replayed(pos)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err("no answer within 2 s".into()),
    }
}

async fn tell(catalog: &Catalog, job: &str, move_id: &str, kind: &str, what: &str) {
    crate::progress::say(format!("reshard: move {move_id}: {what}"));
    if let Err(e) = catalog.event(job, Some(move_id), kind, what).await {
        crate::progress::say(format!("reshard: warning: {e:#}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_replica_past_the_install_point_is_read_and_none_before() {
        let s = |l: &str, r: Result<Replayed, String>| (l.to_string(), r);
        let behind = s("r1:5433", Ok(Replayed::Behind("0/16B3740".into())));
        let past = s("r2:5433", Ok(Replayed::Past));
        assert_eq!(
            pick("s1", "0/16B3750", &[behind.clone(), past.clone()]),
            Look::Read(1)
        );
        let Look::Wait(why) = pick(
            "s1",
            "0/16B3750",
            &[
                behind,
                s("r3", Ok(Replayed::NotReplica)),
                s("r4", Err("refused".into())),
            ],
        ) else {
            panic!("read a replica that is not past the install point");
        };
        assert!(why.contains("past 0/16B3750"), "{why}");
        assert!(why.contains("r1:5433 is at 0/16B3740"), "{why}");
        assert!(why.contains("r3 is not replaying"), "{why}");
        assert!(why.contains("r4 does not answer (refused)"), "{why}");
        assert!(matches!(pick("s1", "p", &[]), Look::Wait(_)));
    }
}
