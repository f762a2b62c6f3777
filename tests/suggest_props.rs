//! Property tests of `reshard suggest`'s pure choice: for random maps of every kind, random
//! measured load, targets and new shards, the suggested map always validates as a map file,
//! covers the whole key space (every key routes), and `plan` from the current map succeeds.

use std::collections::BTreeMap;

use proptest::prelude::*;
use reshard::map::{Bound, Key, Map};
use reshard::planner::{plan_labeled, PlannerOptions};
use reshard::shard_url::ShardUrl;
use reshard::suggest::{
    suggest, KeySample, Measurements, QuantileMethod, RangeData, Request, ShardLoad, TableLoad,
    Target, ToKind, Weigh, QUANTILES,
};
use serde_json::{json, Value};

const POOL: [&str; 4] = ["s0", "s1", "s2", "s3"];
const NEW: [&str; 4] = ["n0", "n1", "n2", "n3"];

fn map(part: Value) -> Map {
    let shards: serde_json::Map<String, Value> = POOL
        .iter()
        .map(|s| (s.to_string(), json!(format!("sqlite://data/{s}.db"))))
        .collect();
    let v =
        json!({"shards": shards, "tables": [{"name": "users", "key": "id"}], "partitioning": part});
    Map::from_value(&v, "generated").expect("generated maps are valid")
}

fn load(rows: u64) -> ShardLoad {
    let mut tables = BTreeMap::new();
    let t = TableLoad {
        rows,
        ..TableLoad::default()
    };
    tables.insert("users".to_string(), t);
    ShardLoad {
        tables,
        ..ShardLoad::default()
    }
}

/// What an exact pass finds in these sorted keys.
fn sample(keys: &[i64]) -> KeySample {
    let n = keys.len() as u64;
    let mut points: Vec<(Bound, u64)> = Vec::new();
    let mut ranks: Vec<u64> = (0..QUANTILES).map(|i| i * n / QUANTILES).collect();
    ranks.push(n.saturating_sub(1));
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

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        (0.05f64..1.0).prop_map(Target::MaxShare),
        Just(Target::Default),
        (4usize..8).prop_map(Target::Shards),
    ]
}

fn request(target: Target, adds: usize, to_kind: ToKind) -> Request {
    Request {
        target,
        add: NEW[..adds]
            .iter()
            .map(|n| {
                let url = ShardUrl::parse(&format!("sqlite://data/{n}.db")).expect("url");
                (n.to_string(), url)
            })
            .collect(),
        to_kind,
        weigh: Weigh::Rows,
        remove: Vec::new(),
    }
}

