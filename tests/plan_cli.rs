//! `reshard plan` through the real binary: bad input (exit 2, file + JSON path, nothing
//! written), --check on every worked example, the text table's width, JSON output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_reshard");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run reshard")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const GOOD: &str = r#"{
  "shards": {"s0": "sqlite://data/s0.db", "s1": "sqlite://data/s1.db", "s2": "sqlite://data/s2.db"},
  "tables": [{"name": "users", "key": "id"}, {"name": "posts", "key": "user_id"}],
  "partitioning": {"kind": "modulo", "hash": "identity", "shards": ["s0", "s1"]}
}"#;

/// GOOD with its partitioning replaced.
fn with_part(part: &str) -> String {
    GOOD.replace(
        r#"{"kind": "modulo", "hash": "identity", "shards": ["s0", "s1"]}"#,
        part,
    )
}

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new(old: &str, new: &str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old.json"), old).unwrap();
        std::fs::write(dir.path().join("new.json"), new).unwrap();
        Case { dir }
    }
    fn p(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
    /// Runs `plan -o`, asserting exit 2, each wanted message on stderr, and no plan written.
    fn rejects(&self, wanted: &[&str]) {
        let out = self.p("plan.json");
        let o = run(&[
            "plan",
            "--from",
            &self.p("old.json"),
            "--to",
            &self.p("new.json"),
            "-o",
            &out,
        ]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "stderr: {err}");
        for w in wanted {
            assert!(err.contains(w), "wanted {w:?} in: {err}");
        }
        assert!(
            !Path::new(&out).exists(),
            "-o wrote a plan despite bad input"
        );
        let leftovers: Vec<_> = std::fs::read_dir(self.dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 2, "only the two maps remain");
    }
}

/// The bad map goes in as new.json; GOOD is old.json.
fn bad_new(new: &str, wanted: &[&str]) {
    Case::new(GOOD, new).rejects(wanted);
}

#[test]
fn malformed_json_names_line_and_column() {
    bad_new(
        "{\n  \"shards\": {,\n}",
        &["new.json: malformed JSON at line 2 column"],
    );
}

