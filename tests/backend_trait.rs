//! Trait-level behaviour of every backend: describe, create, keyset pagination with composite
//! keys, pushed-down filters, idempotent upsert, delete and key counts. Checks read the tables
//! back through the harness's own connections, not through the backend under test.

mod common;

use std::collections::BTreeMap;

use common::db::{Kind, TestDb};
use reshard::backend::{self, Backend, BatchPool, EncodeSpec, EncodedBatch, KeyFilter, Value};
use reshard::map::{Bound, Key};
use reshard::shard_url::ShardUrl;
use reshard::verify::canonical::{class_of, Class};

async fn open(db: &TestDb) -> std::sync::Arc<dyn Backend> {
    backend::connect("s1", &ShardUrl::parse(&db.url).unwrap())
        .await
        .unwrap()
}

fn orders_ddl(kind: Kind) -> &'static str {
    match kind {
        Kind::Sqlite => {
            "CREATE TABLE orders (tenant INTEGER NOT NULL, id INTEGER NOT NULL, note TEXT DEFAULT 'n', \
             amount REAL, PRIMARY KEY (tenant, id)); CREATE INDEX orders_note ON orders (note, amount)"
        }
        Kind::Postgres => {
            "CREATE TABLE orders (tenant bigint NOT NULL, id integer NOT NULL, note varchar(40) DEFAULT 'n', \
             amount numeric(12,3), PRIMARY KEY (tenant, id)); CREATE INDEX orders_note ON orders (note, amount)"
        }
        Kind::Mysql => {
            "CREATE TABLE orders (tenant bigint NOT NULL, id int NOT NULL, note varchar(40) DEFAULT 'n', \
             amount decimal(12,3), PRIMARY KEY (tenant, id)); CREATE INDEX orders_note ON orders (note, amount)"
        }
    }
}

fn fill(db: &TestDb) {
    // tenants -7..=7, ids 1..=5: 75 rows, negative keys included for the modulo filter.
    let mut values = Vec::new();
    for t in -7..=7 {
        for i in 1..=5 {
            values.push(format!("({t}, {i}, 'n{t}_{i}', {t}.5)"));
        }
    }
    db.exec(&format!(
        "INSERT INTO orders (tenant, id, note, amount) VALUES {}",
        values.join(", ")
    ));
}

async fn read_all(
    b: &dyn Backend,
    schema: &reshard::backend::TableSchema,
    filter: &KeyFilter,
    limit: usize,
) -> (Vec<Vec<Value>>, Vec<Key>) {
    let mut after = None;
    let mut rows = Vec::new();
    let mut keys = Vec::new();
    loop {
        let batch = b
            .read_batch(schema, "tenant", after.as_ref(), filter, limit)
            .await
            .unwrap();
        assert!(batch.rows.len() <= limit);
        assert_eq!(batch.rows.len(), batch.keys.len());
        if batch.rows.is_empty() {
            assert!(batch.last.is_none());
            break;
        }
        rows.extend(batch.rows);
        keys.extend(batch.keys);
        after = batch.last;
    }
    (rows, keys)
}