/// The suggestion (when the request is valid for the map) validates, covers every key and plans.
fn check(m: &Map, meas: &Measurements, req: &Request) -> Result<(), TestCaseError> {
    let s = match suggest(m, meas, req) {
        Ok(s) => s,
        // `--shards` below the current count or above what --add allows is refused as input,
        // and so is a `--remove` whose merge would pass the target.
        Err(e) => {
            let named = |p: &String| p.starts_with("--shards") || p.starts_with("--remove");
            prop_assert!(e.problems.iter().all(named), "{e}");
            return Ok(());
        }
    };
    let v = serde_json::to_value(&s.map).expect("json");
    let back =
        Map::from_value(&v, "suggested.json").map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, &s.map);
    let p = back.compile();
    for k in [i64::MIN, -1_000_001, -1, 0, 1, 999, 1_000_001, i64::MAX] {
        prop_assert!(p.owner_index(&Key::Int(k)).is_ok(), "{k} does not route");
    }
    let plan = plan_labeled(m, "from", &back, "to", &PlannerOptions::default())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!((plan.summary.moved_fraction - s.report.moved_fraction).abs() < 1e-12);
    for split in &s.report.splits {
        prop_assert!(split.rows_lower > 0 && split.rows_upper > 0, "{:?}", split);
    }
    for added in &s.report.added_shards {
        prop_assert!(back.shards.contains_key(added));
    }
    // A removed shard owns nothing; the rest lose keys only to the new shards.
    for r in &req.remove {
        prop_assert!(
            !back.partitioning.owners().contains(r),
            "{r} still owns keys"
        );
    }
    // (Range maps: rings and modulo maps move keys between the shards that stay.)
    let ranges = m.partitioning.kind() == "range";
    for mv in plan.moves.iter().filter(|_| ranges) {
        prop_assert!(
            req.remove.contains(&mv.source) || s.report.added_shards.contains(&mv.destination),
            "{} -> {} moves keys of a shard that stays to one that was there",
            mv.source,
            mv.destination
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn range_suggestions_validate_and_plan(
        bounds in prop::collection::btree_set(-1_000i64..1_000, 0..4),
        owners in prop::collection::vec(prop::sample::select(POOL.to_vec()), 5),
        keys in prop::collection::vec(prop_oneof![-1_200i64..1_200, 900i64..905, any::<i64>()], 0..300),
        t in target(),
        adds in 0usize..=4,
        remove in prop::option::of(0usize..5),
        writes in prop::collection::vec(0.0f64..100.0, 5),
        by_writes in any::<bool>(),
    ) {
        let mut edges = vec![Value::Null];
        edges.extend(bounds.iter().map(|b| json!(b)));
        edges.push(Value::Null);
        let ranges: Vec<Value> = edges
            .windows(2)
            .enumerate()
            .map(|(i, w)| json!({"from": w[0], "to": w[1], "shard": owners[i]}))
            .collect();
        let m = map(json!({"kind": "range", "ranges": ranges}));
        let mut keys = keys;
        keys.sort();
        keys.dedup();
        let mut meas = Measurements::default();
        let reshard::map::Partitioning::Range { ranges } = &m.partitioning else {
            unreachable!("a range map");
        };
        let mut rows: BTreeMap<String, u64> = BTreeMap::new();
        for r in ranges {
            let lo = r.from.as_ref().map(|b| if let Bound::Int(v) = b { *v } else { 0 });
            let hi = r.to.as_ref().map(|b| if let Bound::Int(v) = b { *v } else { 0 });
            let inside: Vec<i64> = keys
                .iter()
                .copied()
                .filter(|k| lo.is_none_or(|l| *k >= l) && hi.is_none_or(|h| *k < h))
                .collect();
            *rows.entry(r.shard.clone()).or_default() += inside.len() as u64;
            let mut d = RangeData::default();
            d.tables.insert("users".into(), sample(&inside));
            meas.ranges.push(d);
        }
        meas.shards = rows.into_iter().map(|(s, r)| (s, load(r))).collect();
        meas.sample_seconds = Some(1.0);
        for (l, w) in meas.shards.values_mut().zip(&writes) {
            for t in l.tables.values_mut() {
                t.writes_per_second = Some(*w);
            }
        }
        let mut req = request(t, adds, ToKind::Same);
        if by_writes {
            req.weigh = Weigh::Writes;
        }
        let owners = m.partitioning.owners();
        if let Some(i) = remove.filter(|_| owners.len() > 1) {
            req.remove.push(owners[i % owners.len()].clone());
        }
        check(&m, &meas, &req)?;
    }

    #[test]
    fn ring_suggestions_validate_and_plan(
        n in 1usize..=4,
        vnodes in 1u32..12,
        hash in prop::sample::select(vec!["md5", "sha1"]),
        rows in prop::collection::vec(0u64..10_000, 4),
        t in target(),
        adds in 0usize..=3,
    ) {
        let nodes: Vec<&str> = POOL[..n].to_vec();
        let m = map(json!({"kind": "ring", "hash": hash, "vnodes": vnodes, "nodes": nodes}));
        let meas = Measurements {
            shards: nodes.iter().zip(&rows).map(|(s, r)| (s.to_string(), load(*r))).collect(),
            ..Measurements::default()
        };
        check(&m, &meas, &request(t, adds, ToKind::Same))?;
    }

    #[test]
    fn modulo_suggestions_validate_and_plan(
        n in 1usize..=4,
        hash in prop::sample::select(vec!["md5", "sha1"]),
        rows in prop::collection::vec(0u64..10_000, 4),
        t in target(),
        adds in 0usize..=2,
        ring in any::<bool>(),
    ) {
        let shards: Vec<&str> = POOL[..n].to_vec();
        let m = map(json!({"kind": "modulo", "hash": hash, "shards": shards}));
        let meas = Measurements {
            shards: shards.iter().zip(&rows).map(|(s, r)| (s.to_string(), load(*r))).collect(),
            ..Measurements::default()
        };
        let to_kind = if ring { ToKind::Ring } else { ToKind::Modulo };
        check(&m, &meas, &request(t, adds, to_kind))?;
    }
}
