//! Copy throughput of each backend's read_batch + upsert against the database's own bulk path,
//! measured in the same run (absolute figures vary 5-20% between runs; compare the ratios).
//!
//!     cargo run --release --example bench_backend -- [ROWS] [sqlite|postgres|mysql ...]
//!
//! Uses PG_URL / MYSQL_URL (defaults: local servers) and creates and drops its own databases.
//! Table: users(id BIGINT PRIMARY KEY, user_id BIGINT, email TEXT, name TEXT, payload TEXT
//! ~200 B, updated_at TIMESTAMP), batches of 1000.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use reshard::backend::{self, Backend, KeyFilter, Value};
use reshard::shard_url::ShardUrl;
use sqlx::Connection;

const BATCH: usize = 1000;

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn with_db(server: &str, db: &str) -> String {
    let base = server.split('?').next().unwrap_or(server);
    let host_end = base[base.find("://").map_or(0, |i| i + 3)..]
        .find('/')
        .map_or(base.len(), |i| base.find("://").map_or(0, |j| j + 3) + i);
    format!("{}/{db}", &base[..host_end])
}

struct Copied {
    rows: u64,
    total: Duration,
    upsert: Duration,
}

async fn copy(src: &dyn Backend, dst: &dyn Backend) -> Result<Copied> {
    let schema = src.describe("users").await?.context("no users table")?;
    dst.create_table(&schema).await?;
    let (mut after, mut rows, mut upsert) = (None, 0u64, Duration::ZERO);
    let start = Instant::now();
    loop {
        let b = src
            .read_batch(&schema, "id", after.as_ref(), &KeyFilter::All, BATCH)
            .await?;
        if b.rows.is_empty() {
            break;
        }
        let t = Instant::now();
        dst.upsert(&schema, &b.rows).await?;
        upsert += t.elapsed();
        rows += b.rows.len() as u64;
        after = b.last;
    }
    Ok(Copied {
        rows,
        total: start.elapsed(),
        upsert,
    })
}

fn report(kind: &str, c: &Copied, bulk_name: &str, bulk: Duration, extra: &[(String, Duration)]) {
    let rate = |d: Duration| c.rows as f64 / d.as_secs_f64();
    println!(
        "{kind}: {} rows | copy (read_batch+upsert) {:.1}s = {:.0} rows/s | upsert alone {:.1}s = {:.0} rows/s \
         | {bulk_name} {:.1}s = {:.0} rows/s | copy/bulk ratio {:.2}",
        c.rows,
        c.total.as_secs_f64(),
        rate(c.total),
        c.upsert.as_secs_f64(),
        rate(c.upsert),
        bulk.as_secs_f64(),
        rate(bulk),
        rate(c.total) / rate(bulk)
    );
    for (name, d) in extra {
        println!(
            "{kind}:   {name} {:.1}s = {:.0} rows/s",
            d.as_secs_f64(),
            rate(*d)
        );
    }
}

async fn connect(url: &str) -> Result<std::sync::Arc<dyn Backend>> {
    backend::connect("bench", &ShardUrl::parse(url).map_err(anyhow::Error::msg)?).await
}

async fn sqlite(n: u64) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (s, d, b) = (
        dir.path().join("src.db"),
        dir.path().join("dst.db"),
        dir.path().join("bulk.db"),
    );
    let su = format!("sqlite://{}", s.display());
    let src = connect(&su).await?;
    let mut c = sqlx::SqliteConnection::connect(&su).await?;
    sqlx::raw_sql(&format!(
        "CREATE TABLE users (id BIGINT PRIMARY KEY, user_id BIGINT, email TEXT, name TEXT, payload TEXT, updated_at TIMESTAMP);
         INSERT INTO users WITH RECURSIVE g(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM g WHERE v < {n})
         SELECT v, v % 1000, 'user' || v || '@example.com', 'name ' || v, printf('%.200c', 'x') || v, '2024-01-01 00:00:00' FROM g;"
    ))
    .execute(&mut c)
    .await?;
    let dst = connect(&format!("sqlite://{}", d.display())).await?;
    let copied = copy(&*src, &*dst).await?;
    let bulk_url = format!("sqlite://{}?mode=rwc", b.display());
    let mut bc = sqlx::SqliteConnection::connect(&bulk_url).await?;
    let t = Instant::now();
    sqlx::raw_sql(&format!(
        "ATTACH DATABASE '{}' AS src; CREATE TABLE users (id BIGINT PRIMARY KEY, user_id BIGINT, email TEXT, name TEXT, payload TEXT, updated_at TIMESTAMP); \
         INSERT INTO users SELECT * FROM src.users;",
        s.display()
    ))
    .execute(&mut bc)
    .await?;
    report("sqlite", &copied, "ATTACH+INSERT..SELECT", t.elapsed(), &[]);
    Ok(())
}

