//! What stops a job before anything is written: a stale plan, a missing table, a column type
//! mismatch, rows already at a destination, no --yes without a terminal, `--read-from replica`
//! without replicas; and `--dry-run`,
//! which writes nothing anywhere.

mod common;

use common::cluster::*;
use common::db::Kind;
use serde_json::Value;

fn two_to_three(
    kind: Kind,
    tag: &str,
    tables_at_new: bool,
) -> Option<(Cluster, Value, Value, String)> {
    let c = Cluster::create(kind, tag, 3)?;
    c.create_tables(&["s0", "s1"]);
    if tables_at_new {
        c.create_tables(&["s2"]);
    }
    let from = c.map(&["s0", "s1"], modulo("identity", &["s0", "s1"]));
    let to = c.map(&["s0", "s1", "s2"], modulo("identity", &["s0", "s1", "s2"]));
    c.populate(&from, 120, 2);
    let plan = c.write_plan("plan", &from, &to).display().to_string();
    Some((c, from, to, plan))
}

fn dry_run_writes_nothing(kind: Kind) {
    let Some((c, from, to, plan)) = two_to_three(kind, "dry", true) else {
        return;
    };
    let before = c.snapshot();
    let out = c.run(&["apply", &plan, "--dry-run", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["would_start"], true);
    assert!(v["rows"].as_u64().unwrap() > 0, "{v}");
    assert!(v["estimated_seconds"].is_u64(), "{v}");
    assert!(!c.catalog_path().exists(), "dry run created the catalog");
    assert_eq!(c.snapshot(), before, "dry run changed a shard");

    // With an existing catalog: byte-identical afterwards.
    let out = c.run(&["apply", &plan, "--yes", "--progress", "plain"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Plain progress lines say when (UTC time of day): `reshard: 14:59:48Z m1 s0 -> s2: ...`.
    let err = stderr(&out);
    let states: Vec<&str> = err.lines().filter(|l| l.contains(" -> s2: ")).collect();
    assert!(!states.is_empty(), "{err}");
    for l in states {
        let t = l.strip_prefix("reshard: ").unwrap_or("");
        let stamped = t.len() > 9
            && t.as_bytes()[8] == b'Z'
            && t[..8].chars().enumerate().all(|(i, ch)| {
                if i == 2 || i == 5 {
                    ch == ':'
                } else {
                    ch.is_ascii_digit()
                }
            });
        assert!(stamped, "not timestamped: {l}");
    }
    let cat = std::fs::read(c.catalog_path()).unwrap();
    let shards = c.snapshot();
    // The job is unfinished (dual write), so this dry run finds a problem and exits 2, as
    // `apply` does on it (regression: it exited 1, "failed, resumable"), writing nothing. The
    // rows at s2 are that job's: they are not reported as existing rows.
    let out = c.run(&["apply", &plan, "--dry-run"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stdout(&out).contains("is unfinished"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("already holds"), "{}", stdout(&out));
    assert_eq!(std::fs::read(c.catalog_path()).unwrap(), cat);
    assert_eq!(c.snapshot(), shards);
    let _ = (from, to);
}

fn stale_plan_is_refused(kind: Kind) {
    let Some((c, _from, to, plan)) = two_to_three(kind, "stale", true) else {
        return;
    };
    let out = c.run(&["apply", &plan, "--yes", "--progress", "plain"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A plan from some other map than the catalog's routing (version 1 = the first plan's from).
    let other = c.map(&["s0", "s2"], modulo("identity", &["s0", "s2"]));
    let stale = c.write_plan("stale", &other, &to).display().to_string();
    let before = c.snapshot();
    let out = c.run(&["apply", &stale, "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("stale"), "{err}");
    let want = reshard::catalog::map_fingerprint(&reshard::Map::from_value(&other, "x").unwrap());
    assert!(err.contains(&want), "{err}");
    assert_eq!(c.snapshot(), before);
}

fn missing_table_and_type_mismatch_at_once(kind: Kind) {
    let Some((c, from, to, plan)) = two_to_three(kind, "pf", false) else {
        return;
    };
    // s2 has `users` with a different type for `score`, and no `orders` at all.
    let users = ddl(kind, "users").replace(
        match kind {
            Kind::Sqlite => "score REAL",
            Kind::Postgres => "score double precision",
            Kind::Mysql => "score double",
        },
        "score varchar(10)",
    );
    c.db("s2").exec(&users);
    let before = c.snapshot();
    let out = c.run(&["apply", &plan, "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("table orders does not exist at the destination"),
        "{err}"
    );
    assert!(err.contains("--create-tables"), "{err}");
    assert!(err.contains("column score"), "{err}");
    // regression_preflight_repeated_a_problem_per_move: both sources move keys to s2; the
    // mismatch is one problem naming both.
    assert_eq!(err.matches("column score").count(), 1, "{err}");
    assert!(
        err.contains("shard s2: table users: column score is"),
        "{err}"
    );
    assert!(err.contains(" at s0, s1 but "), "{err}");
    assert!(!c.catalog_path().exists());
    assert_eq!(c.snapshot(), before);

    // Fix the type; --create-tables creates `orders` from the source's definition.
    c.db("s2").exec("DROP TABLE users");
    c.db("s2").exec(&ddl(kind, "users"));
    let before = c.snapshot();
    let out = c.run(&[
        "apply",
        &plan,
        "--yes",
        "--create-tables",
        "--progress",
        "plain",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(c.table_exists("s2", "orders"));
    c.assert_copied(&before, &from, &to);
    if kind != Kind::Sqlite {
        // Secondary indexes are built after the copy.
        let q = match kind {
            Kind::Postgres => "SELECT COUNT(*) FROM pg_indexes WHERE tablename = 'orders' AND indexname = 'orders_note'",
            _ => "SELECT COUNT(DISTINCT index_name) FROM information_schema.statistics WHERE table_schema = database() AND table_name = 'orders' AND index_name = 'orders_note'",
        };
        assert_eq!(c.db("s2").scalar(q), "1");
    }
}

fn rows_already_at_destination(kind: Kind) {
    let Some((c, from, to, plan)) = two_to_three(kind, "ex", true) else {
        return;
    };
    // Key 2 moves s0 -> s2 under identity 2 -> 3; a copy of it already sits at s2.
    let tp = reshard::Map::from_value(&to, "to").unwrap().compile();
    let fp = reshard::Map::from_value(&from, "from").unwrap().compile();
    let k = (1..100)
        .find(|k| {
            let key = reshard::Key::Int(*k);
            fp.owner(&key).unwrap() != "s2" && tp.owner(&key).unwrap() == "s2"
        })
        .unwrap();
    c.db("s2").exec(&format!(
        "INSERT INTO users (id, name, score) VALUES ({k}, 'stale copy', 1)"
    ));
    let out = c.run(&["apply", &plan, "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("already holds 1 rows of table users"),
        "{}",
        stderr(&out)
    );
    let before = c.snapshot();
    let out = c.run(&[
        "apply",
        &plan,
        "--yes",
        "--allow-existing",
        "--progress",
        "plain",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The stale copy was overwritten by the source's row.
    let mut expect = before.clone();
    expect
        .get_mut(&("s2".to_string(), "users".to_string()))
        .unwrap()
        .retain(|r| r[0] != k.to_string());
    c.assert_copied(&expect, &from, &to);
}

fn no_yes_without_terminal(kind: Kind) {
    let Some((c, _f, _t, plan)) = two_to_three(kind, "yes", true) else {
        return;
    };
    let out = c
        .cmd(&["apply", &plan])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert!(!c.catalog_path().exists());
}

/// `--read-from replica` needs a replica of every source in the plan, and SQLite has none: the
/// job is refused before anything is read or written, naming the shard and what to do.
fn read_from_replica_without_replicas(kind: Kind) {
    let Some((c, _f, _t, plan)) = two_to_three(kind, "rfr", true) else {
        return;
    };
    let before = c.snapshot();
    let out = c.run(&["apply", &plan, "--yes", "--read-from", "replica"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("from.shards.s0: --read-from replica"), "{err}");
    let why = if kind == Kind::Sqlite {
        "an SQLite shard has no replica"
    } else {
        "lists no replicas"
    };
    assert!(err.contains(why), "{err}");
    assert!(err.contains("--read-from primary"), "{err}");
    assert!(!c.catalog_path().exists(), "created the catalog");
    assert_eq!(c.snapshot(), before, "changed a shard");
}

macro_rules! per_backend {
    ($($name:ident),*) => {
        mod sqlite { use super::*; $(#[test] fn $name() { super::$name(Kind::Sqlite) })* }
        mod postgres { use super::*; $(#[test] fn $name() { super::$name(Kind::Postgres) })* }
        mod mysql { use super::*; $(#[test] fn $name() { super::$name(Kind::Mysql) })* }
    };
}

per_backend!(
    dry_run_writes_nothing,
    stale_plan_is_refused,
    missing_table_and_type_mismatch_at_once,
    rows_already_at_destination,
    no_yes_without_terminal,
    read_from_replica_without_replicas,
    regression_create_tables_dropped_check_constraints,
    regression_stale_dry_run_hinted_allow_existing
);

/// `apply --format` says what `--dry-run` prints; given without `--dry-run` it was silently
/// ignored. It is refused now, naming the missing flag, before anything is read.
#[test]
fn regression_apply_format_ignored_without_dry_run() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reshard"))
        .args(["apply", "no-such-plan.json", "--format", "json"])
        .env_remove("RESHARD_CATALOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--dry-run"), "{err}");
    assert!(
        !err.contains("no-such-plan"),
        "refused before the plan is read: {err}"
    );
}

/// With `RESHARD_SHARD_<NAME>_URL` set, an unreachable shard was reported under the plan's URL,
/// not the one reshard had tried, and its cause named the shard a second time. The error now
/// names the URL used (redacted) and where it came from, once.
#[test]
fn regression_override_errors_named_the_plans_url() {
    let Some((c, _, _, plan)) = two_to_three(Kind::Postgres, "ovr", true) else {
        return;
    };
    let server = Kind::Postgres.server_url().unwrap();
    let used = match server.rsplit_once('/') {
        Some((base, _)) => format!("{base}/rs_no_such_db_{}", std::process::id()),
        None => panic!("{server}"),
    };
    let used = used.replacen("://postgres@", "://postgres:s3cret@", 1);
    let out = c
        .cmd(&["apply", &plan, "--dry-run"])
        .env("RESHARD_SHARD_S2_URL", &used)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = format!("{}{}", stdout(&out), stderr(&out));
    let line = err
        .lines()
        .find(|l| l.contains("shard s2 ("))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("rs_no_such_db_"), "{line}");
    assert!(line.contains("from RESHARD_SHARD_S2_URL"), "{line}");
    assert!(!line.contains("s3cret"), "{line}");
    assert_eq!(line.matches("shard s2").count(), 1, "{line}");
}

/// `--create-tables` created a destination table without the source's CHECK constraints, and
/// said nothing. It refuses now, naming them, and writes nothing; without them it creates.
fn regression_create_tables_dropped_check_constraints(kind: Kind) {
    let Some((c, _, _, plan)) = two_to_three(kind, "chk", false) else {
        return;
    };
    let out = c.run(&["apply", &plan, "--dry-run", "--create-tables"]);
    assert_eq!(out.status.code(), Some(0), "no CHECK yet: {}", stderr(&out));
    let add = match kind {
        Kind::Sqlite => {
            // SQLite cannot add a constraint to a table: define users again with one.
            "ALTER TABLE users RENAME TO users_old; \
             CREATE TABLE users (id INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, \
             score REAL, CONSTRAINT score_ok CHECK (score > -1000)); \
             INSERT INTO users SELECT * FROM users_old; DROP TABLE users_old"
        }
        _ => "ALTER TABLE users ADD CONSTRAINT score_ok CHECK (score > -1000)",
    };
    for s in ["s0", "s1"] {
        c.db(s).exec(add);
    }
    let out = c.run(&["apply", &plan, "--yes", "--create-tables"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = format!("{}{}", stdout(&out), stderr(&out));
    assert!(err.contains("CHECK constraints"), "{err}");
    assert!(err.contains("--create-tables does not copy"), "{err}");
    if kind != Kind::Sqlite {
        assert!(err.contains("score_ok"), "{err}");
    }
    assert!(!c.table_exists("s2", "users"), "nothing created");
    assert!(!c.catalog_path().exists(), "nothing written");
}

/// The dry run of a plan already carried out (its job completed) is stale, and its moved rows
/// sit at the destinations; it also told the operator to pass --allow-existing, which would
/// not help: the remedy is a plan from the current map, which the stale refusal says.
fn regression_stale_dry_run_hinted_allow_existing(kind: Kind) {
    let Some((c, _, _, plan)) = two_to_three(kind, "stdr", true) else {
        return;
    };
    let out = c.run(&["apply", &plan, "--yes", "--complete", "--progress", "plain"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = c.run(&["apply", &plan, "--dry-run"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("stale plan"), "{text}");
    assert!(!text.contains("--allow-existing"), "{text}");
}