#[test]
fn unknown_field() {
    bad_new(
        &GOOD.replace("\"tables\"", "\"colour\": 1, \"tables\""),
        &["new.json: colour: unknown field"],
    );
    bad_new(
        &with_part(r#"{"kind": "modulo", "hash": "md5", "shards": ["s0"], "vnodes": 3}"#),
        &["new.json: partitioning.vnodes: unknown field"],
    );
}

#[test]
fn unknown_shard_name() {
    bad_new(
        &with_part(r#"{"kind": "modulo", "hash": "identity", "shards": ["s0", "s9"]}"#),
        &["new.json: partitioning.shards[1]: unknown shard \"s9\""],
    );
}

#[test]
fn no_shards() {
    let m = r#"{"shards": {}, "tables": [{"name": "users", "key": "id"}, {"name": "posts", "key": "user_id"}],
      "partitioning": {"kind": "modulo", "hash": "identity", "shards": ["s0"]}}"#;
    bad_new(m, &["new.json: shards: no shards"]);
}

#[test]
fn duplicate_nodes() {
    bad_new(
        &with_part(r#"{"kind": "ring", "hash": "sha1", "vnodes": 8, "nodes": ["s0", "s1", "s0"]}"#),
        &["new.json: partitioning.nodes[2]: duplicate shard \"s0\""],
    );
}

#[test]
fn vnodes_zero() {
    bad_new(
        &with_part(r#"{"kind": "ring", "hash": "sha1", "vnodes": 0, "nodes": ["s0"]}"#),
        &["new.json: partitioning.vnodes: must be at least 1"],
    );
}

#[test]
fn vnodes_absurd() {
    bad_new(
        &with_part(r#"{"kind": "ring", "hash": "sha1", "vnodes": 10000000, "nodes": ["s0"]}"#),
        &["new.json: partitioning.vnodes: 10000000 is absurdly many"],
    );
}

#[test]
fn range_gap() {
    bad_new(
        &with_part(
            r#"{"kind": "range", "ranges": [{"from": null, "to": 10, "shard": "s0"}, {"from": 20, "to": null, "shard": "s1"}]}"#,
        ),
        &["new.json: partitioning.ranges[1]: gap: ranges[0] ends at 10 but this range starts at 20"],
    );
}

#[test]
fn range_overlap() {
    bad_new(
        &with_part(
            r#"{"kind": "range", "ranges": [{"from": null, "to": 10, "shard": "s0"}, {"from": 5, "to": null, "shard": "s1"}]}"#,
        ),
        &["new.json: partitioning.ranges[1]: overlaps ranges[0]"],
    );
}

#[test]
fn range_from_not_below_to() {
    bad_new(
        &with_part(
            r#"{"kind": "range", "ranges": [{"from": null, "to": 10, "shard": "s0"}, {"from": 10, "to": 10, "shard": "s1"}, {"from": 10, "to": null, "shard": "s1"}]}"#,
        ),
        &["new.json: partitioning.ranges[1]: from (10) must be less than to (10)"],
    );
}

#[test]
fn hash_the_kind_does_not_take() {
    bad_new(
        &with_part(r#"{"kind": "ring", "hash": "identity", "vnodes": 8, "nodes": ["s0"]}"#),
        &["new.json: partitioning.hash: ring does not take hash \"identity\""],
    );
}

#[test]
fn table_listed_twice() {
    bad_new(
        &GOOD.replace(
            r#"{"name": "posts", "key": "user_id"}"#,
            r#"{"name": "users", "key": "id"}"#,
        ),
        &["new.json: tables[1].name: table users is listed twice"],
    );
}

#[test]
fn identifiers_must_be_plain() {
    bad_new(
        &GOOD.replace(
            r#""key": "user_id""#,
            r#""key": "user_id; drop table users""#,
        ),
        &["new.json: tables[1].key: \"user_id; drop table users\" is not a plain SQL identifier"],
    );
}

#[test]
fn every_problem_in_both_files_at_once() {
    let old = with_part(r#"{"kind": "ring", "hash": "sha1", "vnodes": 0, "nodes": ["s0"]}"#);
    let new = with_part(r#"{"kind": "modulo", "hash": "identity", "shards": ["s0", "s7", "s0"]}"#);
    Case::new(&old, &new).rejects(&[
        "old.json: partitioning.vnodes",
        "new.json: partitioning.shards[1]: unknown shard \"s7\"",
        "new.json: partitioning.shards[2]: duplicate shard",
    ]);
}

#[test]
fn maps_must_list_the_same_tables() {
    bad_new(
        &GOOD.replace(
            r#"{"name": "posts", "key": "user_id"}"#,
            r#"{"name": "comments", "key": "user_id"}"#,
        ),
        &[
            "new.json: tables[1].name: table comments is not in",
            "old.json: tables[1].name: table posts is not in",
        ],
    );
    bad_new(
        &GOOD.replace(r#""key": "user_id""#, r#""key": "author_id""#),
        &["new.json: tables[1].key: table posts is sharded by author_id here but by user_id in"],
    );
}

#[test]
fn key_kinds_must_be_compatible() {
    bad_new(
        &with_part(
            r#"{"kind": "range", "ranges": [{"from": null, "to": "m", "shard": "s0"}, {"from": "m", "to": null, "shard": "s1"}]}"#,
        ),
        &[
            "new.json: partitioning: routes text keys, but",
            "routes integer keys",
        ],
    );
}

fn examples() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("plans");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("plan.json").exists())
        .collect();
    dirs.sort();
    dirs
}

fn check_args(dir: &Path, plan: &Path) -> Vec<String> {
    [
        "plan",
        "--from",
        &dir.join("old.json").display().to_string(),
        "--to",
        &dir.join("new.json").display().to_string(),
        "--check",
        &plan.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn every_worked_example_is_up_to_date() {
    let dirs = examples();
    assert!(dirs.len() >= 5, "{dirs:?}");
    for d in dirs {
        let o = Command::new(BIN)
            .args(check_args(&d, &d.join("plan.json")))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}: {}", d.display(), stderr(&o));
        assert!(stdout(&o).contains("up to date"));
    }
}

#[test]
fn check_reports_a_stale_plan_with_the_fields_that_differ() {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/modulo-4-to-8");
    let tmp = tempfile::tempdir().unwrap();
    let stale = tmp.path().join("plan.json");
    let text = std::fs::read_to_string(d.join("plan.json")).unwrap();
    std::fs::write(
        &stale,
        text.replace("\"destination\": \"s7\"", "\"destination\": \"s6\""),
    )
    .unwrap();
    let o = Command::new(BIN)
        .args(check_args(&d, &stale))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("moves[3].destination: \"s7\" vs \"s6\"")
            || stderr(&o).contains("moves[3].destination: \"s6\" vs \"s7\""),
        "{}",
        stderr(&o)
    );

    // A plan of other maps: the fingerprint differs.
    let other = Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/ring-add/plan.json");
    let o = Command::new(BIN)
        .args(check_args(&d, &other))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("fingerprint:"), "{}", stderr(&o));
    // regression_check_truncated_fingerprints_and_printed_placeholder_paths: both
    // fingerprints in full, and the command to regenerate names the real files.
    let full = |p: &Path| {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        v["fingerprint"].as_str().unwrap().to_string()
    };
    for fp in [full(&d.join("plan.json")), full(&other)] {
        assert!(
            stderr(&o).contains(&format!("\"{fp}\"")),
            "{fp}: {}",
            stderr(&o)
        );
    }
    let hint = format!(
        "reshard plan --from {} --to {} -o {}",
        d.join("old.json").display(),
        d.join("new.json").display(),
        other.display()
    );
    assert!(stderr(&o).contains(&hint), "{hint}: {}", stderr(&o));

    // Not JSON at all: bad input.
    std::fs::write(&stale, "not json").unwrap();
    let o = Command::new(BIN)
        .args(check_args(&d, &stale))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("malformed JSON at line 1"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn output_is_deterministic_and_written_atomically() {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/ring-add");
    let (old, new) = (d.join("old.json"), d.join("new.json"));
    let tmp = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    for name in ["a.json", "b.json"] {
        let out = tmp.path().join(name);
        let o = run(&[
            "plan",
            "--from",
            old.to_str().unwrap(),
            "--to",
            new.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        outputs.push(std::fs::read(&out).unwrap());
    }
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        2,
        "no temp files left"
    );
    let o = run(&[
        "plan",
        "--from",
        old.to_str().unwrap(),
        "--to",
        new.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(o.stdout, outputs[0]);
    let plan = reshard::plan::Plan::parse(&stdout(&o), "stdout").unwrap();
    assert!(plan.moves.iter().all(|m| m.destination == "s4"));
}

#[test]
fn text_table_fits_a_terminal_and_shows_moves_and_balance() {
    for d in examples() {
        let o = run(&[
            "plan",
            "--from",
            d.join("old.json").to_str().unwrap(),
            "--to",
            d.join("new.json").to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0));
        let text = stdout(&o);
        for line in text.lines() {
            assert!(line.chars().count() <= 100, "{}: {line:?}", d.display());
        }
        assert!(text.contains("balance"), "{text}");
        assert!(text.contains("moved"), "{text}");
    }
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/modulo-4-to-8");
    let o = run(&[
        "plan",
        "--from",
        d.join("old.json").to_str().unwrap(),
        "--to",
        d.join("new.json").to_str().unwrap(),
    ]);
    let text = stdout(&o);
    assert!(text.contains("m4    s3 -> s7"), "{text}");
    assert!(text.contains("moved 50.000% of keys in 4 moves"), "{text}");
}

/// A range split on real ids says how many integer keys move, not "0.000%" of the 2^64 key
/// space (issue 17).
#[test]
fn regression_range_plans_on_real_ids_moved_0_percent() {
    let dir = tempfile::tempdir().unwrap();
    let map = |split: i64| {
        serde_json::json!({"shards": {"a": "sqlite://a.db", "b": "sqlite://b.db"},
            "tables": [{"name": "users", "key": "id"}],
            "partitioning": {"kind": "range", "ranges": [
                {"from": null, "to": split, "shard": "a"},
                {"from": split, "to": null, "shard": "b"}]}})
    };
    let (old, new) = (dir.path().join("old.json"), dir.path().join("new.json"));
    std::fs::write(&old, map(100_000).to_string()).unwrap();
    std::fs::write(&new, map(25_000).to_string()).unwrap();
    let o = run(&[
        "plan",
        "--from",
        old.to_str().unwrap(),
        "--to",
        new.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("moved 75,000 integer keys in 1 moves"),
        "{text}"
    );
    assert!(text.contains("75,000  [25000, 100000)"), "{text}");
    assert!(!text.contains("moved 0.000%"), "{text}");
    assert!(text.contains("shares are of the whole key space"), "{text}");
    for line in text.lines() {
        assert!(line.chars().count() <= 100, "{line:?}");
    }
}
