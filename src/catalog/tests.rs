use super::*;
use crate::map::Map;

fn map(shards: &[&str]) -> Map {
    let shard_urls: serde_json::Map<String, serde_json::Value> = shards
        .iter()
        .map(|s| (s.to_string(), serde_json::json!(format!("sqlite://{s}.db"))))
        .collect();
    let v = serde_json::json!({
        "shards": shard_urls,
        "tables": [{"name": "t", "key": "id"}],
        "partitioning": {"kind": "modulo", "hash": "identity", "shards": shards},
    });
    Map::from_value(&v, "test").unwrap()
}

async fn fresh() -> (tempfile::TempDir, Catalog, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("cat.db").display());
    let cat = Catalog::open_rw(&url).await.unwrap();
    (dir, cat, url)
}

fn new_job<'a>(id: &'a str, from: &'a Map, tables: &'a [String]) -> NewJob<'a> {
    NewJob {
        id,
        plan_fingerprint: "fp",
        plan_json: "{}",
        options_json: "{}",
        from,
        tables,
        moves: vec![("m1".into(), "a".into(), "b".into(), 10, 100)],
        row_counts: &[],
    }
}

#[tokio::test]
async fn regression_overlapping_jobs_second_apply_is_refused_while_one_is_unfinished() {
    let (_d, cat, _) = fresh().await;
    let from = map(&["a", "b"]);
    let tables = vec!["t".to_string()];
    let counts = vec![("t".to_string(), 42u64)];
    let mut j1 = new_job("j1", &from, &tables);
    j1.row_counts = &counts;
    cat.create_job(j1).await.unwrap();
    // The counts the audit needs were written with the job, not after it.
    assert_eq!(cat.row_counts("j1").await.unwrap(), counts);
    for state in [JobState::Running, JobState::Failed, JobState::Running] {
        cat.set_job_state("j1", state, None).await.unwrap();
        let e = cat
            .create_job(new_job("j2", &from, &tables))
            .await
            .unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 2, "{e:#}");
        let msg = format!("{e:#}");
        assert!(
            msg.contains("job j1 is unfinished") && msg.contains("reshard cancel j1"),
            "{msg}"
        );
        assert!(cat.unfinished_job().await.unwrap().is_some());
        assert!(
            cat.job("j2").await.unwrap().is_none(),
            "nothing of j2 was written"
        );
    }
    cat.set_job_state("j1", JobState::Cancelling, None)
        .await
        .unwrap();
    cat.set_job_state("j1", JobState::Cancelled, None)
        .await
        .unwrap();
    assert!(cat.unfinished_job().await.unwrap().is_none());
    cat.create_job(new_job("j2", &from, &tables)).await.unwrap();
}

#[tokio::test]
async fn first_job_records_routing_v1_and_refuses_a_stale_from() {
    let (_d, cat, _) = fresh().await;
    assert!(cat.routing().await.unwrap().is_none());
    let from = map(&["a", "b"]);
    let tables = vec!["t".to_string()];
    cat.create_job(new_job("j1", &from, &tables)).await.unwrap();
    let r = cat.routing().await.unwrap().unwrap();
    assert_eq!(r.version, 1);
    assert_eq!(r.fingerprint, map_fingerprint(&from));
    let other = map(&["a", "b", "c"]);
    let err = cat
        .create_job(new_job("j2", &other, &tables))
        .await
        .unwrap_err();
    assert_eq!(crate::error::exit_code(&err), 2, "{err:#}");
    assert!(format!("{err:#}").contains(&map_fingerprint(&other)));
    assert!(cat.job("j2").await.unwrap().is_none());
}

