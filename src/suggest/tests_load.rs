//! suggest's load basis (`--weigh`) and `--remove` on injected measurements: no database.

use super::tests::{count_between, load, map, request};
use super::*;
use crate::plan::Segments;
use crate::planner::plan;

/// Three range shards of 100,000 ids each, with `rows[i]` evenly spaced keys in range i.
fn three(rows: [i64; 3]) -> (Map, Vec<i64>, Measurements) {
    four_or_three(&rows)
}

fn four_or_three(rows: &[i64]) -> (Map, Vec<i64>, Measurements) {
    let names: Vec<String> = (0..rows.len()).map(|i| format!("s{i}")).collect();
    let ranges: Vec<String> = (0..rows.len())
        .map(|i| {
            let from = if i == 0 {
                "null".into()
            } else {
                (i * 100_000).to_string()
            };
            let to = if i + 1 == rows.len() {
                "null".into()
            } else {
                ((i + 1) * 100_000).to_string()
            };
            format!(r#"{{"from": {from}, "to": {to}, "shard": "s{i}"}}"#)
        })
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let m = map(
        &format!(r#"{{"kind": "range", "ranges": [{}]}}"#, ranges.join(", ")),
        &refs,
    );
    let mut keys = Vec::new();
    let mut meas = Measurements::default();
    for (i, n) in rows.iter().enumerate() {
        let base = i as i64 * 100_000;
        let mine: Vec<i64> = (0..*n).map(|k| base + k * (100_000 / n)).collect();
        meas.shards
            .insert(names[i].clone(), load(mine.len() as u64));
        let mut data = RangeData::default();
        data.tables
            .insert("users".into(), super::tests::exact_sample(&mine));
        meas.ranges.push(data);
        keys.extend(mine);
    }
    (m, keys, meas)
}

/// Gives each shard this many writes per second on `users`.
fn with_writes(meas: &mut Measurements, rates: &[(&str, f64)]) {
    meas.sample_seconds = Some(2.0);
    for (s, r) in rates {
        let l = meas.shards.get_mut(*s).expect("a measured shard");
        l.tables.get_mut("users").expect("users").writes_per_second = Some(*r);
        l.writes_source = Some("pg_stat_user_tables".into());
    }
}

fn weighed(target: Target, add: &[&str], weigh: Weigh, remove: &[&str]) -> Request {
    let mut r = request(target, add);
    r.weigh = weigh;
    r.remove = remove.iter().map(|s| s.to_string()).collect();
    r
}

#[test]
fn shares_come_from_write_rates_when_asked() {
    let (m, keys, mut meas) = three([1_000, 1_000, 1_000]);
    with_writes(&mut meas, &[("s0", 10.0), ("s1", 10.0), ("s2", 80.0)]);
    // By rows every range holds a third: nothing to do under 0.5.
    let by_rows = suggest(
        &m,
        &meas,
        &weighed(Target::MaxShare(0.5), &["s3"], Weigh::Rows, &[]),
    )
    .expect("ok");
    assert!(
        by_rows.report.splits.is_empty(),
        "{}",
        render(&by_rows.report)
    );
    let s = suggest(
        &m,
        &meas,
        &weighed(Target::MaxShare(0.5), &["s3"], Weigh::Writes, &[]),
    )
    .expect("ok");
    let r = &s.report;
    let share = |rows: &[ShardRow], n: &str| rows.iter().find(|x| x.shard == n).map(|x| x.share);
    assert_eq!(share(&r.before, "s2"), Some(0.8), "{}", render(r));
    assert_eq!(share(&r.before, "s0"), Some(0.1));
    // Rows and write rates are shown side by side.
    let s2 = r.before.iter().find(|x| x.shard == "s2").expect("s2");
    assert_eq!((s2.rows, s2.writes_per_second), (1_000, Some(80.0)));
    // The hot shard by writes is split at the median of its rows: half its writes each way.
    assert_eq!(r.splits.len(), 1, "{}", render(r));
    let split = &r.splits[0];
    assert_eq!((split.shard.as_str(), split.share_before), ("s2", 0.8));
    let lower = count_between(&keys, split.from.as_ref(), Some(&split.at)) as f64;
    assert!((lower / 1_000.0 - 0.5).abs() <= 0.05, "{lower}");
    assert_eq!(share(&r.after, "s2"), Some(0.4));
    assert_eq!(share(&r.after, "s3"), Some(0.4));
    let s3 = r.after.iter().find(|x| x.shard == "s3").expect("s3");
    assert_eq!(s3.writes_per_second, Some(40.0));
    assert!(r.reached_target && r.weigh == Weigh::Writes);
    let text = render(r);
    assert!(text.contains("of the writes"), "{text}");
    assert!(
        r.notes.iter().any(|n| n.contains("median of the rows")),
        "{:?}",
        r.notes
    );
}

#[test]
fn rings_weigh_write_rates_too() {
    let (m, mut meas) = super::tests::modulo3();
    with_writes(&mut meas, &[("s0", 5.0), ("s1", 5.0), ("s2", 40.0)]);
    let s = suggest(
        &m,
        &meas,
        &weighed(Target::MaxShare(0.5), &[], Weigh::Writes, &[]),
    )
    .expect("ok");
    let s2 = s
        .report
        .before
        .iter()
        .find(|x| x.shard == "s2")
        .expect("s2");
    assert_eq!(s2.share, 0.8);
    assert!(!s.report.reached_target, "{}", render(&s.report));
}

#[test]
fn weigh_writes_names_every_shard_without_rates_and_why() {
    let (m, _, mut meas) = three([1_000, 1_000, 1_000]);
    with_writes(&mut meas, &[("s0", 1.0)]);
    let sqlite = "write rate not available: SQLite keeps no write counters";
    meas.shards.get_mut("s1").expect("s1").writes_unavailable = Some(sqlite.into());
    let off = "write rate not available (userstat and performance_schema are off)";
    meas.shards.get_mut("s2").expect("s2").writes_unavailable = Some(off.into());
    let e = suggest(
        &m,
        &meas,
        &weighed(Target::Default, &[], Weigh::Writes, &[]),
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(text.starts_with("--weigh writes"), "{text}");
    assert!(text.contains(&format!("s1 ({sqlite})")), "{text}");
    assert!(text.contains(&format!("s2 ({off})")), "{text}");
    assert!(!text.contains("s0 ("), "{text}");
    // Rows are always there; and the report lists who lacks rates.
    let s = suggest(&m, &meas, &weighed(Target::Default, &[], Weigh::Rows, &[])).expect("ok");
    assert_eq!(s.report.writes_unavailable.len(), 2);
    assert!(render(&s.report).contains(off));
    // Without a window: said so.
    meas.sample_seconds = None;
    let e = suggest(
        &m,
        &meas,
        &weighed(Target::Default, &[], Weigh::Writes, &[]),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("s1 (no sampling window (--sample 0s))"),
        "{e}"
    );
    let e = suggest(&m, &meas, &weighed(Target::Default, &[], Weigh::Bytes, &[])).unwrap_err();
    assert!(e.to_string().starts_with("--weigh bytes"), "{e}");
}

type Interval = (Option<Bound>, Option<Bound>);

/// The plan's one move: its source, destination and key intervals.
fn one_move(from: &Map, to: &Map) -> (String, String, Vec<Interval>) {
    let p = plan(from, to).expect("plan accepts the map");
    assert_eq!(p.moves.len(), 1, "{:?}", p.moves);
    let mv = &p.moves[0];
    let Segments::Ranges { ranges } = &mv.segments else {
        panic!("range segments")
    };
    let iv = ranges
        .iter()
        .map(|r| (r.from.clone(), r.to.clone()))
        .collect();
    (mv.source.clone(), mv.destination.clone(), iv)
}

#[test]
fn remove_merges_into_the_colder_neighbour() {
    let (m, _, mut meas) = three([1_000, 500, 2_000]);
    let s = suggest(
        &m,
        &meas,
        &weighed(Target::MaxShare(0.6), &[], Weigh::Rows, &["s1"]),
    )
    .expect("ok");
    let r = &s.report;
    assert_eq!(r.merges.len(), 1, "{}", render(r));
    let g = &r.merges[0];
    assert_eq!(
        (g.shard.as_str(), g.into.as_str(), g.rows),
        ("s1", "s0", 500)
    );
    assert_eq!(r.rows_moved, 500);
    // The written map joins the merged range with its neighbour.
    let Partitioning::Range { ranges } = &s.map.partitioning else {
        panic!("a range map")
    };
    assert_eq!(ranges.len(), 2);
    assert_eq!(
        (ranges[0].to.clone(), ranges[0].shard.as_str()),
        (Some(Bound::Int(200_000)), "s0")
    );
    let (src, dst, iv) = one_move(&m, &s.map);
    assert_eq!((src.as_str(), dst.as_str()), ("s1", "s0"));
    assert_eq!(
        iv,
        vec![(Some(Bound::Int(100_000)), Some(Bound::Int(200_000)))]
    );
    assert_eq!(
        plan(&m, &s.map).expect("plan").summary.removed_shards,
        vec!["s1"]
    );
    assert!(
        render(r).contains("into s0, its colder neighbour"),
        "{}",
        render(r)
    );

    // By writes, s0 is the hot one: the range goes to s2.
    with_writes(&mut meas, &[("s0", 100.0), ("s1", 1.0), ("s2", 5.0)]);
    let s = suggest(
        &m,
        &meas,
        &weighed(Target::MaxShare(0.6), &[], Weigh::Writes, &["s1"]),
    )
    .expect("ok");
    assert_eq!(s.report.merges[0].into, "s2", "{}", render(&s.report));
    let (_, dst, _) = one_move(&m, &s.map);
    assert_eq!(dst, "s2");
}

#[test]
fn remove_refuses_a_merge_above_the_target_saying_why() {
    let (m, _, meas) = three([1_000, 500, 2_000]);
    // Into s0: (1000 + 500) / 3500 = 42.9% > 40%.
    let e = suggest(
        &m,
        &meas,
        &weighed(Target::MaxShare(0.4), &[], Weigh::Rows, &["s1"]),
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("--remove s1: its range [100000, 200000)"),
        "{text}"
    );
    assert!(text.contains("into s0, its colder neighbour"), "{text}");
    assert!(text.contains("42.9%, above the target of 40.0%"), "{text}");
}

#[test]
fn remove_adjacent_shards_and_ends() {
    let (m, _, meas) = four_or_three(&[1_000, 1_000, 1_000, 1_000]);
    // s1 and s2 side by side: s1 goes to s0, then s2 to s3 (s0's range is now the hotter).
    let s = suggest(
        &m,
        &meas,
        &weighed(Target::MaxShare(0.5), &[], Weigh::Rows, &["s1", "s2"]),
    )
    .expect("ok");
    let into: Vec<&str> = s.report.merges.iter().map(|g| g.into.as_str()).collect();
    assert_eq!(into, vec!["s0", "s3"], "{}", render(&s.report));
    assert!(s.report.after.iter().all(|x| x.share == 0.5));
    plan(&m, &s.map).expect("plan");
    // The first range has only a right neighbour.
    let s = suggest(
        &m,
        &meas,
        &weighed(Target::MaxShare(0.5), &[], Weigh::Rows, &["s0"]),
    )
    .expect("ok");
    assert_eq!(s.report.merges[0].into, "s1");
    assert!(s.report.merges[0].other.is_none());
}

#[test]
fn bad_removes_name_the_option() {
    let (m, _, meas) = three([10, 10, 10]);
    let e = suggest(
        &m,
        &meas,
        &weighed(Target::Default, &[], Weigh::Rows, &["s9", "s1", "s1"]),
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("--remove[0]: s9 owns no range"), "{text}");
    assert!(
        text.contains("--remove[2]: shard s1 is given twice"),
        "{text}"
    );
    let e = suggest(
        &m,
        &meas,
        &weighed(Target::Default, &[], Weigh::Rows, &["s0", "s1", "s2"]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("every shard"), "{e}");
    let ring = map(
        r#"{"kind": "ring", "hash": "sha1", "vnodes": 8, "nodes": ["s0", "s1"]}"#,
        &["s0", "s1"],
    );
    let e = suggest(
        &ring,
        &meas,
        &weighed(Target::Default, &[], Weigh::Rows, &["s0"]),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("--remove: the map is a ring map"),
        "{e}"
    );
    let e = suggest(
        &m,
        &meas,
        &weighed(Target::Shards(1), &[], Weigh::Rows, &["s0"]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("left after --remove"), "{e}");
}
