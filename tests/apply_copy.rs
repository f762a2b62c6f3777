//! Full `reshard apply` for each kind of plan (modulo identity 4->8, modulo md5 4->5, range
//! split, ring add, modulo->ring) on each backend, with every shard compared row for row
//! afterwards, then `status` and `jobs` read back.

mod common;

use common::cluster::*;
use common::db::Kind;
use serde_json::Value;

pub struct Scenario {
    pub shards: usize,
    pub from: (Vec<&'static str>, Value),
    pub to: (Vec<&'static str>, Value),
}

pub fn scenario(name: &str) -> Scenario {
    let s = |n: usize| -> Vec<&'static str> {
        ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"][..n].to_vec()
    };
    match name {
        "modulo_identity_4_8" => Scenario {
            shards: 8,
            from: (s(4), modulo("identity", &s(4))),
            to: (s(8), modulo("identity", &s(8))),
        },
        "modulo_md5_4_5" => Scenario {
            shards: 5,
            from: (s(4), modulo("md5", &s(4))),
            to: (s(5), modulo("md5", &s(5))),
        },
        "range_split" => Scenario {
            shards: 3,
            from: (s(2), ranges(&["s0", "s1"], &[300])),
            to: (s(3), ranges(&["s0", "s2", "s1"], &[150, 300])),
        },
        "ring_add" => Scenario {
            shards: 4,
            from: (s(3), ring("md5", 16, &s(3))),
            to: (s(4), ring("md5", 16, &s(4))),
        },
        "modulo_to_ring" => Scenario {
            shards: 4,
            from: (s(3), modulo("identity", &s(3))),
            to: (s(4), ring("sha1", 16, &s(4))),
        },
        other => panic!("unknown scenario {other}"),
    }
}

fn full_apply(kind: Kind, name: &str) {
    let sc = scenario(name);
    let Some(c) = Cluster::create(kind, name, sc.shards) else {
        return;
    };
    let all: Vec<&str> = c.shards.keys().map(|s| s.as_str()).collect();
    c.create_tables(&all);
    let from = c.map(&sc.from.0, sc.from.1.clone());
    let to = c.map(&sc.to.0, sc.to.1.clone());
    c.populate(&from, 400, 2);
    let before = c.snapshot();
    let plan = c.write_plan("plan", &from, &to);
    let out = c.run(&[
        "apply",
        plan.to_str().unwrap(),
        "--yes",
        "--batch-size",
        "64",
        "--progress",
        "json",
    ]);
    assert!(out.status.success(), "{kind:?} {name}: {}", stderr(&out));
    // regression: flips, fences and notes were plain text amid the JSON lines.
    for l in stderr(&out).lines() {
        assert!(
            serde_json::from_str::<Value>(l).is_ok_and(|v| v["event"].is_string()),
            "{kind:?} {name}: not a JSON event line under --progress json: {l}"
        );
    }
    let job = job_id(&out).expect("job id printed");
    c.assert_copied(&before, &from, &to);

    let st = c.run(&["status", &job, "--format", "json"]);
    assert!(st.status.success(), "{}", stderr(&st));
    let v: Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["job"], job.as_str());
    assert_eq!(v["state"], "dual_write");
    let moves = v["moves"].as_array().unwrap();
    assert!(!moves.is_empty());
    for m in moves {
        assert_eq!(m["state"], "flipped", "{m}");
        assert_eq!(m["rows_copied"], m["rows_total"], "{m}");
        for f in ["id", "source", "destination"] {
            assert!(m[f].is_string(), "{f} in {m}");
        }
    }
    // The progress stream is JSON lines.
    let err = stderr(&out);
    assert!(
        err.lines()
            .filter(|l| l.starts_with('{'))
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "{err}"
    );
    let jobs = c.run(&["jobs"]);
    assert!(stdout(&jobs).contains(&job), "{}", stdout(&jobs));
}

macro_rules! per_backend {
    ($($name:ident),*) => {
        mod sqlite { use super::*; $(#[test] fn $name() { full_apply(Kind::Sqlite, stringify!($name)) })* }
        mod postgres { use super::*; $(#[test] fn $name() { full_apply(Kind::Postgres, stringify!($name)) })* }
        mod mysql { use super::*; $(#[test] fn $name() { full_apply(Kind::Mysql, stringify!($name)) })* }
    };
}

per_backend!(
    modulo_identity_4_8,
    modulo_md5_4_5,
    range_split,
    ring_add,
    modulo_to_ring
);
