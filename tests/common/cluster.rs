//! A cluster of test shards on one backend, plans between maps over them, the real binary, and
//! the row-for-row comparison every apply test ends with.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::{json, Value};

use super::db::{Kind, TestDb};
use reshard::map::{Key, Map};

/// Two tables sharded by the same key: `users` (single-column primary key) and `orders`
/// (composite primary key), so that every test also exercises composite keys.
pub const TABLES: [(&str, &str); 2] = [("users", "id"), ("orders", "user_id")];

pub struct Cluster {
    pub kind: Kind,
    pub shards: BTreeMap<String, TestDb>,
    pub dir: tempfile::TempDir,
    /// A catalog elsewhere (a PostgreSQL database) in place of the SQLite one in `dir`.
    pub catalog: Option<String>,
}

pub fn ddl(kind: Kind, table: &str) -> String {
    match (kind, table) {
        (Kind::Sqlite, "users") => {
            "CREATE TABLE users (id INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, score REAL)"
        }
        (Kind::Sqlite, _) => {
            "CREATE TABLE orders (user_id INTEGER NOT NULL, order_id INTEGER NOT NULL, \
             note TEXT, PRIMARY KEY (user_id, order_id))"
        }
        (Kind::Postgres, "users") => {
            "CREATE TABLE users (id bigint NOT NULL PRIMARY KEY, name text NOT NULL, score double precision)"
        }
        (Kind::Postgres, _) => {
            "CREATE TABLE orders (user_id bigint NOT NULL, order_id integer NOT NULL, \
             note varchar(64), PRIMARY KEY (user_id, order_id)); CREATE INDEX orders_note ON orders (note)"
        }
        (Kind::Mysql, "users") => {
            "CREATE TABLE users (id bigint NOT NULL PRIMARY KEY, name varchar(64) NOT NULL, score double)"
        }
        (Kind::Mysql, _) => {
            "CREATE TABLE orders (user_id bigint NOT NULL, order_id int NOT NULL, \
             note varchar(64), PRIMARY KEY (user_id, order_id)); CREATE INDEX orders_note ON orders (note)"
        }
    }
    .to_string()
}

impl Cluster {
    /// `n` empty shards named s0..s{n-1}, or None when the backend is unreachable (skipped).
    pub fn create(kind: Kind, tag: &str, n: usize) -> Option<Cluster> {
        Self::create_on(kind, kind.server_url(), tag, n)
    }

    /// As [`Cluster::create`], with every shard on the server at `server`.
    pub fn create_on(kind: Kind, server: Option<String>, tag: &str, n: usize) -> Option<Cluster> {
        let mut shards = BTreeMap::new();
        for i in 0..n {
            let db = TestDb::create_on(kind, server.clone(), &format!("{tag}{i}"))?;
            shards.insert(format!("s{i}"), db);
        }
        Some(Cluster {
            kind,
            shards,
            dir: tempfile::tempdir().expect("tempdir"),
            catalog: None,
        })
    }

    pub fn db(&self, shard: &str) -> &TestDb {
        &self.shards[shard]
    }

    /// Creates both tables at the given shards.
    pub fn create_tables(&self, shards: &[&str]) {
        for s in shards {
            for (t, _) in TABLES {
                self.db(s).exec(&ddl(self.kind, t));
            }
        }
    }

    /// Creates the plain table `t (id bigint PRIMARY KEY, v varchar(40))` at the given shards:
    /// for tests that move many rows of one table.
    pub fn table_t(&self, shards: &[&str]) {
        for s in shards {
            self.db(s)
                .exec("CREATE TABLE t (id bigint PRIMARY KEY, v varchar(40))");
        }
    }

