//! suggest's choices on injected measurements: no database anywhere.

use std::collections::BTreeMap;

use super::*;
use crate::map::Key;
use crate::planner::plan;

pub(super) fn map(partitioning: &str, shards: &[&str]) -> Map {
    let shards: Vec<String> = shards
        .iter()
        .map(|s| format!("\"{s}\": \"sqlite://{s}.db\""))
        .collect();
    let text = format!(
        "{{\"shards\": {{{}}}, \"tables\": [{{\"name\": \"users\", \"key\": \"id\"}}], \
         \"partitioning\": {partitioning}}}",
        shards.join(", ")
    );
    Map::parse(&text, "test.json").expect("valid test map")
}

pub(super) fn add(names: &[&str]) -> Vec<(String, ShardUrl)> {
    names
        .iter()
        .map(|n| {
            let url = ShardUrl::parse(&format!("sqlite://{n}.db")).expect("url");
            (n.to_string(), url)
        })
        .collect()
}

pub(super) fn request(target: Target, names: &[&str]) -> Request {
    Request {
        target,
        add: add(names),
        to_kind: ToKind::Same,
        weigh: Weigh::Rows,
        remove: Vec::new(),
    }
}

/// What measure's exact pass finds in these keys (sorted): ranks `i * n / QUANTILES` and the
/// largest key.
pub(crate) fn exact_sample(keys: &[i64]) -> KeySample {
    let n = keys.len() as u64;
    let mut ranks: Vec<u64> = (0..QUANTILES).map(|i| i * n / QUANTILES).collect();
    ranks.push(n.saturating_sub(1));
    ranks.dedup();
    let mut points: Vec<(Bound, u64)> = Vec::new();
    if n > 0 {
        for r in ranks {
            let k = Bound::Int(keys[r as usize]);
            if points.last().is_none_or(|(l, _)| *l < k) {
                points.push((k, r));
            }
        }
    }
    KeySample {
        rows: n,
        points,
        method: QuantileMethod::Exact,
    }
}

pub(super) fn load(rows: u64) -> ShardLoad {
    let mut tables = BTreeMap::new();
    tables.insert(
        "users".to_string(),
        TableLoad {
            rows,
            ..TableLoad::default()
        },
    );
    ShardLoad {
        tables,
        ..ShardLoad::default()
    }
}

/// The guide's hot spot: three range shards, new ids pile into the last one (near the top of
/// its range, far from its key midpoint).
pub(super) fn hot_spot() -> (Map, Vec<i64>, Measurements) {
    let m = map(
        r#"{"kind": "range", "ranges": [
            {"from": null, "to": 100000, "shard": "s0"},
            {"from": 100000, "to": 200000, "shard": "s1"},
            {"from": 200000, "to": null, "shard": "s2"}]}"#,
        &["s0", "s1", "s2"],
    );
    let mut keys: Vec<i64> = (0..2_000).map(|i| i * 50).collect(); // s0
    keys.extend((0..2_000).map(|i| 100_000 + i * 50)); // s1
    keys.extend((0..500).map(|i| 200_000 + i * 1_000)); // old users of s2, sparse
    keys.extend(900_000..916_000); // the newest ids: dense, at the top
    let ranges: Vec<(Option<i64>, Option<i64>, &str)> = vec![
        (None, Some(100_000), "s0"),
        (Some(100_000), Some(200_000), "s1"),
        (Some(200_000), None, "s2"),
    ];
    let mut meas = Measurements::default();
    for (lo, hi, shard) in ranges {
        let inside: Vec<i64> = keys
            .iter()
            .copied()
            .filter(|k| lo.is_none_or(|l| *k >= l) && hi.is_none_or(|h| *k < h))
            .collect();
        meas.shards.insert(shard.into(), load(inside.len() as u64));
        let mut data = RangeData::default();
        data.tables.insert("users".into(), exact_sample(&inside));
        meas.ranges.push(data);
    }
    (m, keys, meas)
}

pub(super) fn count_between(keys: &[i64], lo: Option<&Bound>, hi: Option<&Bound>) -> usize {
    let v = |b: &Bound| match b {
        Bound::Int(v) => *v,
        Bound::Text(_) => unreachable!("integer test keys"),
    };
    keys.iter()
        .filter(|k| lo.is_none_or(|l| **k >= v(l)) && hi.is_none_or(|h| **k < v(h)))
        .count()
}

