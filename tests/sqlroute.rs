//! Routing computed in SQL (used by fences, guards and pushed-down copy filters) must agree with
//! the Rust router key for key, on every backend that can compute it.

use reshard::ident::Dialect;
use reshard::map::{Key, Map};
use reshard::sqlroute::owner_sql;
use sqlx::{Connection, Executor, Row};

/// A fixed-seed generator so a failure is reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn int_keys(rng: &mut Rng) -> Vec<i64> {
    let mut keys = vec![0, 1, -1, 7, -7, i64::MIN, i64::MAX, 1_000_000, -1_000_000];
    for _ in 0..300 {
        keys.push(rng.next() as i64);
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
fn maps(rng: &mut Rng, hashes: bool) -> Vec<(Map, bool)> {
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
        let mut ints: Vec<i64> = (0..1 + rng.below(5))
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
        if hashes {
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
                        &format!(
                            r#"{{"kind":"ring","hash":"{h}","vnodes":{vn},"nodes":[{shards}]}}"#
                        ),
                    ),
                    rng.below(2) == 0,
                ));
            }
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

fn require() -> bool {
    std::env::var("RESHARD_REQUIRE_BACKENDS").is_ok_and(|v| v == "1")
}

async fn check_pg() {
    let admin_url =
        std::env::var("PG_URL").unwrap_or("postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
        Ok(c) => c,
        Err(e) if !require() => return eprintln!("skipped: postgres not reachable ({e})"),
        Err(e) => panic!("postgres not reachable and RESHARD_REQUIRE_BACKENDS=1: {e}"),
    };
    let db = format!("reshard_sqlroute_{}", std::process::id());
    admin
        .execute(format!("DROP DATABASE IF EXISTS {db}").as_str())
        .await
        .unwrap();
    admin
        .execute(format!("CREATE DATABASE {db}").as_str())
        .await
        .unwrap();
    let url = format!("{}/{db}", admin_url.rsplit_once('/').unwrap().0);
    let result = async {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        c.execute("CREATE TABLE ik (k BIGINT PRIMARY KEY); CREATE TABLE tk (k TEXT PRIMARY KEY)")
            .await
            .unwrap();
        run_checks(&mut Conn::Pg(&mut c), Dialect::Postgres).await;
    };
    result.await;
    admin
        .execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str())
        .await
        .unwrap();
}

async fn check_mysql() {
    let admin_url =
        std::env::var("MYSQL_URL").unwrap_or("mysql://root@127.0.0.1:3306/mysql".into());
    let mut admin = match sqlx::MySqlConnection::connect(&admin_url).await {
        Ok(c) => c,
        Err(e) if !require() => return eprintln!("skipped: mysql not reachable ({e})"),
        Err(e) => panic!("mysql not reachable and RESHARD_REQUIRE_BACKENDS=1: {e}"),
    };
    let db = format!("reshard_sqlroute_{}", std::process::id());
    admin
        .execute(format!("DROP DATABASE IF EXISTS {db}").as_str())
        .await
        .unwrap();
    admin
        .execute(format!("CREATE DATABASE {db} CHARACTER SET utf8mb4").as_str())
        .await
        .unwrap();
    let url = format!("{}/{db}", admin_url.rsplit_once('/').unwrap().0);
    let mut c = sqlx::MySqlConnection::connect(&url).await.unwrap();
    c.execute("CREATE TABLE ik (k BIGINT PRIMARY KEY)")
        .await
        .unwrap();
    c.execute("CREATE TABLE tk (k VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci PRIMARY KEY)").await.unwrap();
    run_checks(&mut Conn::My(&mut c), Dialect::Mysql).await;
    drop(c);
    admin
        .execute(format!("DROP DATABASE IF EXISTS {db}").as_str())
        .await
        .unwrap();
}

