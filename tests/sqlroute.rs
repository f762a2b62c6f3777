//! Routing computed in SQL (used by fences, guards and pushed-down copy filters) must agree with
//! the Rust router key for key, on every backend, for every map kind (SQLite hashes through
//! reshard's registered functions).

use reshard::ident::Dialect;
use reshard::map::Map;
use reshard::sqlroute::owner_sql;
// A fixed-seed generator so a failure is reproducible.
use reshard::workload::Rng;
mod common;

use common::conn::RawConn;
use common::db::{Kind, TestDb};

fn int_keys(rng: &mut Rng) -> Vec<i64> {
    let mut keys = vec![0, 1, -1, 7, -7, i64::MIN, i64::MAX, 1_000_000, -1_000_000];
    for _ in 0..300 {
        keys.push(rng.next_u64() as i64);
        keys.push(rng.below(100_000) as i64 - 50_000);
    }
    keys.sort();
    keys.dedup();
    keys
}

fn text_keys(rng: &mut Rng) -> Vec<String> {
    let alphabet = [
        "a", "b", "m", "z", "A", "Z", "0", "9", "é", "ß", "日本", "🦀", " ", "_", "'", "\\",
    ];
    let mut keys = vec!["".to_string(), "m".into(), "o'k".into(), "user-42".into()];
    for _ in 0..300 {
        let len = 1 + rng.below(6);
        keys.push(
            (0..len)
                .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                .collect(),
        );
    }
    keys.sort();
    keys.dedup();
    keys
}

fn shards_json(n: usize) -> String {
    (0..n)
        .map(|i| format!("\"s{i}\":\"sqlite://s{i}.db\""))
        .collect::<Vec<_>>()
        .join(",")
}

fn map(n: usize, part: &str) -> Map {
    let text = format!(
        r#"{{"shards":{{{}}},"tables":[{{"name":"t","key":"k"}}],"partitioning":{part}}}"#,
        shards_json(n)
    );
    Map::parse(&text, "test.json").unwrap_or_else(|e| panic!("{e}\n{part}"))
}

fn names(rng: &mut Rng, n: usize) -> String {
    // A shuffled subset so owner indices differ from slot positions.
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let k = 1 + rng.below(n as u64) as usize;
    v[..k]
        .iter()
        .map(|i| format!("\"s{i}\""))
        .collect::<Vec<_>>()
        .join(",")
}