async fn trait_behaviour(kind: Kind) {
    let Some(src) = TestDb::create(kind, "trait_src") else {
        return;
    };
    let dst = TestDb::create(kind, "trait_dst").unwrap();
    src.exec_async(orders_ddl(kind)).await;
    fill(&src);
    let s = open(&src).await;
    let d = open(&dst).await;
    s.ping().await.unwrap();

    assert!(s.describe("missing").await.unwrap().is_none());
    assert!(s.describe("bad name").await.is_err());
    let schema = s.describe("orders").await.unwrap().unwrap();
    assert_eq!(schema.primary_key, vec!["tenant", "id"]);
    let names: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["tenant", "id", "note", "amount"]);
    assert!(!schema.columns[0].nullable && schema.columns[2].nullable);
    assert!(schema.columns[2].default.as_deref().unwrap().contains('n'));
    assert_eq!(schema.indexes.len(), 1, "{:?}", schema.indexes);
    assert_eq!(schema.indexes[0].columns, vec!["note", "amount"]);
    assert!(!schema.indexes[0].unique);

    // Same definition on the destination, indexes after.
    d.create_table(&schema).await.unwrap();
    let mut created = d.describe("orders").await.unwrap().unwrap();
    assert!(created.indexes.is_empty());
    created.indexes = schema.indexes.clone();
    assert_eq!(created, schema);
    d.create_indexes(&schema).await.unwrap();
    d.create_indexes(&schema).await.unwrap(); // idempotent
    assert_eq!(d.describe("orders").await.unwrap().unwrap(), schema);

    // Keyset pagination over a composite key, page sizes that do and do not divide 75.
    for limit in [1, 7, 75, 100] {
        let (rows, keys) = read_all(&*s, &schema, &KeyFilter::All, limit).await;
        assert_eq!(rows.len(), 75, "limit {limit}");
        let pks: Vec<(Key, Value)> = keys
            .iter()
            .cloned()
            .zip(rows.iter().map(|r| r[1].clone()))
            .collect();
        let mut sorted = pks.clone();
        sorted.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        sorted.dedup();
        assert_eq!(sorted.len(), 75, "no duplicates");
        assert_eq!(keys.first(), Some(&Key::Int(-7)));
        assert_eq!(keys.last(), Some(&Key::Int(7)));
    }

    // Residues use the mathematical modulo: -7 mod 3 = 2.
    let (_, keys) = read_all(
        &*s,
        &schema,
        &KeyFilter::Residues {
            modulus: 3,
            residues: vec![2],
        },
        4,
    )
    .await;
    let mut tenants: Vec<i64> = keys
        .iter()
        .map(|k| match k {
            Key::Int(v) => *v,
            _ => panic!(),
        })
        .collect();
    tenants.dedup();
    assert_eq!(tenants, vec![-7, -4, -1, 2, 5]);

    let ranges = KeyFilter::Ranges(vec![
        (None, Some(Bound::Int(-5))),
        (Some(Bound::Int(0)), Some(Bound::Int(2))),
        (Some(Bound::Int(6)), None),
    ]);
    let (_, keys) = read_all(&*s, &schema, &ranges, 6).await;
    let mut tenants: Vec<i64> = keys
        .iter()
        .map(|k| match k {
            Key::Int(v) => *v,
            _ => panic!(),
        })
        .collect();
    tenants.dedup();
    assert_eq!(tenants, vec![-7, -6, 0, 1, 6, 7]);
    let (rows, _) = read_all(&*s, &schema, &KeyFilter::Ranges(vec![]), 6).await;
    assert!(rows.is_empty());

    // key_counts agrees with the data.
    let mut counts = BTreeMap::new();
    s.key_counts(&schema, "tenant", &ranges, &mut |k, n, bytes| {
        assert!(bytes > 0);
        counts.insert(format!("{k}"), n);
    })
    .await
    .unwrap();
    assert_eq!(counts.len(), 6);
    assert!(counts.values().all(|n| *n == 5));

    // Upsert is idempotent and overwrites.
    let (rows, _) = read_all(&*s, &schema, &KeyFilter::All, 1000).await;
    assert!(d.upsert(&schema, &rows).await.unwrap() > 0);
    d.upsert(&schema, &rows).await.unwrap();
    let q = "SELECT tenant, id, note, CAST(amount AS CHAR(20)) FROM orders ORDER BY tenant, id";
    let q = if kind == Kind::Postgres {
        "SELECT tenant, id, note, amount::text FROM orders ORDER BY tenant, id"
    } else if kind == Kind::Sqlite {
        "SELECT tenant, id, note, quote(amount) FROM orders ORDER BY tenant, id"
    } else {
        q
    };
    assert_eq!(src.query(q), dst.query(q));
    src.exec("UPDATE orders SET note = 'changed', amount = NULL WHERE tenant = 3");
    let (rows, _) = read_all(&*s, &schema, &KeyFilter::All, 1000).await;
    d.upsert(&schema, &rows).await.unwrap();
    assert_eq!(src.query(q), dst.query(q));
    assert_eq!(dst.scalar("SELECT COUNT(*) FROM orders"), "75");

    // Delete by primary key.
    let gone: Vec<Vec<Value>> = rows
        .iter()
        .filter(|r| r[0] == Value::Int(3) || r[0] == Value::Int(-3))
        .map(|r| r[..2].to_vec())
        .collect();
    assert_eq!(gone.len(), 10);
    assert_eq!(d.delete(&schema, &gone).await.unwrap(), 10);
    assert_eq!(d.delete(&schema, &gone).await.unwrap(), 0);
    assert_eq!(dst.scalar("SELECT COUNT(*) FROM orders"), "65");
    assert_eq!(
        dst.scalar("SELECT COUNT(*) FROM orders WHERE tenant IN (3, -3)"),
        "0"
    );
}

