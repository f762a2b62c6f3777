//! Fidelity: a table holding every common column type, with edge values and an all-NULL row,
//! is copied with read_batch and the copy's write (then the upsert) into a second database of the same backend and compared
//! value by value — through a query exposing each value's exact representation (PostgreSQL
//! `::text`, MariaDB `HEX`/`CAST`, SQLite `typeof`/`hex`/`printf('%!.17g')`), and through the
//! backend's own decoder.

mod common;

use common::db::{Kind, TestDb};
use reshard::backend::{self, Backend, KeyFilter, TableSchema, Value};
use reshard::shard_url::ShardUrl;

async fn open(db: &TestDb) -> std::sync::Arc<dyn Backend> {
    backend::connect("s", &ShardUrl::parse(&db.url).unwrap())
        .await
        .unwrap()
}

/// Copies `fid` through the COPY pipe between two PostgreSQL databases (the copy's path when
/// no row needs routing in Rust), in pages of 2 rows; each page is piped a second time, which
/// must fail whole on the primary key (the copy then rewrites it through the upsert).
async fn pipe(src: &dyn Backend, dst: &dyn Backend) -> (TableSchema, Vec<Vec<Value>>) {
    let schema = src.describe("fid").await.unwrap().unwrap();
    dst.create_table(&schema).await.unwrap();
    let (s, d) = (src.as_postgres().unwrap(), dst.as_postgres().unwrap());
    let mut after = None;
    loop {
        let p = s
            .pipe_to(d, &schema, "id", after.as_ref(), &KeyFilter::All, 2)
            .await
            .map_err(|e| format!("{e:#}"))
            .unwrap();
        if p.rows == 0 {
            break;
        }
        let again = s
            .pipe_to(d, &schema, "id", after.as_ref(), &KeyFilter::All, 2)
            .await;
        let e = format!("{:#}", again.expect_err("piped twice"));
        assert!(e.contains("duplicate key"), "{e}");
        after = p.last;
    }
    let all = reread(src, &schema).await;
    (schema, all)
}

/// Copies `fid` in pages of 2 rows (so cursors are exercised) and returns every row read.
async fn copy(src: &dyn Backend, dst: &dyn Backend) -> (TableSchema, Vec<Vec<Value>>) {
    let schema = src.describe("fid").await.unwrap().unwrap();
    dst.create_table(&schema)
        .await
        .map_err(|e| format!("{e:#}"))
        .unwrap();
    let mut after = None;
    let mut all = Vec::new();
    loop {
        let b = src
            .read_batch(&schema, "id", after.as_ref(), &KeyFilter::All, 2)
            .await
            .unwrap();
        if b.rows.is_empty() {
            break;
        }
        // The copy's write (PostgreSQL: COPY FROM STDIN); again, it meets its own rows and
        // goes through the upsert; writing the same rows again changes nothing.
        dst.insert_new_quiet(&schema, &b.rows)
            .await
            .map_err(|e| format!("{e:#}"))
            .unwrap();
        dst.insert_new_quiet(&schema, &b.rows)
            .await
            .map_err(|e| format!("{e:#}"))
            .unwrap();
        dst.upsert(&schema, &b.rows).await.unwrap();
        all.extend(b.rows);
        after = b.last;
    }
    assert_eq!(dst.describe("fid").await.unwrap().unwrap(), schema);
    (schema, all)
}

async fn reread(b: &dyn Backend, schema: &TableSchema) -> Vec<Vec<Value>> {
    b.read_batch(schema, "id", None, &KeyFilter::All, 1000)
        .await
        .unwrap()
        .rows
}

async fn check(kind: Kind, ddl: &str, inserts: &str, exact: impl Fn(&TableSchema) -> String) {
    check_with(kind, ddl, inserts, exact, false).await
}

async fn check_with(
    kind: Kind,
    ddl: &str,
    inserts: &str,
    exact: impl Fn(&TableSchema) -> String,
    piped: bool,
) {
    let Some(src) = TestDb::create(kind, "fid_src") else {
        return;
    };
    let dst = TestDb::create(kind, "fid_dst").unwrap();
    src.exec_async(ddl).await;
    src.exec_async(inserts).await;
    let (s, d) = (open(&src).await, open(&dst).await);
    let (schema, read) = if piped {
        pipe(&*s, &*d).await
    } else {
        copy(&*s, &*d).await
    };
    let q = exact(&schema);
    let want = src.query_async(&q).await;
    let got = dst.query_async(&q).await;
    assert!(want.len() >= 4, "{kind:?}: rows missing from the fixture");
    for (w, g) in want.iter().zip(&got) {
        for (i, (a, b)) in w.iter().zip(g).enumerate() {
            assert_eq!(
                a, b,
                "{kind:?}: column {} of row {}",
                schema.columns[i].name, w[0]
            );
        }
    }
    assert_eq!(want, got, "{kind:?}");
    // The all-NULL row really is NULL in every nullable column at the destination.
    let last = got.last().unwrap();
    assert!(last[1..].iter().all(|v| v == "NULL"), "{kind:?}: {last:?}");
    // And through the decoder: the destination reads back exactly what the source gave.
    assert_eq!(reread(&*d, &schema).await, read, "{kind:?}");
    assert_eq!(read.len(), want.len());
}