#[tokio::test]
async fn state_changes_are_checked_and_logged() {
    let (_d, cat, _) = fresh().await;
    let from = map(&["a", "b"]);
    let tables = vec!["t".to_string()];
    cat.create_job(new_job("j1", &from, &tables)).await.unwrap();
    assert!(cat
        .set_move_state("j1", "m1", MoveState::Copied, None)
        .await
        .is_err());
    cat.set_move_state("j1", "m1", MoveState::Copying, None)
        .await
        .unwrap();
    cat.record_batch("j1", "m1", "t", Some("[1]"), false, 5, 3, 30, 7)
        .await
        .unwrap();
    cat.record_batch("j1", "m1", "t", None, true, 0, 0, 0, 1)
        .await
        .unwrap();
    cat.set_move_state("j1", "m1", MoveState::Copied, None)
        .await
        .unwrap();
    cat.set_job_state("j1", JobState::Copied, None)
        .await
        .unwrap();
    let m = &cat.moves("j1").await.unwrap()[0];
    assert_eq!((m.rows_copied, m.bytes_copied, m.copy_ms), (3, 30, 8));
    let c = &cat.cursors("j1", "m1").await.unwrap()[0];
    assert_eq!(c.cursor_json.as_deref(), Some("[1]"));
    assert!(c.done);
    let kinds: Vec<String> = cat
        .events("j1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "routing_initialized",
            "job_created",
            "move_state",
            "table_copied",
            "move_state",
            "job_state"
        ]
    );
}

#[tokio::test]
async fn a_live_lease_excludes_a_second_worker_and_a_dead_one_does_not() {
    let (_d, cat, _) = fresh().await;
    let from = map(&["a", "b"]);
    let tables = vec!["t".to_string()];
    cat.create_job(new_job("j1", &from, &tables)).await.unwrap();
    let ttl = Duration::from_secs(60);
    let me = worker_id();
    cat.acquire_lease("j1", &me, ttl).await.unwrap().unwrap();
    // Another live process on another host.
    let other = "elsewhere:1:00000000";
    assert!(cat.acquire_lease("j1", other, ttl).await.unwrap().is_err());
    cat.release_lease("j1", &me).await.unwrap();
    cat.acquire_lease("j1", other, ttl).await.unwrap().unwrap();
    // A holder on this host whose process is gone (pid beyond pid_max) is taken over.
    let dead = format!("{}:4294967295:00000000", this_host());
    cat.release_lease("j1", other).await.unwrap();
    cat.acquire_lease("j1", &dead, ttl).await.unwrap().unwrap();
    cat.acquire_lease("j1", &me, ttl).await.unwrap().unwrap();
    assert!(!cat.renew_lease("j1", &dead, ttl).await.unwrap());
    assert!(cat.renew_lease("j1", &me, ttl).await.unwrap());
}

#[tokio::test]
async fn read_only_open_never_creates_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.db");
    let url = format!("sqlite://{}", path.display());
    assert!(Catalog::open(&url, Access::ReadOnly)
        .await
        .unwrap()
        .is_none());
    assert!(!path.exists());
}

#[tokio::test]
async fn postgres_catalog_migrates_and_records() {
    let Ok(base) = std::env::var("PG_URL") else {
        eprintln!("skipped: postgres catalog test (PG_URL not set)");
        return;
    };
    let admin = match sqlx::PgPool::connect(&base).await {
        Ok(p) => p,
        Err(_) if std::env::var("RESHARD_REQUIRE_BACKENDS").as_deref() != Ok("1") => {
            eprintln!("skipped: postgres not reachable at {}", redact(&base));
            return;
        }
        Err(e) => panic!("postgres not reachable: {e}"),
    };
    let db = format!("reshard_cat_{}", crate::job::random_u64());
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&admin)
        .await
        .unwrap();
    let url = match base.rfind('/') {
        Some(i) => format!("{}/{db}", &base[..i]),
        None => unreachable!(),
    };
    let result = async {
        assert!(Catalog::open(&url, Access::ReadOnly).await?.is_none());
        let cat = Catalog::open_rw(&url).await?;
        let from = map(&["a", "b"]);
        let tables = vec!["t".to_string()];
        cat.create_job(new_job("j1", &from, &tables)).await?;
        let me = worker_id();
        cat.acquire_lease("j1", &me, Duration::from_secs(30))
            .await?
            .map_err(anyhow::Error::msg)?;
        assert!(cat
            .acquire_lease("j1", "elsewhere:1:0", Duration::from_secs(30))
            .await?
            .is_err());
        cat.set_move_state("j1", "m1", MoveState::Copying, None)
            .await?;
        cat.record_batch("j1", "m1", "t", Some("[2]"), true, 2, 2, 20, 3)
            .await?;
        assert_eq!(cat.moves("j1").await?[0].rows_copied, 2);
        assert_eq!(cat.routing().await?.map(|r| r.version), Some(1));
        cat.close().await;
        anyhow::Ok(())
    }
    .await;
    sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
    result.unwrap();
}