async fn text_keys(kind: Kind) {
    let Some(db) = TestDb::create(kind, "trait_text") else {
        return;
    };
    db.exec_async("CREATE TABLE acct (name varchar(20) NOT NULL, v integer, PRIMARY KEY (name))")
        .await;
    db.exec_async("INSERT INTO acct VALUES ('alice', 1), ('bob', 2), ('carol', 3), ('dave', 4)")
        .await;
    let b = open(&db).await;
    let schema = b.describe("acct").await.unwrap().unwrap();
    let f = KeyFilter::Ranges(vec![(
        Some(Bound::Text("b".into())),
        Some(Bound::Text("d".into())),
    )]);
    let batch = b.read_batch(&schema, "name", None, &f, 10).await.unwrap();
    assert_eq!(
        batch.keys,
        vec![Key::Text("bob".into()), Key::Text("carol".into())]
    );
    assert_eq!(batch.last, Some(vec![Value::Text("carol".into())]));
    let next = b
        .read_batch(&schema, "name", batch.last.as_ref(), &f, 10)
        .await
        .unwrap();
    assert!(next.rows.is_empty());

    // A bound longer than the column must not be truncated to the column's width: a 20-char
    // value lies below a 21-char bound it is a prefix of.
    let long = "c".repeat(20);
    db.exec_async(&format!("INSERT INTO acct VALUES ('{long}', 5)"))
        .await;
    let f = KeyFilter::Ranges(vec![(
        Some(Bound::Text(long.clone())),
        Some(Bound::Text(format!("{long}c"))),
    )]);
    let batch = b.read_batch(&schema, "name", None, &f, 10).await.unwrap();
    assert_eq!(batch.keys, vec![Key::Text(long)]);

    // Cursor values with quotes, backslashes, commas, percent signs and non-ASCII travel bound
    // (PostgreSQL's COPY path binds them as session settings): paging one row at a time after
    // each of them still returns every row exactly once.
    for name in ["o'brien", "back\\slash", "a,b", "100%", "\"q\"", "zo\u{eb}"] {
        let sql_name = name.replace('\'', "''");
        db.exec_async(&format!("INSERT INTO acct VALUES ('{sql_name}', 9)"))
            .await;
    }
    let (mut after, mut seen) = (None, Vec::new());
    loop {
        let batch = b
            .read_batch(&schema, "name", after.as_ref(), &KeyFilter::All, 1)
            .await
            .unwrap();
        if batch.rows.is_empty() {
            break;
        }
        seen.extend(batch.keys);
        after = batch.last;
    }
    assert_eq!(seen.len(), 11, "{seen:?}");
    seen.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    seen.dedup();
    assert_eq!(seen.len(), 11, "a row read twice: {seen:?}");
}