    /// Inserts rows `(i, 'row i')` of `t` at `shard` for every i of `ids`, 2,000 a statement.
    pub fn fill_t(&self, shard: &str, ids: std::ops::RangeInclusive<i64>) {
        for chunk in ids.collect::<Vec<_>>().chunks(2000) {
            let rows: Vec<String> = chunk.iter().map(|i| format!("({i}, 'row {i}')")).collect();
            self.db(shard)
                .exec(&format!("INSERT INTO t VALUES {}", rows.join(", ")));
        }
    }

    /// A map over the given shards with this partitioning.
    pub fn map(&self, shards: &[&str], partitioning: Value) -> Value {
        let urls: serde_json::Map<String, Value> = shards
            .iter()
            .map(|s| (s.to_string(), json!(self.db(s).url)))
            .collect();
        json!({
            "shards": urls,
            "tables": TABLES.iter().map(|(n, k)| json!({"name": n, "key": k})).collect::<Vec<_>>(),
            "partitioning": partitioning,
        })
    }

    /// Plans `from` -> `to` with the library's planner and writes the plan file.
    pub fn write_plan(&self, name: &str, from: &Value, to: &Value) -> PathBuf {
        let from = Map::from_value(from, "from").expect("from map");
        let to = Map::from_value(to, "to").expect("to map");
        let plan = reshard::planner::plan(&from, &to).expect("plan");
        let path = self.dir.path().join(format!("{name}.json"));
        std::fs::write(&path, plan.to_json()).expect("write plan");
        path
    }

