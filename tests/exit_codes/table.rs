//! The tables' harness: a table is a line per case, `CODE  [ENV=VALUE ...] ARGS  # what the
//! code means there`. Words in capitals are filled in per cluster: JOB (its job), PLAN (the
//! setup's plan), MAP and TO (its maps), OTHER (a map that PLAN does not lead to), BAD_JSON (a
//! file that is not JSON), MISSING (a path that does not exist), OUT (a path no case may
//! create), NEW (one a case may), DOWN (a catalog that refuses connections), SHARD_DOWN (a URL
//! of the cluster's backend that cannot be reached), DOWN_MAP and DOWN_PLAN (the map and a plan
//! with shard s1 at SHARD_DOWN). After each code-2 case the catalog's bytes (or its absence),
//! OUT and ./reshard.db are checked unchanged.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use crate::common;
use common::cluster::{modulo, stderr, Cluster};
use common::db::Kind;
use common::online::Setup;

pub const OK: i32 = 0;
pub const FAILED: i32 = 1;
pub const BAD: i32 = 2;
pub const MISMATCH: i32 = 3;
pub const INTERRUPTED: i32 = 130;

/// A catalog server address that refuses connections at once.
pub const DOWN: &str = "postgres://reshard@127.0.0.1:1/catalog";

/// The tables: a line per case, `CODE  [ENV=VALUE ...] ARGS  # what the code means there`.
pub type Table = &'static str;

/// A table's cases: (arguments, code, meaning).
fn rows(table: Table) -> Vec<(Vec<&'static str>, i32, &'static str)> {
    table
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (cmd, means) = l.split_once('#').expect("# what it means");
            let mut words = cmd.split_whitespace();
            let code = words.next().unwrap().parse().expect("a code first");
            (words.collect(), code, means.trim())
        })
        .collect()
}

/// A shard URL of `kind` that cannot be reached: a port nothing listens on, or a SQLite file in
/// a directory that does not exist.
pub fn shard_down(kind: Kind) -> String {
    match kind {
        Kind::Sqlite => "sqlite:///nonexistent-reshard-dir/s.db".to_string(),
        Kind::Postgres => "postgres://postgres@127.0.0.1:1/gone".to_string(),
        Kind::Mysql => "mysql://root@127.0.0.1:1/gone".to_string(),
    }
}

/// The words a table's rows use, filled in.
pub struct Words {
    pub dir: PathBuf,
    pub job: String,
    plan: String,
    shard_down: String,
}

impl Words {
    pub fn of(s: &Setup, job: &str) -> Words {
        let dir = s.c.dir.path().to_path_buf();
        let to =
            s.c.map(&["s0", "s1", "s2"], modulo("identity", &["s0", "s1", "s2"]));
        let other =
            s.c.map(&["s0", "s1", "s2"], modulo("md5", &["s0", "s1", "s2"]));
        std::fs::write(dir.join("from.json"), s.from.to_string()).unwrap();
        std::fs::write(dir.join("to.json"), to.to_string()).unwrap();
        std::fs::write(dir.join("other.json"), other.to_string()).unwrap();
        std::fs::write(dir.join("bad.json"), "{\"shards\": ").unwrap();
        let shard_down = shard_down(s.c.kind);
        let mut down = s.from.clone();
        down["shards"]["s1"] = shard_down.clone().into();
        std::fs::write(dir.join("down.json"), down.to_string()).unwrap();
        let mut down_to = to.clone();
        down_to["shards"]["s1"] = shard_down.clone().into();
        let from = reshard::map::Map::from_value(&down, "from").unwrap();
        let to_map = reshard::map::Map::from_value(&down_to, "to").unwrap();
        let plan = reshard::planner::plan(&from, &to_map).unwrap();
        std::fs::write(dir.join("down-plan.json"), plan.to_json()).unwrap();
        Words {
            dir,
            job: job.to_string(),
            plan: s.plan.clone(),
            shard_down,
        }
    }

    fn fill(&self, word: &str) -> String {
        let file = |f: &str| self.dir.join(f).display().to_string();
        match word {
            "JOB" => self.job.clone(),
            "PLAN" => self.plan.clone(),
            "MAP" => file("from.json"),
            "TO" => file("to.json"),
            "OTHER" => file("other.json"),
            "BAD_JSON" => file("bad.json"),
            "MISSING" => file("missing.json"),
            "OUT" => self.out().display().to_string(),
            "NEW" => file("new.json"),
            "DOWN" => DOWN.to_string(),
            "SHARD_DOWN" => self.shard_down.clone(),
            "DOWN_MAP" => file("down.json"),
            "DOWN_PLAN" => file("down-plan.json"),
            w => w.to_string(),
        }
    }

    fn out(&self) -> PathBuf {
        self.dir.join("out.json")
    }
}

/// What a refused command must leave as it was: the catalog's bytes (after a checkpoint, so
/// that its write-ahead log is in them), or its absence, and the default catalog's absence.
fn written(c: &Cluster, w: &Words) -> (Option<u64>, bool, bool) {
    let path = c.catalog_path();
    let digest = path.exists().then(|| {
        let url = c.catalog_url();
        common::db::run_blocking(move || async move {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        });
        let mut h = DefaultHasher::new();
        std::fs::read(&path).unwrap().hash(&mut h);
        h.finish()
    });
    (digest, w.out().exists(), w.dir.join("reshard.db").exists())
}

/// Runs every row; one failure report listing every row that exited otherwise.
pub fn check(c: &Cluster, w: &Words, table: Table) {
    let mut wrong = Vec::new();
    for (args, code, means) in rows(table) {
        let before = written(c, w);
        let (env, args): (Vec<&str>, Vec<&str>) = args.into_iter().partition(|a| {
            a.split_once('=').is_some_and(|(k, _)| {
                k.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            })
        });
        let args: Vec<String> = args.iter().map(|a| w.fill(a)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = c.cmd(&args);
        for e in &env {
            let (k, v) = e.split_once('=').unwrap();
            cmd.env(k, w.fill(v));
        }
        let out = cmd.output().expect("run reshard");
        let line = format!("{} reshard {}", env.join(" "), args.join(" "));
        if out.status.code() != Some(code) {
            wrong.push(format!(
                "{:?}: {line}: exit {:?}, want {code} ({means})\n    {}",
                c.kind,
                out.status.code(),
                stderr(&out).trim().replace('\n', "\n    ")
            ));
        } else if code == BAD && written(c, w) != before {
            wrong.push(format!(
                "{:?}: {line}: refused ({means}) but wrote: (catalog digest, OUT, \
                 ./reshard.db) went {before:?} -> {:?}",
                c.kind,
                written(c, w)
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

/// The command with its stdout a pipe whose reader has already gone (`reshard status | head`
/// once head has quit): every write fails with EPIPE.
pub fn into_closed_pipe(mut cmd: Command) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    cmd.stdout(writer).stderr(Stdio::piped());
    cmd.output().expect("run reshard")
}