#[tokio::test]
async fn switches_merge_in_the_catalog_and_other_requests_leave_them() {
    let (_d, cat, _) = fresh().await;
    let from = map(&["a", "b"]);
    let tables = vec!["t".to_string()];
    cat.create_job(new_job("j1", &from, &tables)).await.unwrap();
    let one = |m: &str| Switch::Moves([m.to_string()].into_iter().collect());
    let got = cat
        .record_switch("j1", one("m1"), "switch m1")
        .await
        .unwrap();
    assert_eq!(got.text(), "switch m1");
    let got = cat
        .record_switch("j1", one("m3"), "switch m3")
        .await
        .unwrap();
    assert_eq!(got.text(), "switch m1 m3");
    assert_eq!(cat.job_switch("j1").await.unwrap(), Some(got));
    assert_eq!(cat.job_request("j1").await.unwrap(), None);
    let got = cat
        .record_switch("j1", Switch::All, "switch")
        .await
        .unwrap();
    assert_eq!(got, Switch::All);
    cat.clear_switch("j1").await.unwrap();
    assert_eq!(cat.job_switch("j1").await.unwrap(), None);

    // A switch given while a pause is pending waits for the resume.
    cat.record_request("j1", "pause", "pause").await.unwrap();
    let got = cat
        .record_switch("j1", one("m1"), "switch m1")
        .await
        .unwrap();
    assert_eq!(got.text(), "switch m1");
    let req = cat.job_request("j1").await.unwrap();
    assert_eq!(req.as_deref(), Some("pause"), "the pause stays");
    cat.clear_switch("j1").await.unwrap();
    assert_eq!(cat.job_switch("j1").await.unwrap(), None);
    let req = cat.job_request("j1").await.unwrap();
    assert_eq!(
        req.as_deref(),
        Some("pause"),
        "clearing the switch leaves the pause"
    );

    // A rollback, complete or cancel is carried out first.
    cat.record_request("j1", "rollback", "rollback")
        .await
        .unwrap();
    let e = cat
        .record_switch("j1", one("m1"), "switch m1")
        .await
        .unwrap_err();
    assert_eq!(crate::error::exit_code(&e), 2, "{e:#}");
    assert!(format!("{e:#}").contains("pending \"rollback\""), "{e:#}");
}

/// Regression: a switch shared the `request` column with every other request, so a `pause`
/// (or `complete`, `rollback`, `cancel`) recorded after it overwrote it, and the resumed job
/// waited for a switch the operator had already given.
#[tokio::test]
async fn regression_pause_overwrote_a_pending_switch() {
    let (_d, cat, _) = fresh().await;
    let from = map(&["a", "b"]);
    let tables = vec!["t".to_string()];
    cat.create_job(new_job("j1", &from, &tables)).await.unwrap();
    cat.record_switch("j1", Switch::All, "switch")
        .await
        .unwrap();
    cat.request_pause("j1").await.unwrap();
    cat.record_request("j1", "complete", "complete")
        .await
        .unwrap();
    cat.clear_request("j1", "complete").await.unwrap();
    assert_eq!(cat.job_switch("j1").await.unwrap(), Some(Switch::All));
}
