use super::*;

fn parse(s: &str) -> Result<Map, InputError> {
    Map::parse(s, "m.json")
}

const BASE: &str = r#"{"shards": {"s0": "sqlite://a.db", "s1": "sqlite://b.db"},
    "tables": [{"name": "users", "key": "id"}],
    "partitioning": PART}"#;

fn with(part: &str) -> Result<Map, InputError> {
    parse(&BASE.replace("PART", part))
}

fn problems(part: &str) -> Vec<String> {
    with(part).unwrap_err().problems
}

#[test]
fn identity_modulo_routes_by_euclidean_remainder() {
    let m = with(r#"{"kind":"modulo","hash":"identity","shards":["s0","s1"]}"#).unwrap();
    let p = m.compile();
    assert_eq!(p.owner(&Key::Int(4)).unwrap(), "s0");
    assert_eq!(p.owner(&Key::Int(-3)).unwrap(), "s1");
    assert!(p.owner(&Key::Text("x".into())).is_err());
}

#[test]
fn range_routes_half_open() {
    let m = with(
        r#"{"kind":"range","ranges":[{"from":10,"to":null,"shard":"s1"},{"from":null,"to":10,"shard":"s0"}]}"#,
    )
    .unwrap();
    let p = m.compile();
    assert_eq!(p.owner(&Key::Int(9)).unwrap(), "s0");
    assert_eq!(p.owner(&Key::Int(10)).unwrap(), "s1");
    assert_eq!(p.owner(&Key::Int(i64::MIN)).unwrap(), "s0");
}

#[test]
fn a_single_unbounded_range_takes_any_key() {
    let m = with(r#"{"kind":"range","ranges":[{"from":null,"to":null,"shard":"s1"}]}"#).unwrap();
    let p = m.compile();
    assert_eq!(p.owner(&Key::Text("abc".into())).unwrap(), "s1");
    assert_eq!(p.owner(&Key::Int(-7)).unwrap(), "s1");
}

#[test]
fn text_range_compares_bytewise() {
    let m = with(
        r#"{"kind":"range","ranges":[{"from":null,"to":"m","shard":"s0"},{"from":"m","to":null,"shard":"s1"}]}"#,
    )
    .unwrap();
    let p = m.compile();
    assert_eq!(p.owner(&Key::Text("Zebra".into())).unwrap(), "s0");
    assert_eq!(p.owner(&Key::Text("m".into())).unwrap(), "s1");
    assert_eq!(p.owner(&Key::Text("é".into())).unwrap(), "s1");
}

#[test]
fn ring_successor_wraps() {
    let t = [[1u8; 20], [5u8; 20]];
    assert_eq!(ring_successor(&t, &[0u8; 20]), 0);
    assert_eq!(ring_successor(&t, &[1u8; 20]), 1);
    assert_eq!(ring_successor(&t, &[9u8; 20]), 0);
}

#[test]
fn every_problem_is_reported_at_once() {
    let errs = problems(
        r#"{"kind":"range","ranges":[{"from":null,"to":10,"shard":"s0"},{"from":5,"to":20,"shard":"s9"},{"from":30,"to":null,"shard":"s1"}]}"#,
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("ranges[1].shard: unknown shard")),
        "{errs:?}"
    );
    let errs = problems(
        r#"{"kind":"range","ranges":[{"from":null,"to":10,"shard":"s0"},{"from":5,"to":20,"shard":"s1"},{"from":30,"to":null,"shard":"s1"}]}"#,
    );
    assert!(
        errs.contains(&"m.json: partitioning.ranges[1]: overlaps ranges[0]".to_string()),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("ranges[2]: gap")),
        "{errs:?}"
    );
}

#[test]
fn validation_errors() {
    let cases = [
        (
            r#"{"kind":"ring","hash":"identity","vnodes":4,"nodes":["s0"]}"#,
            "ring does not take hash",
        ),
        (
            r#"{"kind":"ring","hash":"sha1","vnodes":0,"nodes":["s0"]}"#,
            "vnodes: must be at least 1",
        ),
        (
            r#"{"kind":"ring","hash":"sha1","vnodes":100000000,"nodes":["s0"]}"#,
            "absurdly many",
        ),
        (
            r#"{"kind":"ring","hash":"sha1","vnodes":4,"nodes":["s0","s0"]}"#,
            "duplicate shard",
        ),
        (
            r#"{"kind":"modulo","hash":"md5","shards":["s0","s7"]}"#,
            "unknown shard \"s7\"",
        ),
        (
            r#"{"kind":"modulo","hash":"md5","shards":["s0"],"extra":1}"#,
            "partitioning.extra: unknown field",
        ),
        (
            r#"{"kind":"range","ranges":[{"from":null,"to":5,"shard":"s0"},{"from":5,"to":5,"shard":"s1"},{"from":5,"to":null,"shard":"s1"}]}"#,
            "must be less than",
        ),
        (r#"{"kind":"wheel"}"#, "unknown kind"),
    ];
    for (part, want) in cases {
        let errs = problems(part);
        assert!(errs.iter().any(|e| e.contains(want)), "{part}: {errs:?}");
    }
}

#[test]
fn malformed_json_names_line_and_column() {
    let e = parse("{\n  \"shards\": ,\n}").unwrap_err();
    assert!(
        e.problems[0].starts_with("m.json: malformed JSON at line 2 column"),
        "{e}"
    );
}

#[test]
fn bad_identifiers_and_duplicate_tables() {
    let e = parse(
        r#"{"shards":{"s0":"sqlite://a.db"},"tables":[{"name":"users; drop","key":"id"},{"name":"t","key":"k"},{"name":"T","key":"k"}],
        "partitioning":{"kind":"modulo","hash":"md5","shards":["s0"]}}"#,
    )
    .unwrap_err();
    let all = e.to_string();
    assert!(
        all.contains("tables[0].name: \"users; drop\" is not a plain SQL identifier"),
        "{all}"
    );
    assert!(
        all.contains("tables[2].name: table T is listed twice"),
        "{all}"
    );
}

