//! The exact figures the issue promises, from the planner and checked against routing.

use reshard::hashing::HashKind;
use reshard::map::{Key, Map};
use reshard::plan::Segments;
use reshard::planner::plan;
use serde_json::json;

fn map(n_shards: usize, part: serde_json::Value) -> Map {
    let shards: serde_json::Map<String, serde_json::Value> = (0..n_shards)
        .map(|i| (format!("s{i}"), json!(format!("sqlite://data/s{i}.db"))))
        .collect();
    let v =
        json!({"shards": shards, "tables": [{"name": "users", "key": "id"}], "partitioning": part});
    Map::from_value(&v, "test").unwrap()
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("s{i}")).collect()
}

fn modulo(hash: &str, n: usize) -> Map {
    map(
        n,
        json!({"kind": "modulo", "hash": hash, "shards": names(n)}),
    )
}

fn ring(n: usize, vnodes: u32) -> Map {
    map(
        n,
        json!({"kind": "ring", "hash": "sha1", "vnodes": vnodes, "nodes": names(n)}),
    )
}

#[test]
fn identity_modulo_4_to_8_moves_half_in_four_moves() {
    let p = plan(&modulo("identity", 4), &modulo("identity", 8)).unwrap();
    assert_eq!(p.summary.moved_fraction, 0.5);
    assert_eq!(p.summary.method, "exact");
    assert_eq!(p.summary.minimum_fraction, Some(0.5));
    assert_eq!(p.moves.len(), 4);
    for (i, m) in p.moves.iter().enumerate() {
        assert_eq!(m.id, format!("m{}", i + 1));
        assert_eq!(m.source, format!("s{i}"));
        assert_eq!(m.destination, format!("s{}", i + 4));
        assert_eq!(m.fraction, 0.125);
        assert_eq!(
            m.segments,
            Segments::Residues {
                hash: HashKind::Identity,
                modulus: 8,
                residues: vec![i as u64 + 4]
            }
        );
    }
    // Checked against routing, key by key.
    let (a, b) = (
        modulo("identity", 4).compile(),
        modulo("identity", 8).compile(),
    );
    let moved = (-5000i64..5000)
        .filter(|v| a.owner(&Key::Int(*v)).unwrap() != b.owner(&Key::Int(*v)).unwrap())
        .count();
    assert_eq!(moved, 5000);
}

#[test]
fn modulo_4_to_5_moves_eighty_percent() {
    for hash in ["identity", "md5", "sha1"] {
        let p = plan(&modulo(hash, 4), &modulo(hash, 5)).unwrap();
        assert_eq!(p.summary.moved_fraction, 0.8, "{hash}");
        assert_eq!(p.summary.minimum_fraction, Some(0.2));
        assert_eq!(p.summary.ring_equivalent_fraction, Some(0.2));
        // 16 of the 20 residues mod lcm(4, 5) change owner.
        let residues: usize = p
            .moves
            .iter()
            .map(|m| match &m.segments {
                Segments::Residues {
                    modulus: 20,
                    residues,
                    ..
                } => residues.len(),
                other => panic!("{other:?}"),
            })
            .sum();
        assert_eq!(residues, 16);
    }
}

#[test]
fn md5_modulo_4_to_8_moves_half_within_half_a_percent_over_a_million_keys() {
    let (old, new) = (modulo("md5", 4), modulo("md5", 8));
    let p = plan(&old, &new).unwrap();
    assert_eq!(p.summary.moved_fraction, 0.5);
    let (a, b) = (old.compile(), new.compile());
    let n = 1_000_000i64;
    let moved = (0..n)
        .filter(|v| a.owner_index(&Key::Int(*v)).unwrap() != b.owner_index(&Key::Int(*v)).unwrap())
        .count();
    let observed = moved as f64 / n as f64;
    assert!((observed - 0.5).abs() < 0.005, "observed {observed}");
}

#[test]
fn ring_add_moves_only_arcs_to_the_new_node() {
    let (old, new) = (ring(4, 64), ring(5, 64));
    let p = plan(&old, &new).unwrap();
    assert!(!p.moves.is_empty());
    for m in &p.moves {
        assert_eq!(m.destination, "s4", "{m:?}");
        assert!(matches!(m.segments, Segments::Arcs { .. }));
    }
    assert_eq!(p.summary.added_shards, vec!["s4".to_string()]);
    // The new node's share is exactly what moved.
    assert_eq!(p.summary.moved_fraction, p.summary.shares_after["s4"]);
    // And routing agrees: a key that changes owner goes to s4, and is in the move from its
    // old owner, decided from the arcs.
    let (a, b) = (old.compile(), new.compile());
    let mut moved = 0;
    for v in 0..20_000i64 {
        let k = Key::Int(v);
        let (o, n) = (a.owner(&k).unwrap(), b.owner(&k).unwrap());
        let m = p.move_for_key(&k).unwrap();
        if o != n {
            moved += 1;
            assert_eq!(n, "s4");
            assert_eq!(m.map(|m| m.source.as_str()), Some(o));
        } else {
            assert!(m.is_none());
        }
    }
    let observed = moved as f64 / 20_000.0;
    assert!(
        (observed - p.summary.moved_fraction).abs() < 0.02,
        "{observed}"
    );
}

#[test]
fn ring_remove_moves_only_the_removed_nodes_arcs() {
    let p = plan(&ring(5, 32), &ring(4, 32)).unwrap();
    for m in &p.moves {
        assert_eq!(m.source, "s4");
    }
    assert_eq!(p.summary.moved_fraction, p.summary.shares_before["s4"]);
    assert_eq!(p.summary.removed_shards, vec!["s4".to_string()]);
}

#[test]
fn identical_maps_move_nothing() {
    let p = plan(&ring(3, 8), &ring(3, 8)).unwrap();
    assert!(p.moves.is_empty());
    assert_eq!(p.summary.moved_fraction, 0.0);
    assert_eq!(p.summary.minimum_fraction, None);
}

#[test]
fn different_hashes_are_sampled_deterministically() {
    let p = plan(&modulo("md5", 4), &modulo("sha1", 4)).unwrap();
    assert_eq!(p.summary.method, "sampled");
    assert_eq!(p.summary.sample_keys, Some(1_000_000));
    // Independent hashes move 3/4 of keys; a million samples land well within 0.5%.
    assert!((p.summary.moved_fraction - 0.75).abs() < 0.005);
    assert_eq!(p.moves.len(), 12);
    assert!(p.moves.iter().all(|m| m.segments == Segments::Owners));
    // Byte-identical on a rerun (a smaller sample keeps the debug-build test quick).
    let opts = reshard::planner::PlannerOptions {
        sample_keys: 20_000,
    };
    let run = || {
        reshard::planner::plan_labeled(&modulo("md5", 4), "a", &modulo("sha1", 4), "b", &opts)
            .unwrap()
            .to_json()
    };
    assert_eq!(run(), run());
}

#[test]
fn plans_never_hold_passwords() {
    let mut old = modulo("identity", 2);
    let url = reshard::shard_url::ShardUrl::parse("postgres://app:s3cret@db:5432/app").unwrap();
    old.shards.insert("s0".into(), url.clone());
    let mut new = modulo("identity", 3);
    new.shards.insert("s0".into(), url);
    let json = plan(&old, &new).unwrap().to_json();
    assert!(!json.contains("s3cret"));
    assert!(json.contains("postgres://app:"));
}