/// `read_encoded` (PostgreSQL encodes straight from COPY's bytes) gives exactly the encodings of
/// `read_range`'s values, in a permuted column order, with NULLs, composite-key bounds and a
/// pushed-down filter: a fast path that drifted from the canonical encoding fails here.
async fn encoded_reads_match_value_reads(kind: Kind) {
    let Some(db) = TestDb::create(kind, "trait_enc") else {
        return;
    };
    db.exec_async(orders_ddl(kind)).await;
    fill(&db);
    db.exec("UPDATE orders SET note = NULL, amount = NULL WHERE id = 2");
    db.exec("UPDATE orders SET note = 'caf\u{e9}' WHERE id = 3");
    let b = open(&db).await;
    let schema = b.describe("orders").await.unwrap().unwrap();
    let d = b.dialect();
    let order = [3, 0, 2, 1];
    let classes: Vec<Class> = order
        .iter()
        .map(|&i| class_of(d, &schema.columns[i].data_type))
        .collect();
    let pool = BatchPool::default();
    let after = vec![Value::Int(-5), Value::Int(3)];
    let upto = vec![Value::Int(4), Value::Int(1)];
    let filters = [
        KeyFilter::All,
        KeyFilter::Ranges(vec![(Some(Bound::Int(-2)), Some(Bound::Int(6)))]),
    ];
    for keys in [true, false] {
        let spec = EncodeSpec {
            order: &order,
            classes: &classes,
            pool: &pool,
            keys,
        };
        for filter in &filters {
            for (a, u, limit) in [
                (None, None, 100),
                (Some(&after), Some(&upto), 100),
                (Some(&after), None, 7),
            ] {
                let by_value = b
                    .read_range(&schema, "tenant", a, u, filter, limit)
                    .await
                    .unwrap();
                assert!(!by_value.rows.is_empty());
                let want_last = by_value.last.clone();
                let want_keys = by_value.keys.clone();
                let want = EncodedBatch::from_batch(by_value, &spec);
                let got = b
                    .read_encoded(&schema, "tenant", (a, u), filter, limit, &spec)
                    .await
                    .unwrap();
                assert_eq!(got.enc, want.enc, "{filter:?} {a:?} {u:?}");
                assert_eq!(got.ends, want.ends);
                assert_eq!(got.keys, if keys { want_keys } else { Vec::new() });
                assert_eq!(got.last, want_last);
                // The next read reuses these buffers: it must start from an empty batch.
                pool.give(got);
            }
        }
    }
}

#[tokio::test]
async fn sqlite_trait() {
    trait_behaviour(Kind::Sqlite).await;
    text_keys(Kind::Sqlite).await;
    encoded_reads_match_value_reads(Kind::Sqlite).await;
}

#[tokio::test]
async fn postgres_trait() {
    trait_behaviour(Kind::Postgres).await;
    text_keys(Kind::Postgres).await;
    encoded_reads_match_value_reads(Kind::Postgres).await;
}

#[tokio::test]
async fn mysql_trait() {
    trait_behaviour(Kind::Mysql).await;
    text_keys(Kind::Mysql).await;
    encoded_reads_match_value_reads(Kind::Mysql).await;
}

#[tokio::test]
async fn connect_errors_name_the_shard_not_the_url() {
    let u = ShardUrl::parse("postgres://app:s3cret@127.0.0.1:1/x").unwrap();
    let e = backend::connect("s9", &u).await.err().unwrap();
    let shown = format!("{e:#}");
    assert!(shown.contains("s9") && !shown.contains("s3cret"), "{shown}");
    let u = ShardUrl::parse("mysql://app:s3cret@127.0.0.1:1/x").unwrap();
    let shown = format!("{:#}", backend::connect("s9", &u).await.err().unwrap());
    assert!(shown.contains("s9") && !shown.contains("s3cret"), "{shown}");
}