#[test]
fn no_shards() {
    let e = parse(r#"{"shards":{},"tables":[{"name":"t","key":"k"}],"partitioning":{"kind":"modulo","hash":"md5","shards":["s0"]}}"#).unwrap_err();
    assert!(e.to_string().contains("shards: no shards"), "{e}");
}

#[test]
fn ring_lookup_agrees_with_plain_successor_search() {
    // The prefix-accelerated lookup must give exactly what a search over whole tokens gives,
    // for both digest widths.
    for hash in ["md5", "sha1"] {
        let m = with(&format!(
            r#"{{"kind":"ring","hash":"{hash}","vnodes":300,"nodes":["s0","s1"]}}"#
        ))
        .unwrap();
        let p = m.compile();
        let h = HashKind::parse(hash).unwrap();
        let mut toks = ring_tokens(h, 300, &["s0".to_string(), "s1".to_string()]);
        toks.sort();
        let tokens: Vec<_> = toks.iter().map(|t| t.0).collect();
        for k in -2000i64..2000 {
            let key = Key::Int(k);
            let t = h.token(key.canonical().as_bytes());
            let want = toks[ring_successor(&tokens, &t)].1;
            assert_eq!(p.owner_index(&key).unwrap(), want, "{hash} {k}");
        }
    }
}

const WITH_REPLICAS: &str = r#"{"shards": {
        "s0": "postgres://db0/app",
        "s1": {"url": "postgres://u:pw@db1/app", "replicas": ["postgres://u:secret@db1-r1/app", "env:S1_R1_URL"]}},
    "tables": [{"name": "users", "key": "id"}],
    "partitioning": {"kind":"modulo","hash":"identity","shards":["s0","s1"]}}"#;

#[test]
fn a_shard_may_list_its_replicas() {
    let m = parse(WITH_REPLICAS).unwrap();
    assert_eq!(m.shards.len(), 2);
    assert_eq!(m.replicas.len(), 1, "only s1 has replicas");
    assert_eq!(m.replicas["s1"].len(), 2);
    // Stored and fingerprinted redacted, in the form it was written, and read back the same.
    let json = m.canonical_json();
    assert!(!json.contains("secret") && !json.contains("pw"), "{json}");
    assert!(
        json.contains(r#""s1":{"url":"postgres://u:REDACTED@db1/app","replicas":["#),
        "{json}"
    );
    let back: Map = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m.redacted());
    let again = Map::parse(&json, "stored").unwrap();
    assert_eq!(again, m.redacted());
}

#[test]
fn a_map_without_replicas_keeps_its_canonical_form() {
    // Plans made before replicas existed keep their fingerprints: shards stay plain strings.
    let m = with(r#"{"kind":"modulo","hash":"identity","shards":["s0","s1"]}"#).unwrap();
    assert!(m.replicas.is_empty());
    assert!(
        m.canonical_json()
            .starts_with(r#"{"shards":{"s0":"sqlite://a.db","s1":"sqlite://b.db"},"#),
        "{}",
        m.canonical_json()
    );
}

#[test]
fn bad_replicas_are_named_by_path() {
    let bad = r#"{"shards": {
            "s0": {"url": "postgres://db0/app", "replicas": ["postgres://db0/app", "mysql://r/app", "postgres://r2/app", "postgres://r2/app"]},
            "s1": {"replicas": ["postgres://r/app"]},
            "s2": {"url": "postgres://db2/app", "replicas": []},
            "s3": {"url": "postgres://db3/app", "replica": ["postgres://r/app"]}},
        "tables": [{"name": "users", "key": "id"}],
        "partitioning": {"kind":"modulo","hash":"identity","shards":["s0"]}}"#;
    let p = parse(bad).unwrap_err().problems;
    let has = |needle: &str| assert!(p.iter().any(|x| x.contains(needle)), "{needle}: {p:?}");
    has("m.json: shards.s0.replicas[0]: is the shard's own URL");
    has("m.json: shards.s0.replicas[1]: is not the same kind of database as the shard");
    has("m.json: shards.s0.replicas[3]: listed twice");
    has("m.json: shards.s1.url: missing");
    has("m.json: shards.s2.replicas: empty");
    has("shards.s3");
}