#[test]
fn hot_range_splits_at_the_data_median_not_the_key_midpoint() {
    let (m, keys, meas) = hot_spot();
    let s = suggest(&m, &meas, &request(Target::MaxShare(0.5), &["s3", "s4"])).expect("ok");
    let r = &s.report;
    assert_eq!(r.splits.len(), 1, "{}", render(r));
    let split = &r.splits[0];
    assert_eq!(
        (split.shard.as_str(), split.new_shard.as_str()),
        ("s2", "s3")
    );
    // The halves, counted on the data itself, are within 5% of each other.
    let lower = count_between(&keys, split.from.as_ref(), Some(&split.at)) as f64;
    let upper = count_between(&keys, Some(&split.at), split.to.as_ref()) as f64;
    assert!(
        (lower - upper).abs() / lower.max(upper) <= 0.05,
        "{lower} / {upper}"
    );
    assert_eq!(
        (split.rows_lower as f64, split.rows_upper as f64),
        (lower, upper)
    );
    // The guide's key midpoint leaves nearly every row on one side.
    let mid = split
        .midpoint
        .as_ref()
        .expect("midpoint shown for integer keys");
    let (a, b) = (mid.rows_lower as f64, mid.rows_upper as f64);
    assert!(a.min(b) / a.max(b) < 0.1, "midpoint split {a} / {b}");
    // Its rows are estimated from the quantiles; counted on the data it is as lopsided.
    let below = count_between(&keys, split.from.as_ref(), Some(&mid.at)) as f64;
    assert!(below / (lower + upper - below) < 0.1, "{below}");
    assert!(r.reached_target);
    assert_eq!(r.added_shards, vec!["s3"]);
    assert_eq!(r.unused_shards, vec!["s4"]);
    assert!(render(r).contains("for contrast, the key midpoint"));
    // The map routes the upper half to the new shard, and plan accepts it.
    let p = s.map.compile();
    let owner = |k: i64| p.shards[p.owner_index(&Key::Int(k)).expect("routes")].clone();
    assert_eq!(owner(915_000), "s3");
    assert_eq!(owner(200_000), "s2");
    let plan = plan(&m, &s.map).expect("plan accepts the suggested map");
    assert_eq!(plan.summary.added_shards, vec!["s3"]);
    assert_eq!(plan.moves.len(), 1);
}

#[test]
fn splits_repeat_until_the_target_and_say_when_shards_run_out() {
    let (m, _, meas) = hot_spot();
    let s = suggest(
        &m,
        &meas,
        &request(Target::MaxShare(0.21), &["s3", "s4", "s5"]),
    )
    .expect("ok");
    // 80% in s2: halves of 40%, then each of them halved again.
    assert_eq!(s.report.splits.len(), 3, "{}", render(&s.report));
    assert!(
        s.report.after.iter().all(|r| r.share <= 0.21),
        "{}",
        render(&s.report)
    );
    assert!(s.report.reached_target);

    let s = suggest(&m, &meas, &request(Target::MaxShare(0.1), &["s3"])).expect("ok");
    assert!(!s.report.reached_target);
    assert!(
        s.report
            .notes
            .iter()
            .any(|n| n.contains("no new shard is left")),
        "{:?}",
        s.report.notes
    );
    Map::from_value(
        &serde_json::to_value(&s.map).expect("json"),
        "suggested.json",
    )
    .expect("the suggested map validates");
}

#[test]
fn a_balanced_range_map_is_left_unchanged() {
    let (m, _, meas) = hot_spot();
    let s = suggest(&m, &meas, &request(Target::MaxShare(0.9), &["s3"])).expect("ok");
    assert_eq!(s.map, m);
    assert!(s.report.splits.is_empty() && s.report.reached_target);
    assert_eq!(s.report.rows_moved, 0);
}

/// Ring measurements from real keys: each node holds the keys it owns.
pub(super) fn ring_measured(m: &Map, keys: u64) -> Measurements {
    let p = m.compile();
    let mut rows: BTreeMap<String, u64> = BTreeMap::new();
    for k in 0..keys as i64 {
        let i = p.owner_index(&Key::Int(k)).expect("ring routes any key");
        *rows.entry(p.shards[i].clone()).or_default() += 1;
    }
    Measurements {
        shards: rows.into_iter().map(|(s, r)| (s, load(r))).collect(),
        ..Measurements::default()
    }
}