/// Random maps of every kind, each with the key type it routes.
fn maps(rng: &mut Rng) -> Vec<(Map, bool)> {
    let mut out = Vec::new();
    for _ in 0..4 {
        out.push((
            map(
                9,
                &format!(
                    r#"{{"kind":"modulo","hash":"identity","shards":[{}]}}"#,
                    names(rng, 9)
                ),
            ),
            true,
        ));
        // Zero bounds too: one unbounded range once produced `CASE ELSE x END`.
        let mut ints: Vec<i64> = (0..rng.below(5))
            .map(|_| rng.below(200_000) as i64 - 100_000)
            .collect();
        ints.sort();
        ints.dedup();
        out.push((
            map(
                9,
                &range_json(rng, ints.iter().map(|v| v.to_string()).collect()),
            ),
            true,
        ));
        let mut texts: Vec<String> = text_keys(rng)
            .into_iter()
            .filter(|s| !s.is_empty())
            .take(40)
            .collect();
        texts.truncate(1 + rng.below(5) as usize);
        texts.sort();
        texts.dedup();
        out.push((
            map(
                9,
                &range_json(
                    rng,
                    texts
                        .iter()
                        .map(|s| serde_json::to_string(s).unwrap())
                        .collect(),
                ),
            ),
            false,
        ));
        for h in ["md5", "sha1"] {
            let shards = names(rng, 9);
            out.push((
                map(
                    9,
                    &format!(r#"{{"kind":"modulo","hash":"{h}","shards":[{shards}]}}"#),
                ),
                rng.below(2) == 0,
            ));
            let vn = 1 + rng.below(40);
            out.push((
                map(
                    9,
                    &format!(r#"{{"kind":"ring","hash":"{h}","vnodes":{vn},"nodes":[{shards}]}}"#),
                ),
                rng.below(2) == 0,
            ));
        }
    }
    out
}

fn range_json(rng: &mut Rng, bounds: Vec<String>) -> String {
    let mut parts = Vec::new();
    let mut from = "null".to_string();
    for b in bounds.iter().chain(std::iter::once(&"null".to_string())) {
        parts.push(format!(
            r#"{{"from":{from},"to":{b},"shard":"s{}"}}"#,
            rng.below(9)
        ));
        from = b.clone();
    }
    format!(r#"{{"kind":"range","ranges":[{}]}}"#, parts.join(","))
}

async fn check(kind: Kind, setup: &[&str]) {
    let Some(db) = TestDb::create(kind, "sqlroute") else {
        return;
    };
    let mut c = RawConn::open_registered(&db).await;
    for s in setup {
        c.execute(s).await.unwrap();
    }
    let d = match kind {
        Kind::Postgres => Dialect::Postgres,
        Kind::Mysql => Dialect::Mysql,
        Kind::Sqlite => Dialect::Sqlite,
    };
    run_checks(&mut c, d).await;
}

async fn run_checks(c: &mut RawConn, dialect: Dialect) {
    let mut rng = Rng(0x5eed_0000 + dialect as u64);
    let maps = maps(&mut rng);
    let mut ints = int_keys(&mut rng);
    let mut texts = text_keys(&mut rng);
    // Keys on and beside every range bound, where an off-by-one would show.
    for (m, _) in &maps {
        if let reshard::map::Partitioning::Range { ranges } = &m.partitioning {
            for b in ranges.iter().filter_map(|r| r.from.as_ref()) {
                match b {
                    reshard::map::Bound::Int(v) => ints.extend([v - 1, *v, v + 1]),
                    reshard::map::Bound::Text(s) => {
                        let shorter: String = s.chars().take(s.chars().count() - 1).collect();
                        texts.extend([s.clone(), format!("{s}\u{1}"), shorter]);
                    }
                }
            }
        }
    }
    ints.sort();
    ints.dedup();
    texts.sort();
    texts.dedup();
    insert_keys(c, &ints, &texts).await;
    let mut checked = 0;
    for (i, (m, int)) in maps.into_iter().enumerate() {
        let part = m.compile();
        let aux = format!("reshard_ring_test{i}");
        let key = format!("t.{}", dialect.quote("k"));
        let r = owner_sql(dialect, &m.partitioning, &key, &aux).unwrap();
        for s in &r.setup {
            c.execute(s).await.unwrap_or_else(|e| panic!("{e}\n{s}"));
        }
        for table in ["ik", "tk"] {
            // Integer-routed maps only take integer keys.
            if table == "tk" && (int || m.partitioning.key_kind() == reshard::map::KeyKind::Integer)
            {
                continue;
            }
            if table == "ik" && m.partitioning.key_kind() == reshard::map::KeyKind::Text {
                continue;
            }
            let sql = format!("SELECT k, {} AS o FROM {table} AS t", r.owner_expr);
            for (k, o) in c.pairs(&sql, table == "ik").await {
                let want = part.owner_index(&k).unwrap();
                assert_eq!(
                    o as usize, want,
                    "{dialect:?} key {k:?}: SQL says {o}, Rust says {want}\nmap {:?}",
                    m.partitioning
                );
                checked += 1;
            }
        }
        for s in &r.teardown {
            c.execute(s).await.unwrap_or_else(|e| panic!("{e}\n{s}"));
        }
    }
    assert!(checked > 5_000, "only {checked} keys checked");
}

/// Keys go in as literals: integers printed by Rust, text as hex so no quoting is involved.
async fn insert_keys(c: &mut RawConn, ints: &[i64], texts: &[String]) {
    let values: Vec<String> = ints.iter().map(|k| format!("({k})")).collect();
    c.execute(&format!("INSERT INTO ik VALUES {}", values.join(", ")))
        .await
        .unwrap();
    let mysql = matches!(c, RawConn::My(_));
    let mut values = Vec::new();
    for k in texts {
        let hex: String = k.bytes().map(|b| format!("{b:02x}")).collect();
        let lit = match c {
            RawConn::Pg(_) => format!("convert_from('\\x{hex}'::bytea, 'UTF8')"),
            RawConn::My(_) => format!("CONVERT(X'{hex}' USING utf8mb4)"),
            RawConn::Lite(_) => format!("CAST(X'{hex}' AS TEXT)"),
        };
        values.push(format!("({lit})"));
    }
    // The unicode_ci collation treats some distinct strings as equal; skip those.
    let verb = if mysql { "INSERT IGNORE" } else { "INSERT" };
    c.execute(&format!("{verb} INTO tk VALUES {}", values.join(", ")))
        .await
        .unwrap();
}

#[tokio::test]
async fn postgres_routes_like_rust() {
    check(
        Kind::Postgres,
        &[
            "CREATE TABLE ik (k BIGINT PRIMARY KEY)",
            "CREATE TABLE tk (k TEXT PRIMARY KEY)",
        ],
    )
    .await;
}

#[tokio::test]
async fn mariadb_routes_like_rust() {
    check(
        Kind::Mysql,
        &[
            "CREATE TABLE ik (k BIGINT PRIMARY KEY)",
            "CREATE TABLE tk (k VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci PRIMARY KEY)",
        ],
    )
    .await;
}

#[tokio::test]
async fn sqlite_routes_like_rust() {
    check(
        Kind::Sqlite,
        &[
            "CREATE TABLE ik (k INTEGER PRIMARY KEY)",
            "CREATE TABLE tk (k TEXT PRIMARY KEY)",
        ],
    )
    .await;
}
