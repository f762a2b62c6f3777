//! `verify_move` with `Scope::Touched` (the online cutover's call under the fence): only the
//! chunks holding touched keys are recomputed, the other recorded checksums stand, and a change
//! in a touched chunk is found.

mod common;

use std::collections::BTreeMap;

use common::cluster::*;
use common::db::Kind;
use reshard::backend::Value;
use reshard::catalog::Catalog;
use reshard::plan::Plan;
use reshard::verify::{self, Options, Scope, Verifier};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touched_scope_recomputes_only_touched_chunks() {
    let Some(c) = Cluster::create(Kind::Sqlite, "vinc", 2) else {
        return;
    };
    for s in ["s0", "s1"] {
        c.db(s)
            .exec_async("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            .await;
    }
    let rows: Vec<String> = (1..=300).map(|i| format!("({i}, 'v{i}')")).collect();
    c.db("s0")
        .exec_async(&format!("INSERT INTO t VALUES {}", rows.join(", ")))
        .await;
    let urls = json!({"s0": c.db("s0").url, "s1": c.db("s1").url});
    let m = |split: i64| {
        json!({"shards": urls, "tables": [{"name": "t", "key": "id"}],
               "partitioning": ranges(&["s0", "s1"], &[split])})
    };
    let plan_path = c.write_plan("plan", &m(1000), &m(100));
    let cu = c.catalog_url();
    let p = plan_path.to_str().unwrap().to_string();
    let o = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_reshard"))
            .args([
                "apply",
                &p,
                "--yes",
                "--progress",
                "plain",
                "--catalog",
                &cu,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let job = job_id(&o).unwrap();

    let plan = Plan::load(&plan_path).unwrap();
    let (mut ctx, problems) = reshard::preflight::connect(&plan).await;
    assert!(problems.is_empty(), "{problems:?}");
    assert!(reshard::preflight::describe_all(&mut ctx).await.is_empty());
    let catalog = Catalog::open_rw(&c.catalog_url()).await.unwrap();
    let v = Verifier {
        ctx: &ctx,
        catalog: &catalog,
        job: &job,
        options: Options {
            initial_chunk_rows: 20,
            adapt: false,
            ..Options::default()
        },
        stop: None,
        progress: None,
        paced: false,
    };
    let mv = &plan.moves[0];
    let r = verify::verify_move(&v, mv, Scope::Full).await.unwrap();
    assert!(r.ok);
    // Keys 100..=300 move: 201 rows in chunks of 20, the last open-ended.
    assert_eq!(r.tables[0].chunks, 11);
    assert_eq!(r.tables[0].chunks_computed, 11);

    // Writes since: one in the chunk (140, 160], one in (240, 260]. The verifier is told.
    c.db("s1")
        .exec_unguarded("UPDATE t SET v = 'changed' WHERE id = 150");
    c.db("s0")
        .exec_unguarded("UPDATE t SET v = 'new' WHERE id = 250");
    c.db("s1")
        .exec_unguarded("UPDATE t SET v = 'new' WHERE id = 250");
    let touched: verify::Touched = BTreeMap::from([(
        "t".to_string(),
        vec![vec![Value::Int(150)], vec![Value::Int(250)]],
    )]);
    let r = verify::verify_move(&v, mv, Scope::Touched(&touched))
        .await
        .unwrap();
    assert!(!r.ok);
    assert_eq!(r.tables[0].chunks_computed, 2, "only the touched chunks");
    assert_eq!(r.tables[0].chunks, 11);
    assert_eq!(r.tables[0].diff.differing_count, 1);
    assert_eq!(r.tables[0].diff.differing[0].pk, json!([150]));

    // A change nobody reported is not seen by a touched-only check (that is the contract:
    // the caller passes every key written since), but the next full pass finds it.
    c.db("s1")
        .exec_unguarded("UPDATE t SET v = 'silent' WHERE id = 290");
    c.db("s1")
        .exec_unguarded("UPDATE t SET v = 'v150' WHERE id = 150");
    let none: verify::Touched = BTreeMap::new();
    let r = verify::verify_move(&v, mv, Scope::Touched(&none))
        .await
        .unwrap();
    // The chunk that mismatched before is recomputed (it may have been caught up), no other.
    assert!(r.ok);
    assert_eq!(r.tables[0].chunks_computed, 1);
    let r = verify::verify_move(&v, mv, Scope::Full).await.unwrap();
    assert!(!r.ok);
    assert_eq!(r.tables[0].diff.differing[0].pk, json!([290]));
    catalog.close().await;
}