fn actual_max_share(m: &Map, keys: u64) -> f64 {
    let meas = ring_measured(m, keys);
    let rows: BTreeMap<String, f64> = meas
        .shards
        .iter()
        .map(|(s, l)| (s.clone(), l.rows() as f64))
        .collect();
    max_share(&rows)
}

#[test]
fn ring_of_four_by_eight_gets_under_the_target_moving_no_more_than_reported() {
    let m = map(
        r#"{"kind": "ring", "hash": "sha1", "vnodes": 8, "nodes": ["s0", "s1", "s2", "s3"]}"#,
        &["s0", "s1", "s2", "s3"],
    );
    let keys = 40_000;
    let meas = ring_measured(&m, keys);
    let before = actual_max_share(&m, keys);
    let target = 0.24;
    assert!(before > target, "the fixture must be imbalanced: {before}");
    let s = suggest(&m, &meas, &request(Target::MaxShare(target), &["s4", "s5"])).expect("ok");
    let r = &s.report;
    assert!(r.reached_target, "{}", render(r));
    let chosen = r.chosen.as_deref().expect("an option is chosen");
    let c = r.options.iter().find(|o| o.name == chosen).expect("listed");
    assert!(c.meets_target && c.max_share_after <= target);
    // The plan of the written map moves no more than the report said.
    let p = plan(&m, &s.map).expect("plan");
    assert!(p.summary.moved_fraction <= r.moved_fraction + 1e-12);
    assert!(p.summary.moved_fraction <= c.moved_fraction + 1e-12);
    // And the keys themselves, routed by the new map, land under the target (within the
    // sampling noise of 40,000 keys).
    assert!(actual_max_share(&s.map, keys) <= target + 0.01);
    // No feasible option moves fewer keys than the chosen one.
    for o in r.options.iter().filter(|o| o.meets_target) {
        assert!(
            o.moved_fraction >= c.moved_fraction,
            "{} beats {chosen}",
            o.name
        );
    }
    assert!(r.notes[0].contains("8 vnodes per node"), "{:?}", r.notes);
}

#[test]
fn ring_with_shards_adds_exactly_that_many() {
    let m = map(
        r#"{"kind": "ring", "hash": "md5", "vnodes": 16, "nodes": ["s0", "s1", "s2"]}"#,
        &["s0", "s1", "s2"],
    );
    let meas = ring_measured(&m, 20_000);
    let s = suggest(&m, &meas, &request(Target::Shards(5), &["s3", "s4", "s5"])).expect("ok");
    assert_eq!(s.report.added_shards, vec!["s3", "s4"]);
    assert_eq!(s.map.partitioning.owners().len(), 5);
    assert!(s.report.options.iter().all(|o| o.nodes_added.len() == 2));
}

/// A modulo map of three shards, 5,000 rows each.
pub(super) fn modulo3() -> (Map, Measurements) {
    let m = map(
        r#"{"kind": "modulo", "hash": "md5", "shards": ["s0", "s1", "s2"]}"#,
        &["s0", "s1", "s2"],
    );
    let mut meas = Measurements::default();
    for s in ["s0", "s1", "s2"] {
        meas.shards.insert(s.into(), load(5_000));
    }
    (m, meas)
}

#[test]
fn modulo_reports_both_costs_and_writes_the_kind_asked_for() {
    let (m, meas) = modulo3();
    let mut req = request(Target::MaxShare(0.26), &["s3"]);
    let grow = suggest(&m, &meas, &req).expect("ok");
    assert_eq!(grow.map.partitioning.kind(), "modulo");
    assert_eq!(grow.map.partitioning.owners().len(), 4);
    assert!(grow.report.options.iter().any(|o| o.kind == "ring"));
    req.to_kind = ToKind::Ring;
    let ring = suggest(&m, &meas, &req).expect("ok");
    assert_eq!(ring.map.partitioning.kind(), "ring");
    // 3 -> 4 by modulus moves 3/4 of the keys.
    assert!((grow.report.moved_fraction - 0.75).abs() < 1e-9);
    assert!(grow.report.notes[0].contains("moving to a ring"));
    plan(&m, &ring.map).expect("plan accepts the ring");
}