#[tokio::test]
async fn postgres_round_trips_every_type() {
    postgres_fixture(false).await
}

#[tokio::test]
async fn postgres_pipe_round_trips_every_type() {
    postgres_fixture(true).await
}

async fn postgres_fixture(piped: bool) {
    let ddl = "CREATE TABLE fid (id integer PRIMARY KEY, i2 smallint, i4 integer, i8 bigint, \
        n numeric(38,10), nu numeric, f4 real, f8 double precision, t text, vc varchar(50), \
        ch char(5), b bytea, bo boolean, d date, tm time, tz timetz, ts timestamp, tstz timestamptz, \
        j json, jb jsonb, u uuid, iv interval, arr integer[], ta text[])";
    let all_bytes = "(SELECT decode(string_agg(lpad(to_hex(g), 2, '0'), '' ORDER BY g), 'hex') \
        FROM generate_series(0, 255) g)";
    let inserts = format!(
        "INSERT INTO fid VALUES \
        (1, -32768, -2147483648, -9223372036854775808, '-9999999999999999999999999999.9999999999', \
         'NaN', 'NaN', '-0', 'héllo 🎉 e\u{301} שלום \\ '' \" \t\n', '', 'ab', {all_bytes}, true, \
         '4713-01-01 BC', '00:00:00', '00:00:00+14:59', '4713-01-01 00:00:00 BC', '4713-01-01 00:00:00+00 BC', \
         '{{\"b\": 1,  \"a\": [1, 2.50, {{\"c\": \"\\u00e9\\n\"}}], \"b\": 2}}', \
         '{{\"b\": 1, \"a\": [1, 2.50, {{\"c\": \"\\u00e9\"}}], \"n\": null}}', \
         'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '1 year 2 mons -3 days 04:05:06.789', '{{1,NULL,3}}', \
         '{{\"a,b\",NULL,\"\"}}'), \
        (2, 32767, 2147483647, 9223372036854775807, '9999999999999999999999999999.9999999999', \
         '123456789012345678901234567890.123456789012345678901234567890', 'Infinity', '0.30000000000000004', \
         'x', 'y', 'abcde', '\\x', false, '5874897-12-31', '24:00:00', '23:59:59.999999-15:59', \
         '294276-12-31 23:59:59.999999', '294276-12-31 23:59:59.999999+00', '[]', '{{}}', \
         '00000000-0000-0000-0000-000000000000', '-178000000 years', '{{}}', '{{}}'), \
        (3, 0, 0, 0, '0.0000000001', '-0.000000000000000000000000000001', '1.4e-45', '5e-324', \
         'NUL is not allowed in PostgreSQL text', 'z', ' ', '\\x00', true, '2000-02-29', \
         '12:34:56.789012', '12:00:00+00', '2000-01-01 00:00:00.000001', '1970-01-01 00:00:00.000001+00', \
         '\"s\"', '1e400', 'ffffffff-ffff-ffff-ffff-ffffffffffff', '0', '{{-1}}', '{{z}}'), \
        (4, NULL, NULL, NULL, NULL, NULL, '-Infinity', '1.7976931348623157e308', NULL, NULL, NULL, \
         NULL, NULL, 'infinity', NULL, NULL, '-infinity', 'infinity', NULL, NULL, NULL, NULL, NULL, NULL), \
        (5, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
         NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
    );
    let exact = |s: &TableSchema| {
        let cols: Vec<String> = s
            .columns
            .iter()
            .map(|c| format!("COALESCE(\"{}\"::text, 'NULL')", c.name))
            .collect();
        format!("SELECT {} FROM fid ORDER BY id", cols.join(", "))
    };
    check_with(Kind::Postgres, ddl, &inserts, exact, piped).await;
}

