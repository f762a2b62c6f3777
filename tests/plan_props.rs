//! Property tests: for random map pairs of every kind combination and random keys, the move the
//! plan puts a key in is (old owner, new owner) computed by routing directly, and a key whose
//! owner does not change is in no move. For same-kind plans the move is found from its
//! segments alone (what execution's SQL filters rely on), not from routing.

use proptest::prelude::*;
use reshard::map::{Key, Map};
use reshard::plan::{Plan, Segments};
use reshard::planner::{plan_labeled, PlannerOptions};
use serde_json::{json, Value};

const POOL: [&str; 6] = ["s0", "s1", "s2", "s3", "s4", "s5"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Modulo,
    Range,
    Ring,
}

/// A random non-empty ordered subset of the shard pool.
fn shard_list() -> impl Strategy<Value = Vec<String>> {
    Just(POOL.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .prop_shuffle()
        .prop_flat_map(|v| (1..=v.len()).prop_map(move |n| v[..n].to_vec()))
}

fn int_bound() -> impl Strategy<Value = i64> {
    prop_oneof![-40i64..40, any::<i64>(), Just(i64::MIN + 1), Just(i64::MAX),]
}

fn text_bound() -> impl Strategy<Value = String> {
    "[a-e]{1,3}"
}

/// A partitioning of `kind`; `text` chooses text range bounds and rules out identity.
fn partitioning(kind: Kind, text: bool) -> BoxedStrategy<Value> {
    match kind {
        Kind::Modulo => {
            let hashes: Vec<&'static str> = if text {
                vec!["md5", "sha1"]
            } else {
                vec!["identity", "identity", "md5", "sha1"]
            };
            (prop::sample::select(hashes), shard_list())
                .prop_map(|(h, s)| json!({"kind": "modulo", "hash": h, "shards": s}))
                .boxed()
        }
        Kind::Ring => (
            prop::sample::select(vec!["md5", "sha1"]),
            1u32..6,
            shard_list(),
        )
            .prop_map(|(h, v, s)| json!({"kind": "ring", "hash": h, "vnodes": v, "nodes": s}))
            .boxed(),
        Kind::Range => {
            let bounds: BoxedStrategy<Vec<Value>> = if text {
                prop::collection::btree_set(text_bound(), 0..5)
                    .prop_map(|s| s.into_iter().map(Value::from).collect())
                    .boxed()
            } else {
                prop::collection::btree_set(int_bound(), 0..5)
                    .prop_map(|s| s.into_iter().map(Value::from).collect())
                    .boxed()
            };
            (
                bounds,
                prop::collection::vec(prop::sample::select(POOL.to_vec()), 6),
            )
                .prop_map(|(b, owners)| {
                    let mut edges = vec![Value::Null];
                    edges.extend(b);
                    edges.push(Value::Null);
                    let ranges: Vec<Value> = edges
                        .windows(2)
                        .enumerate()
                        .map(|(i, w)| json!({"from": w[0], "to": w[1], "shard": owners[i]}))
                        .collect();
                    json!({"kind": "range", "ranges": ranges})
                })
                .boxed()
        }
    }
}

fn map(part: Value) -> Map {
    let shards: serde_json::Map<String, Value> = POOL
        .iter()
        .map(|s| (s.to_string(), json!(format!("sqlite://data/{s}.db"))))
        .collect();
    let v =
        json!({"shards": shards, "tables": [{"name": "users", "key": "id"}], "partitioning": part});
    Map::from_value(&v, "generated").expect("generated maps are valid")
}

fn keys(text: bool) -> BoxedStrategy<Vec<Key>> {
    if text {
        prop::collection::vec("[a-f]{0,4}".prop_map(Key::Text), 40).boxed()
    } else {
        prop::collection::vec(
            prop_oneof![-45i64..45, any::<i64>(), Just(i64::MIN), Just(i64::MAX)]
                .prop_map(Key::Int),
            40,
        )
        .boxed()
    }
}

fn check(from: Value, to: Value, ks: Vec<Key>) -> Result<(), TestCaseError> {
    let (a, b) = (map(from), map(to));
    let opts = PlannerOptions { sample_keys: 2_000 };
    let plan = plan_labeled(&a, "old", &b, "new", &opts).expect("compatible maps plan");
    // Deterministic, and the written form reads back as the same plan.
    let again = plan_labeled(&a, "old", &b, "new", &opts).unwrap();
    prop_assert_eq!(plan.to_json(), again.to_json());
    let reread = Plan::parse(&plan.to_json(), "plan.json").expect("plan reads back");
    prop_assert_eq!(&reread.moves, &plan.moves);

    let exact = plan.moves.iter().all(|m| m.segments != Segments::Owners);
    let (pa, pb) = (a.compile(), b.compile());
    let finder = reshard::planner::MoveFinder::new(&plan);
    for k in ks {
        let old = pa.owner(&k).unwrap();
        let new = pb.owner(&k).unwrap();
        let mv = plan.move_for_key(&k).unwrap();
        prop_assert_eq!(
            finder.find(&k).unwrap().map(|m| &m.id),
            mv.map(|m| &m.id),
            "segments and routing disagree on {}",
            k
        );
        if old == new {
            prop_assert!(
                mv.is_none(),
                "{k}: stays on {old} but is in {:?}",
                mv.map(|m| &m.id)
            );
        } else {
            let m =
                mv.ok_or_else(|| TestCaseError::fail(format!("{k}: {old}->{new} in no move")))?;
            prop_assert_eq!(
                (m.source.as_str(), m.destination.as_str()),
                (old, new),
                "key {}",
                k
            );
            prop_assert!(m.fraction >= 0.0);
        }
        if exact {
            // Segments are disjoint: a key is in at most one move.
            let hits = plan
                .moves
                .iter()
                .filter(|m| {
                    reshard::planner::segment_contains(&m.segments, &k).unwrap() == Some(true)
                })
                .count();
            prop_assert!(hits <= 1, "{k} in {hits} moves");
        }
    }
    let sum: f64 = plan.moves.iter().map(|m| m.fraction).sum();
    prop_assert!((sum - plan.summary.moved_fraction).abs() < 1e-9);
    prop_assert!(plan.summary.moved_fraction <= 1.0 + 1e-9);
    Ok(())
}

macro_rules! combo {
    ($name:ident, $a:expr, $b:expr) => {
        proptest! {
            #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
            #[test]
            fn $name(
                (from, to, ks) in any::<bool>().prop_flat_map(|text| {
                    (partitioning($a, text), partitioning($b, text), keys(text))
                })
            ) {
                check(from, to, ks)?;
            }
        }
    };
}

combo!(modulo_to_modulo, Kind::Modulo, Kind::Modulo);
combo!(range_to_range, Kind::Range, Kind::Range);
combo!(ring_to_ring, Kind::Ring, Kind::Ring);
combo!(modulo_to_range, Kind::Modulo, Kind::Range);
combo!(range_to_modulo, Kind::Range, Kind::Modulo);
combo!(modulo_to_ring, Kind::Modulo, Kind::Ring);
combo!(ring_to_modulo, Kind::Ring, Kind::Modulo);
combo!(range_to_ring, Kind::Range, Kind::Ring);
combo!(ring_to_range, Kind::Ring, Kind::Range);