enum Conn<'a> {
    Pg(&'a mut sqlx::PgConnection),
    My(&'a mut sqlx::MySqlConnection),
    Lite(&'a mut sqlx::SqliteConnection),
}

impl Conn<'_> {
    async fn exec(&mut self, sql: &str) {
        match self {
            Conn::Pg(c) => c.execute(sql).await.map(|_| ()),
            Conn::My(c) => c.execute(sql).await.map(|_| ()),
            Conn::Lite(c) => c.execute(sql).await.map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("{e}\n{sql}"));
    }

    async fn insert_keys(&mut self, ints: &[i64], texts: &[String]) {
        for k in ints {
            match self {
                Conn::Pg(c) => sqlx::query("INSERT INTO ik VALUES ($1)")
                    .bind(k)
                    .execute(&mut **c)
                    .await
                    .map(|_| ()),
                Conn::My(c) => sqlx::query("INSERT INTO ik VALUES (?)")
                    .bind(k)
                    .execute(&mut **c)
                    .await
                    .map(|_| ()),
                Conn::Lite(c) => sqlx::query("INSERT INTO ik VALUES (?)")
                    .bind(k)
                    .execute(&mut **c)
                    .await
                    .map(|_| ()),
            }
            .unwrap();
        }
        for k in texts {
            match self {
                Conn::Pg(c) => sqlx::query("INSERT INTO tk VALUES ($1)")
                    .bind(k)
                    .execute(&mut **c)
                    .await
                    .map(|_| ()),
                // The unicode_ci collation treats some distinct strings as equal; skip those.
                Conn::My(c) => sqlx::query("INSERT IGNORE INTO tk VALUES (?)")
                    .bind(k)
                    .execute(&mut **c)
                    .await
                    .map(|_| ()),
                Conn::Lite(c) => sqlx::query("INSERT INTO tk VALUES (?)")
                    .bind(k)
                    .execute(&mut **c)
                    .await
                    .map(|_| ()),
            }
            .unwrap();
        }
    }

    /// (key as text, owner index) for every row.
    async fn owners(&mut self, table: &str, expr: &str) -> Vec<(Key, i64)> {
        let sql = format!("SELECT k, {expr} AS o FROM {table} AS t");
        let int = table == "ik";
        macro_rules! rows {
            ($c:expr) => {{
                let rows = sqlx::query(&sql)
                    .fetch_all(&mut **$c)
                    .await
                    .unwrap_or_else(|e| panic!("{e}\n{sql}"));
                rows.iter()
                    .map(|r| {
                        let k = if int {
                            Key::Int(r.get::<i64, _>(0))
                        } else {
                            Key::Text(r.get::<String, _>(0))
                        };
                        let o: i64 = r
                            .try_get::<i64, _>(1)
                            .unwrap_or_else(|_| r.get::<i32, _>(1) as i64);
                        (k, o)
                    })
                    .collect()
            }};
        }
        match self {
            Conn::Pg(c) => rows!(c),
            Conn::My(c) => rows!(c),
            Conn::Lite(c) => rows!(c),
        }
    }
}

async fn run_checks(c: &mut Conn<'_>, dialect: Dialect) {
    let mut rng = Rng(0x5eed_0000 + dialect as u64);
    let maps = maps(&mut rng, dialect != Dialect::Sqlite);
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
    c.insert_keys(&ints, &texts).await;
    let mut checked = 0;
    for (i, (m, int)) in maps.into_iter().enumerate() {
        let part = m.compile();
        let aux = format!("reshard_ring_test{i}");
        let key = format!("t.{}", dialect.quote("k"));
        let r = owner_sql(dialect, &m.partitioning, &key, &aux).unwrap();
        for s in &r.setup {
            c.exec(s).await;
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
            for (k, o) in c.owners(table, &r.owner_expr).await {
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
            c.exec(s).await;
        }
    }
    assert!(checked > 5_000, "only {checked} keys checked");
}

#[tokio::test]
async fn postgres_routes_like_rust() {
    check_pg().await;
}

#[tokio::test]
async fn mariadb_routes_like_rust() {
    check_mysql().await;
}

#[tokio::test]
async fn sqlite_routes_ranges_and_identity_like_rust() {
    let mut c = sqlx::SqliteConnection::connect("sqlite::memory:")
        .await
        .unwrap();
    c.execute("CREATE TABLE ik (k INTEGER PRIMARY KEY); CREATE TABLE tk (k TEXT PRIMARY KEY)")
        .await
        .unwrap();
    run_checks(&mut Conn::Lite(&mut c), Dialect::Sqlite).await;
}
