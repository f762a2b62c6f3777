//! A job run by a PostgreSQL role that is no superuser and may not set
//! `session_replication_role` (as on most managed services): the copy's COPY then runs with
//! the destination's triggers firing under the bypass flag, where a superuser's skips them
//! (src/backend/pg_copy_in.rs). The job completes under a live writer using the same role,
//! through a resume after the copy's write was committed and its cursor not recorded, and
//! nothing is lost.

mod common;

use common::cluster::*;
use common::db::{query_url, Kind};
use common::writer::{self, Writer};

/// A login role of the test's own, dropped when the test ends (after its databases).
struct Role(String);

impl Drop for Role {
    fn drop(&mut self) {
        if let Some(server) = Kind::Postgres.server_url() {
            let sql = format!("DROP ROLE IF EXISTS {}", self.0);
            let _ = std::panic::catch_unwind(|| query_url(Kind::Postgres, &server, &sql));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_job_as_an_unprivileged_role() {
    let Some(server) = Kind::Postgres.server_url() else {
        return;
    };
    let role = Role(format!("rs_app_{}", std::process::id()));
    let r = &role.0;
    query_url(
        Kind::Postgres,
        &server,
        &format!("CREATE ROLE {r} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"),
    );
    let Some(c) = Cluster::create(Kind::Postgres, "role", 3) else {
        return;
    };
    c.create_tables(&["s0", "s1", "s2"]);
    let as_role = |m: serde_json::Value| {
        let mut m = m;
        for (name, url) in m["shards"].as_object_mut().expect("shards") {
            let db = &c.db(name).name;
            *url = serde_json::json!(format!("postgres://{r}@127.0.0.1:5432/{db}"));
        }
        m
    };
    let from = as_role(c.map(&["s0", "s1"], modulo("identity", &["s0", "s1"])));
    let to = as_role(c.map(&["s0", "s1", "s2"], modulo("identity", &["s0", "s1", "s2"])));
    c.populate(&from, 600, 2);
    // The role owns its databases, schema and tables: what reshard needs, and no more.
    for s in ["s0", "s1", "s2"] {
        let db = c.db(s);
        db.exec(&format!(
            "ALTER DATABASE {} OWNER TO {r}; ALTER SCHEMA public OWNER TO {r}; \
             ALTER TABLE users OWNER TO {r}; ALTER TABLE orders OWNER TO {r}",
            db.name
        ));
    }
    let plan = c.write_plan("plan", &from, &to);
    let plan = plan.to_str().unwrap();
    let w = Writer::start(&c, &from, writer::config(0)).await;
    let n = w.running.acknowledged();
    w.running.wait_for(n + 50).await;
    // Killed after a batch's COPY committed and before its cursor was recorded: the resume
    // copies that batch again, meets its own rows and writes it through the upsert.
    let out = c
        .cmd(&[
            "apply",
            plan,
            "--yes",
            "--batch-size",
            "50",
            "--progress",
            "plain",
        ])
        .env("RESHARD_FAILPOINT", "after_upsert:3")
        .output()
        .expect("apply");
    assert!(!out.status.success(), "the failpoint did not fire");
    assert!(stderr(&out).contains("failpoint"), "{}", stderr(&out));
    let out = c.run(&["resume", "--progress", "plain"]);
    assert!(out.status.success(), "resume: {}", stderr(&out));
    let out = c.run(&["complete"]);
    assert!(out.status.success(), "complete: {}", stderr(&out));
    w.stop_and_check(true).await;
    // The role really is unprivileged: it may not skip triggers.
    let url = format!("postgres://{r}@127.0.0.1:5432/{}", c.db("s2").name);
    let may = query_url(
        Kind::Postgres,
        &url,
        "SELECT (current_setting('is_superuser') = 'on' \
                 OR has_parameter_privilege('session_replication_role', 'SET'))::text",
    );
    assert_eq!(may[0][0], "false");
}