#[tokio::test]
async fn mysql_round_trips_every_type() {
    let ddl = "CREATE TABLE fid (id int PRIMARY KEY, ti tinyint, tu tinyint unsigned, si smallint, \
        su smallint unsigned, mi mediumint, mu mediumint unsigned, i int, iu int unsigned, bi bigint, \
        bu bigint unsigned, bo boolean, de decimal(38,10), d65 decimal(65,30), f float, dbl double, \
        t text, vc varchar(50), ch char(5), lt longtext, bn binary(4), vb varbinary(300), bl blob, \
        d date, tm time(6), dt datetime(6), ts timestamp(6) NULL, y year, bt bit(64), \
        e enum('a','b c','it''s'), st set('x','y','z'), j json, u uuid) CHARSET utf8mb4";
    let inserts = "INSERT INTO fid VALUES \
        (1, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0, true, \
         '-9999999999999999999999999999.9999999999', '-99999999999999999999999999999999999.999999999999999999999999999999', \
         -3.40282e38, -1.7976931348623157e308, 'héllo 🎉 e\u{301} שלום \\\\ '' \" \t\n', '', 'ab', \
         CONCAT('a', CHAR(0), 'b'), x'00ff0010', \
         (SELECT UNHEX(GROUP_CONCAT(LPAD(HEX(seq), 2, '0') ORDER BY seq SEPARATOR '')) FROM seq_0_to_255), \
         (SELECT UNHEX(GROUP_CONCAT(LPAD(HEX(255 - seq), 2, '0') ORDER BY seq SEPARATOR '')) FROM seq_0_to_255), \
         '1000-01-01', '-838:59:59.000000', '1000-01-01 00:00:00.000000', '1970-01-01 00:00:01.000000', 1901, \
         b'0', 'a', '', '{\"b\": 1,  \"a\": [1, 2.50, {\"c\": \"\\\\u00e9\"}], \"b\": 2}', \
         'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'), \
        (2, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, 9223372036854775807, \
         18446744073709551615, false, '9999999999999999999999999999.9999999999', \
         '0.000000000000000000000000000001', 3.40282e38, 0.30000000000000004, 'x', 'y', 'abcde', 'z', \
         x'', x'', x'', '9999-12-31', '838:59:59.999999', '9999-12-31 23:59:59.999999', \
         '2038-01-19 03:14:07.999999', 2155, b'1111111111111111111111111111111111111111111111111111111111111111', \
         'it''s', 'x,y,z', '[]', 'ffffffff-ffff-ffff-ffff-ffffffffffff'), \
        (3, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, NULL, '0.0000000001', '-0.000000000000000000000000000001', \
         1.17549435e-38, 4.9406564584124654e-324, NULL, NULL, ' ', NULL, NULL, NULL, NULL, \
         '2000-02-29', '00:00:00.000001', '2000-02-29 12:34:56.789012', '2000-02-29 12:34:56.789012', \
         0, b'101', 'b c', 'y', '\"s\"', '00000000-0000-0000-0000-000000000000'), \
        (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, -0.0, -0.0, \
         NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL), \
        (5, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
         NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)";
    check(Kind::Mysql, ddl, inserts, |s| {
        let cols: Vec<String> = s
            .columns
            .iter()
            .map(|c| {
                let q = format!("`{}`", c.name);
                let t = c.data_type.as_str();
                let e = if t == "float" || t == "double" {
                    // Binary protocol DOUBLE, printed by Rust as the shortest exact text; the
                    // sign of zero is checked separately through HEX of the sign test.
                    format!("CONCAT(CAST(CAST({q} AS DOUBLE) AS CHAR), IF({q} = 0 AND CONCAT({q}) LIKE '-%', '-', ''))")
                } else if t.starts_with("bit") {
                    format!("CAST({q} + 0 AS CHAR)")
                } else {
                    format!("HEX({q})")
                };
                format!("IFNULL({e}, 'NULL')")
            })
            .collect();
        format!("SELECT {} FROM fid ORDER BY id", cols.join(", "))
    })
    .await;
}

#[tokio::test]
async fn sqlite_round_trips_every_storage_class() {
    let ddl = "CREATE TABLE fid (id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, \
        n NUMERIC, anything, bo BOOLEAN, d DATE, j JSON, v VARCHAR(10))";
    let inserts = "INSERT INTO fid VALUES \
        (1, -9223372036854775808, 0.1 + 0.2, 'héllo 🎉 e\u{301} שלום '' \" ' || char(0) || 'after NUL', \
         (WITH RECURSIVE g(v) AS (SELECT 0 UNION ALL SELECT v + 1 FROM g WHERE v < 255) SELECT unhex(group_concat(printf('%02X', v), '')) FROM g), \
         '1.50', 42, 1, '2020-01-01', '{\"b\":1, \"a\":[1,2.50]}', 'this is longer than ten'), \
        (2, 9223372036854775807, -0.0, '', x'', 1e400, 4.9406564584124654e-324, 0, 'not a date', '[]', 3), \
        (3, 0, 1.7976931348623157e308, 'x', x'00', 'abc', 'text in an untyped column', 'yes', 20200101, 'null', x'ff'), \
        (4, 1.5, -1e400, '12', x'01', NULL, x'deadbeef', NULL, 1.25, NULL, 0.1), \
        (5, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)";
    check(Kind::Sqlite, ddl, inserts, |s| {
        let cols: Vec<String> = s
            .columns
            .iter()
            .map(|c| {
                let q = format!("\"{}\"", c.name);
                format!(
                    "CASE typeof({q}) WHEN 'null' THEN 'NULL' \
                     WHEN 'real' THEN 'real:' || printf('%!.17g', {q}) || ':' || ({q} = 0 AND 1/{q} < 0) \
                     ELSE typeof({q}) || ':' || hex({q}) END"
                )
            })
            .collect();
        format!("SELECT {} FROM fid ORDER BY id", cols.join(", "))
    })
    .await;
}