async fn postgres(n: u64) -> Result<()> {
    let server = std::env::var("PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let tag = std::process::id();
    let names = [
        format!("bench_src_{tag}"),
        format!("bench_dst_{tag}"),
        format!("bench_bulk_{tag}"),
    ];
    let mut admin = sqlx::PgConnection::connect(&server).await?;
    for db in &names {
        sqlx::raw_sql(&format!("CREATE DATABASE {db}"))
            .execute(&mut admin)
            .await?;
    }
    let result = async {
        let su = with_db(&server, &names[0]);
        let mut c = sqlx::PgConnection::connect(&su).await?;
        sqlx::raw_sql(&format!(
            "CREATE TABLE users (id BIGINT PRIMARY KEY, user_id BIGINT, email TEXT, name TEXT, payload TEXT, updated_at TIMESTAMP);
             INSERT INTO users SELECT g, g % 1000, 'user' || g || '@example.com', 'name ' || g,
               repeat(md5(g::text), 6) || g, timestamp '2024-01-01' + g * interval '1 second'
             FROM generate_series(1, {n}) g;"
        ))
        .execute(&mut c)
        .await?;
        sqlx::raw_sql("VACUUM ANALYZE users").execute(&mut c).await?;
        let src = connect(&su).await?;
        let dst = connect(&with_db(&server, &names[1])).await?;
        let copied = copy(&*src, &*dst).await?;
        // Second run of the same copy: every row conflicts, the update path.
        let again = copy_again(&*src, &*dst).await?;
        // The alternative write path: COPY each batch into a temp table, then one merge.
        let staged = copy_staged(&*src, &with_db(&server, &names[2])).await?;
        let bu = with_db(&server, &names[2]);
        let mut b = sqlx::PgConnection::connect(&bu).await?;
        sqlx::raw_sql("DROP TABLE users; CREATE TABLE users (id BIGINT PRIMARY KEY, user_id BIGINT, email TEXT, name TEXT, payload TEXT, updated_at TIMESTAMP)")
            .execute(&mut b)
            .await?;
        let t = Instant::now();
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "psql -q '{su}' -c '\\copy users TO STDOUT' | psql -q '{bu}' -c '\\copy users FROM STDIN'"
            ))
            .status()?;
        anyhow::ensure!(st.success(), "psql copy pipe failed");
        let bulk = t.elapsed();
        report(
            "postgres",
            &copied,
            "psql COPY pipe",
            bulk,
            &[
                ("re-copy onto existing rows (all conflicts)".into(), again),
                ("alternative: per-batch COPY into temp table + INSERT..SELECT ON CONFLICT".into(), staged),
            ],
        );
        anyhow::Ok(())
    }
    .await;
    for db in &names {
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
    }
    result
}