    pub fn catalog_url(&self) -> String {
        match &self.catalog {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.dir.path().join("catalog.db").display()),
        }
    }

    pub fn catalog_path(&self) -> PathBuf {
        self.dir.path().join("catalog.db")
    }

    /// The reshard binary with the cluster's catalog.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_reshard"));
        c.args(args)
            .env("RESHARD_CATALOG", self.catalog_url())
            .env("RESHARD_RETRY_MAX", "2")
            // Fixed batches (`apply --batch-time` 0s), so that a failpoint's Nth batch is the
            // same batch on every machine; tests of adaptive batches pass --batch-time.
            .env("RESHARD_BATCH_TIME", "0s")
            .env_remove("RESHARD_FAILPOINT")
            .current_dir(self.dir.path());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run reshard")
    }

    /// Fills the owners of `from` with `users` keys 1..=n (plus a few negative ones), each with
    /// `orders_per_user` orders.
    pub fn populate(&self, from: &Value, n: i64, orders_per_user: i64) {
        let map = Map::from_value(from, "from").expect("from map");
        let p = map.compile();
        let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut orders: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for id in (-5..=n).filter(|i| *i != 0) {
            let owner = p.owner(&Key::Int(id)).expect("route").to_string();
            users
                .entry(owner.clone())
                .or_default()
                .push(format!("({id}, 'user {id} é', {}.25)", id % 97));
            for o in 1..=orders_per_user {
                orders
                    .entry(owner.clone())
                    .or_default()
                    .push(format!("({id}, {o}, 'order {o} of {id}')"));
            }
        }
        for (table, cols, rows) in [
            ("users", "id, name, score", users),
            ("orders", "user_id, order_id, note", orders),
        ] {
            for (shard, values) in rows {
                for chunk in values.chunks(500) {
                    self.db(&shard).exec(&format!(
                        "INSERT INTO {table} ({cols}) VALUES {}",
                        chunk.join(", ")
                    ));
                }
            }
        }
    }

    /// Every row of a table at a shard, as text, in primary-key order.
    pub fn dump(&self, shard: &str, table: &str) -> Vec<Vec<String>> {
        let order = if table == "users" {
            "id"
        } else {
            "user_id, order_id"
        };
        let cols = if table == "users" {
            "id, name, score"
        } else {
            "user_id, order_id, note"
        };
        self.db(shard)
            .query(&format!("SELECT {cols} FROM {table} ORDER BY {order}"))
    }

    pub fn snapshot(&self) -> BTreeMap<(String, String), Vec<Vec<String>>> {
        let mut out = BTreeMap::new();
        for s in self.shards.keys() {
            for (t, _) in TABLES {
                if self.table_exists(s, t) {
                    out.insert((s.clone(), t.to_string()), self.dump(s, t));
                }
            }
        }
        out
    }

    pub fn table_exists(&self, shard: &str, table: &str) -> bool {
        let q = match self.kind {
            Kind::Sqlite => format!(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '{table}'"
            ),
            _ => format!(
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_name = '{table}' AND table_schema = {}",
                if self.kind == Kind::Postgres {
                    "current_schema()"
                } else {
                    "database()"
                }
            ),
        };
        self.db(shard).scalar(&q) != "0"
    }

    /// After a completed copy: each shard holds exactly what it held before plus the rows whose
    /// key moves to it (old owner under `from`, new owner under `to`), none missing, none
    /// duplicated, none extra. `before` is a snapshot taken before the apply.
    pub fn assert_copied(
        &self,
        before: &BTreeMap<(String, String), Vec<Vec<String>>>,
        from: &Value,
        to: &Value,
    ) {
        let fp = Map::from_value(from, "from").unwrap().compile();
        let tp = Map::from_value(to, "to").unwrap().compile();
        let mut moved_rows = 0usize;
        for (t, _) in TABLES {
            // Every source row, once: rows are only at their old owner before the copy.
            let mut all: Vec<Vec<String>> = Vec::new();
            for ((s, table), rows) in before {
                if table == t {
                    for r in rows {
                        let k = Key::Int(r[0].parse().expect("integer key"));
                        if fp.owner(&k).unwrap() == s {
                            all.push(r.clone());
                        }
                    }
                }
            }
            for s in self.shards.keys() {
                let mut want: Vec<Vec<String>> = before
                    .get(&(s.clone(), t.to_string()))
                    .cloned()
                    .unwrap_or_default();
                for r in &all {
                    let k = Key::Int(r[0].parse().unwrap());
                    let (old, new) = (fp.owner(&k).unwrap(), tp.owner(&k).unwrap());
                    if new == s && old != s {
                        want.push(r.clone());
                        moved_rows += 1;
                    }
                }
                want.sort_by_key(|r| {
                    (
                        r[0].parse::<i64>().unwrap(),
                        r[1].parse::<i64>().unwrap_or(0),
                    )
                });
                let got = if self.table_exists(s, t) {
                    self.dump(s, t)
                } else {
                    Vec::new()
                };
                assert_eq!(
                    got.len(),
                    want.len(),
                    "{:?} shard {s} table {t}: row count",
                    self.kind
                );
                assert_eq!(got, want, "{:?} shard {s} table {t}: rows", self.kind);
            }
        }
        assert!(moved_rows > 0, "the test moved no rows: it could not fail");
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The job id `apply` printed on stdout.
pub fn job_id(o: &Output) -> Option<String> {
    stdout(o)
        .lines()
        .find_map(|l| l.strip_prefix("job ").map(|s| s.trim().to_string()))
}

pub fn modulo(hash: &str, shards: &[&str]) -> Value {
    json!({"kind": "modulo", "hash": hash, "shards": shards})
}

pub fn ring(hash: &str, vnodes: u32, nodes: &[&str]) -> Value {
    json!({"kind": "ring", "hash": hash, "vnodes": vnodes, "nodes": nodes})
}

/// Contiguous integer ranges: `splits` are the boundaries between consecutive shards.
pub fn ranges(shards: &[&str], splits: &[i64]) -> Value {
    let mut out = Vec::new();
    for (i, s) in shards.iter().enumerate() {
        let from = if i == 0 {
            json!(null)
        } else {
            json!(splits[i - 1])
        };
        let to = if i == shards.len() - 1 {
            json!(null)
        } else {
            json!(splits[i])
        };
        out.push(json!({"from": from, "to": to, "shard": s}));
    }
    json!({"kind": "range", "ranges": out})
}
