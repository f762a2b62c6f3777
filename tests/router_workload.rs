//! The writer workload and its checker, without any job: routing never changes, so the checker
//! must pass; and it must fail when a row is changed behind the writer's back.

mod common;

use common::cluster::{modulo, Cluster};
use common::db::Kind;
use common::writer::{self, Last, Pk, Writer};
use reshard::map::{Key, Map};

fn owner(from: &serde_json::Value, id: i64) -> String {
    Map::from_value(from, "from")
        .unwrap()
        .compile()
        .owner(&Key::Int(id))
        .unwrap()
        .to_string()
}

async fn workload_without_a_job(kind: Kind) {
    let Some(c) = Cluster::create(kind, "wl", 2) else {
        return;
    };
    c.create_tables(&["s0", "s1"]);
    let from = c.map(&["s0", "s1"], modulo("identity", &["s0", "s1"]));
    c.populate(&from, 40, 2);
    let w = Writer::start(&c, &from, writer::config(400)).await;
    w.running.wait_for(400).await;
    let (router, before, tally) = w.stop().await;
    assert!(tally.acknowledged >= 400, "{tally}");
    assert!(tally.upserts > 0 && tally.deletes > 0, "{tally}");
    // No job: nothing is fenced.
    assert_eq!(tally.refused_retried, 0, "{tally}");
    let report = writer::assert_no_loss(&router, &before, &tally, true).await;
    assert!(report.written_checked > 50, "{report}");
    // Rows the writer never touched are part of the check (ids <= 0 and orders beyond 3).
    let untouched = before
        .rows
        .keys()
        .filter(|pk| !tally.last.contains_key(pk))
        .count();
    assert!(untouched >= 10, "{untouched} untouched rows");

    // Negative checks: each tampering is found, and counted in its own class.
    // 1. An acknowledged value overwritten behind the writer's back: lost.
    let (pk, _) = tally
        .last
        .iter()
        .find(|(pk, l)| matches!(pk, Pk::User(_)) && matches!(l, Last::Row(_)))
        .expect("a user row the writer wrote");
    let Pk::User(id) = *pk else { unreachable!() };
    c.db(&owner(&from, id)).exec(&format!(
        "UPDATE users SET name = 'tampered' WHERE id = {id}"
    ));
    let r = writer::check(&router, &before, &tally, true).await.unwrap();
    assert!(!r.ok(), "{r}");
    assert_eq!(
        (r.lost, r.resurrected, r.stray, r.untouched_changed),
        (1, 0, 0, 0),
        "{r}"
    );

    // 2. An untouched row deleted: untouched_changed.
    c.db(&owner(&from, -3))
        .exec("DELETE FROM users WHERE id = -3");
    let r = writer::check(&router, &before, &tally, true).await.unwrap();
    assert_eq!((r.lost, r.untouched_changed), (1, 1), "{r}");

    // 3. A row the writer deleted, put back: resurrected.
    let deleted = tally
        .last
        .iter()
        .find_map(|(pk, l)| match (pk, l) {
            (Pk::User(id), Last::Deleted) => Some(*id),
            _ => None,
        })
        .expect("a user the writer deleted");
    c.db(&owner(&from, deleted)).exec(&format!(
        "INSERT INTO users (id, name, score) VALUES ({deleted}, 'back', 1.0)"
    ));
    let r = writer::check(&router, &before, &tally, true).await.unwrap();
    assert_eq!(
        (r.lost, r.untouched_changed, r.resurrected),
        (1, 1, 1),
        "{r}"
    );

    // 4. An untouched row copied to the shard that does not own it: stray, only when exclusive.
    let other = if owner(&from, -4) == "s0" { "s1" } else { "s0" };
    c.db(other)
        .exec("INSERT INTO users (id, name, score) VALUES (-4, 'copy', 1.0)");
    let r = writer::check(&router, &before, &tally, true).await.unwrap();
    assert_eq!(r.stray, 1, "{r}");
    let r = writer::check(&router, &before, &tally, false)
        .await
        .unwrap();
    assert_eq!(r.stray, 0, "{r}");
    router.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_without_a_job_sqlite() {
    workload_without_a_job(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_without_a_job_postgres() {
    workload_without_a_job(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_without_a_job_mysql() {
    workload_without_a_job(Kind::Mysql).await;
}