fn copy_text(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("\\N"),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::Text(t) => {
            for ch in t.chars() {
                match ch {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
        }
        other => out.push_str(&format!("{other:?}")),
    }
}

async fn copy_staged(src: &dyn Backend, dst_url: &str) -> Result<Duration> {
    let schema = src.describe("users").await?.context("no users table")?;
    let mut c = sqlx::PgConnection::connect(dst_url).await?;
    sqlx::raw_sql("CREATE TABLE users (id BIGINT PRIMARY KEY, user_id BIGINT, email TEXT, name TEXT, payload TEXT, updated_at TIMESTAMP)")
        .execute(&mut c)
        .await?;
    let mut after: Option<Vec<Value>> = None;
    let start = Instant::now();
    loop {
        let b = src
            .read_batch(&schema, "id", after.as_ref(), &KeyFilter::All, BATCH)
            .await?;
        if b.rows.is_empty() {
            break;
        }
        let mut text = String::new();
        for row in &b.rows {
            for (i, v) in row.iter().enumerate() {
                if i > 0 {
                    text.push('\t');
                }
                copy_text(v, &mut text);
            }
            text.push('\n');
        }
        let mut tx = c.begin().await?;
        sqlx::query("CREATE TEMP TABLE stage (LIKE users) ON COMMIT DROP")
            .execute(&mut *tx)
            .await?;
        let mut copy_in = tx.copy_in_raw("COPY stage FROM STDIN").await?;
        copy_in.send(text.into_bytes()).await?;
        copy_in.finish().await?;
        sqlx::query(
            "INSERT INTO users SELECT * FROM stage ON CONFLICT (id) DO UPDATE SET \
             user_id = EXCLUDED.user_id, email = EXCLUDED.email, name = EXCLUDED.name, \
             payload = EXCLUDED.payload, updated_at = EXCLUDED.updated_at",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        after = b.last;
    }
    Ok(start.elapsed())
}

async fn copy_again(src: &dyn Backend, dst: &dyn Backend) -> Result<Duration> {
    let schema = src.describe("users").await?.context("no users table")?;
    let mut after: Option<Vec<Value>> = None;
    let start = Instant::now();
    loop {
        let b = src
            .read_batch(&schema, "id", after.as_ref(), &KeyFilter::All, BATCH)
            .await?;
        if b.rows.is_empty() {
            break;
        }
        dst.upsert(&schema, &b.rows).await?;
        after = b.last;
    }
    Ok(start.elapsed())
}

async fn mysql(n: u64) -> Result<()> {
    let server =
        std::env::var("MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".into());
    let tag = std::process::id();
    let names = [format!("bench_src_{tag}"), format!("bench_dst_{tag}")];
    let mut admin = sqlx::MySqlConnection::connect(&server).await?;
    for db in &names {
        sqlx::raw_sql(&format!("CREATE DATABASE {db} CHARACTER SET utf8mb4"))
            .execute(&mut admin)
            .await?;
    }
    let result = async {
        let su = with_db(&server, &names[0]);
        let mut c = sqlx::MySqlConnection::connect(&su).await?;
        sqlx::raw_sql(&format!(
            "CREATE TABLE users (id BIGINT PRIMARY KEY, user_id BIGINT, email TEXT, name TEXT, payload TEXT, updated_at TIMESTAMP NULL);
             INSERT INTO users SELECT seq, seq % 1000, CONCAT('user', seq, '@example.com'), CONCAT('name ', seq),
               CONCAT(REPEAT(MD5(seq), 6), seq), TIMESTAMP '2024-01-01 00:00:00' + INTERVAL (seq % 10000000) SECOND
             FROM seq_1_to_{n};"
        ))
        .execute(&mut c)
        .await?;
        let src = connect(&su).await?;
        let dst = connect(&with_db(&server, &names[1])).await?;
        let copied = copy(&*src, &*dst).await?;
        let t = Instant::now();
        sqlx::raw_sql(&format!(
            "CREATE TABLE {0}.bulk LIKE {1}.users; INSERT INTO {0}.bulk SELECT * FROM {1}.users;",
            names[1], names[0]
        ))
        .execute(&mut admin)
        .await?;
        report("mysql", &copied, "INSERT..SELECT across databases", t.elapsed(), &[]);
        anyhow::Ok(())
    }
    .await;
    for db in &names {
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {db}"))
            .execute(&mut admin)
            .await?;
    }
    result
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let mut kinds: Vec<String> = args.collect();
    if kinds.is_empty() {
        kinds = vec!["sqlite".into(), "postgres".into(), "mysql".into()];
    }
    for k in &kinds {
        match k.as_str() {
            "sqlite" => sqlite(n).await?,
            "postgres" => postgres(n).await?,
            "mysql" => mysql(n).await?,
            other => anyhow::bail!("unknown backend {other}"),
        }
    }
    println!("peak RSS {:.0} MB (batches of {BATCH})", peak_rss_mb());
    Ok(())
}