#[test]
fn same_measurements_same_map_and_report() {
    let (m, _, meas) = hot_spot();
    let req = request(Target::MaxShare(0.2), &["s3", "s4", "s5"]);
    let a = suggest(&m, &meas, &req).expect("ok");
    let b = suggest(&m, &meas, &req).expect("ok");
    assert_eq!(a.report.to_json(), b.report.to_json());
    assert_eq!(render(&a.report), render(&b.report));
    assert_eq!(
        serde_json::to_string(&a.map).expect("json"),
        serde_json::to_string(&b.map).expect("json")
    );
    let r = map(
        r#"{"kind": "ring", "hash": "sha1", "vnodes": 8, "nodes": ["s0", "s1", "s2", "s3"]}"#,
        &["s0", "s1", "s2", "s3"],
    );
    let rm = ring_measured(&r, 10_000);
    let req = request(Target::MaxShare(0.24), &["s4"]);
    let (x, y) = (
        suggest(&r, &rm, &req).expect("ok"),
        suggest(&r, &rm, &req).expect("ok"),
    );
    assert_eq!(x.report.to_json(), y.report.to_json());
}

#[test]
fn bad_requests_name_the_option() {
    let (m, _, meas) = hot_spot();
    let e = suggest(&m, &meas, &request(Target::MaxShare(1.5), &["s0"])).unwrap_err();
    assert!(
        e.problems.iter().any(|p| p.starts_with("--max-share")),
        "{e}"
    );
    assert!(e.problems.iter().any(|p| p.starts_with("--add[0]")), "{e}");
    let mut req = request(Target::Shards(2), &[]);
    req.to_kind = ToKind::Ring;
    let e = suggest(&m, &meas, &req).unwrap_err();
    assert_eq!(e.problems.len(), 2, "{e}");
}

#[test]
fn text_keys_split_at_a_measured_key() {
    let m = map(
        r#"{"kind": "range", "ranges": [
            {"from": null, "to": "m", "shard": "s0"},
            {"from": "m", "to": null, "shard": "s1"}]}"#,
        &["s0", "s1"],
    );
    let words: Vec<String> = (0..1000).map(|i| format!("u{i:04}")).collect();
    let n = words.len() as u64;
    let points: Vec<(Bound, u64)> = (0..QUANTILES)
        .map(|i| i * n / QUANTILES)
        .map(|r| (Bound::Text(words[r as usize].clone()), r))
        .collect();
    let mut meas = Measurements::default();
    meas.shards.insert("s0".into(), load(0));
    meas.shards.insert("s1".into(), load(n));
    meas.ranges.push(RangeData::default());
    let mut d = RangeData::default();
    d.tables.insert(
        "users".into(),
        KeySample {
            rows: n,
            points,
            method: QuantileMethod::Histogram,
        },
    );
    meas.ranges.push(d);
    let s = suggest(&m, &meas, &request(Target::MaxShare(0.6), &["s2"])).expect("ok");
    assert_eq!(s.report.splits[0].at, Bound::Text("u0500".into()));
    assert!(s.report.splits[0].midpoint.is_none());
    plan(&m, &s.map).expect("plan");
}

#[test]
fn the_median_weighs_every_table() {
    // users: one row per id 0..1000; posts: 3000 rows, all of ids 900..1000. Together the
    // median sits where users' and posts' rows balance, far above users' own median (500).
    let m = map(
        r#"{"kind": "range", "ranges": [{"from": null, "to": null, "shard": "s0"}]}"#,
        &["s0"],
    );
    let users: Vec<i64> = (0..1000).collect();
    let posts: Vec<i64> = (0..3000).map(|i| 900 + i / 30).collect();
    let mut d = RangeData::default();
    d.tables.insert("users".into(), exact_sample(&users));
    d.tables.insert("posts".into(), exact_sample(&posts));
    let mut meas = Measurements::default();
    meas.shards.insert("s0".into(), load(4000));
    meas.ranges.push(d);
    let s = suggest(&m, &meas, &request(Target::MaxShare(0.6), &["s1"])).expect("ok");
    let split = &s.report.splits[0];
    let Bound::Int(at) = split.at else {
        panic!("integer split key")
    };
    let lower = users.iter().chain(&posts).filter(|k| **k < at).count() as f64;
    assert!(
        (lower / 4000.0 - 0.5).abs() <= 0.05,
        "split at {at}: {lower} below"
    );
    assert!(at > 900, "{at}");
}
