//! Issue 12, "edited plans": the fingerprint covers only a plan's maps, so a hand edit of its
//! moves, segments or fractions used to pass every check and route keys to a shard that never
//! received their rows. `apply` (and `--dry-run`) now recompute the plan from its maps and
//! refuse any difference with exit 2, naming the JSON path, before touching the catalog or a
//! shard.

mod common;

use common::cluster::*;
use common::db::Kind;
use serde_json::{json, Value};

/// A cluster of three shards with both tables everywhere, populated under `from`, and the
/// plan `from` -> `to` written as plan.json.
fn setup(kind: Kind, tag: &str, from: Value, to: Value) -> Option<(Cluster, Value)> {
    let c = Cluster::create(kind, tag, 3)?;
    c.create_tables(&["s0", "s1", "s2"]);
    let shards = |p: &Value| -> Vec<String> {
        let key = if p["kind"] == "ring" {
            "nodes"
        } else {
            "shards"
        };
        let list = if p["kind"] == "range" || p.get("ranges").is_some() {
            p["ranges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["shard"].as_str().unwrap().to_string())
                .collect()
        } else {
            p[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        let mut list = list;
        list.sort();
        list.dedup();
        list
    };
    let (fs, ts) = (shards(&from), shards(&to));
    let fs: Vec<&str> = fs.iter().map(String::as_str).collect();
    let ts: Vec<&str> = ts.iter().map(String::as_str).collect();
    let from = c.map(&fs, from);
    let to = c.map(&ts, to);
    c.populate(&from, 120, 2);
    let path = c.write_plan("plan", &from, &to);
    let plan: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    Some((c, plan))
}

fn modulo_2_to_3(kind: Kind, tag: &str) -> Option<(Cluster, Value)> {
    setup(
        kind,
        tag,
        modulo("identity", &["s0", "s1"]),
        modulo("identity", &["s0", "s1", "s2"]),
    )
}

/// Writes `edited` as `name`.json, then checks that `apply --dry-run` and `apply --yes` both
/// exit 2 naming `path` and telling how to regenerate, and that nothing was written anywhere.
fn assert_refused(c: &Cluster, name: &str, edited: &Value, path: &str) {
    let file = format!("{name}.json");
    std::fs::write(
        c.catalog_path().with_file_name(&file),
        serde_json::to_string_pretty(edited).unwrap(),
    )
    .unwrap();
    let catalog_before = std::fs::read(c.catalog_path()).ok();
    let before = c.snapshot();
    for args in [
        vec!["apply", file.as_str(), "--dry-run"],
        vec!["apply", file.as_str(), "--yes", "--progress", "plain"],
        vec![
            "apply",
            file.as_str(),
            "--yes",
            "--complete",
            "--progress",
            "plain",
        ],
    ] {
        let out = c.run(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {err}");
        assert!(
            err.contains(&format!("{file}: {path} differs from what the maps give")),
            "{name} {args:?}: {err}"
        );
        assert!(
            err.contains(&format!("reshard plan --from OLD --to NEW -o {file}")),
            "{name}: {err}"
        );
        assert!(
            !stdout(&out).contains("would start"),
            "{name}: {}",
            stdout(&out)
        );
        assert_eq!(
            std::fs::read(c.catalog_path()).ok(),
            catalog_before,
            "{name} {args:?}: the catalog was written"
        );
        assert_eq!(c.snapshot(), before, "{name} {args:?}: a shard was written");
    }
}

fn edit(plan: &Value, f: impl FnOnce(&mut Value)) -> Value {
    let mut p = plan.clone();
    f(&mut p);
    p
}

fn regression_edited_plan_moves_deleted_is_refused(kind: Kind) {
    let Some((c, plan)) = modulo_2_to_3(kind, "tdel") else {
        return;
    };
    let n = plan["moves"].as_array().unwrap().len();
    assert!(n >= 2, "{plan}");
    let last = edit(&plan, |p| {
        p["moves"].as_array_mut().unwrap().pop();
    });
    assert_refused(&c, "last-deleted", &last, &format!("moves[{}]", n - 1));
    let first = edit(&plan, |p| {
        p["moves"].as_array_mut().unwrap().remove(0);
    });
    assert_refused(&c, "first-deleted", &first, "moves[0].id");
    assert!(
        !c.catalog_path().exists(),
        "a refused plan created the catalog"
    );
}

fn edited_moves_are_refused(kind: Kind) {
    let Some((c, plan)) = modulo_2_to_3(kind, "tmov") else {
        return;
    };
    let n = plan["moves"].as_array().unwrap().len();
    let cases: Vec<(&str, Value, String)> = vec![
        (
            "empty",
            edit(&plan, |p| p["moves"] = json!([])),
            "moves[0]".into(),
        ),
        (
            "added",
            edit(&plan, |p| {
                let m = p["moves"][0].clone();
                p["moves"].as_array_mut().unwrap().push(m);
            }),
            format!("moves[{n}]"),
        ),
        (
            "source",
            edit(&plan, |p| {
                let other = if p["moves"][0]["source"] == "s0" {
                    "s1"
                } else {
                    "s0"
                };
                p["moves"][0]["source"] = json!(other);
            }),
            "moves[0].source".into(),
        ),
        (
            "destination",
            edit(&plan, |p| {
                let d = &p["moves"][1]["destination"];
                let other = if d == "s2" { "s1" } else { "s2" };
                p["moves"][1]["destination"] = json!(other);
            }),
            "moves[1].destination".into(),
        ),
        (
            "residue",
            edit(&plan, |p| {
                let r = &mut p["moves"][0]["segments"]["residues"][0];
                *r = json!((r.as_u64().unwrap() + 1) % 6);
            }),
            "moves[0].segments.residues[0]".into(),
        ),
        (
            "fraction",
            edit(&plan, |p| p["moves"][0]["fraction"] = json!(0.5)),
            "moves[0].fraction".into(),
        ),
        (
            "moved-fraction",
            edit(&plan, |p| p["summary"]["moved_fraction"] = json!(0.01)),
            "summary.moved_fraction".into(),
        ),
    ];
    for (name, edited, path) in &cases {
        assert_refused(&c, name, edited, path);
    }
    assert!(
        !c.catalog_path().exists(),
        "a refused plan created the catalog"
    );
}

fn edited_interval_is_refused(kind: Kind) {
    let Some((c, plan)) = setup(
        kind,
        "tint",
        ranges(&["s0", "s1"], &[60]),
        ranges(&["s0", "s2", "s1"], &[30, 60]),
    ) else {
        return;
    };
    assert_eq!(plan["moves"][0]["segments"]["kind"], "ranges", "{plan}");
    let edited = edit(&plan, |p| {
        let to = &mut p["moves"][0]["segments"]["ranges"][0]["to"];
        *to = json!(to.as_i64().unwrap() + 5);
    });
    assert_refused(&c, "interval", &edited, "moves[0].segments.ranges[0].to");
}

fn edited_arc_is_refused(kind: Kind) {
    let Some((c, plan)) = setup(
        kind,
        "tarc",
        ring("md5", 8, &["s0", "s1"]),
        ring("md5", 8, &["s0", "s1", "s2"]),
    ) else {
        return;
    };
    assert_eq!(plan["moves"][0]["segments"]["kind"], "arcs", "{plan}");
    let edited = edit(&plan, |p| {
        let from = &mut p["moves"][0]["segments"]["arcs"][0]["from"];
        let s = from.as_str().unwrap();
        let flipped = if s.starts_with('0') { "1" } else { "0" };
        *from = json!(format!("{flipped}{}", &s[1..]));
    });
    assert_refused(&c, "arc", &edited, "moves[0].segments.arcs[0].from");
}

/// The control: an unedited plan, even reformatted, still dry-runs cleanly.
fn unedited_plan_still_dry_runs(kind: Kind) {
    let Some((c, plan)) = modulo_2_to_3(kind, "tok") else {
        return;
    };
    let before = c.snapshot();
    // Compact JSON: formatting is not content.
    let file = c.catalog_path().with_file_name("compact.json");
    std::fs::write(&file, serde_json::to_string(&plan).unwrap()).unwrap();
    for p in ["plan.json", "compact.json"] {
        let out = c.run(&["apply", p, "--dry-run"]);
        assert_eq!(out.status.code(), Some(0), "{p}: {}", stderr(&out));
        assert!(stdout(&out).contains("would start"), "{}", stdout(&out));
    }
    assert!(!c.catalog_path().exists());
    assert_eq!(c.snapshot(), before);
}

macro_rules! per_backend {
    ($($name:ident),*) => {
        mod sqlite { use super::*; $(#[test] fn $name() { super::$name(Kind::Sqlite) })* }
        mod postgres { use super::*; $(#[test] fn $name() { super::$name(Kind::Postgres) })* }
        mod mysql { use super::*; $(#[test] fn $name() { super::$name(Kind::Mysql) })* }
    };
}

per_backend!(
    regression_edited_plan_moves_deleted_is_refused,
    edited_moves_are_refused,
    edited_interval_is_refused,
    edited_arc_is_refused,
    unedited_plan_still_dry_runs
);
