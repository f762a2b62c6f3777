//! A test's own MariaDB server: `mariadb-install-db` into a temporary directory, `mariadbd` on a
//! free loopback port, stopped (and its files removed) when the value is dropped. For tests that
//! read the server's global counters, which any other test or client of the shared server moves,
//! or that need a server to stop, start or replicate from. The shared servers are never touched.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PrivateMariadb {
    /// `mysql://root@127.0.0.1:PORT/mysql`: give it to `TestDb::create_on`.
    pub url: String,
    pub port: u16,
    child: Child,
    // Dropped after the server stopped (field order is irrelevant: Drop stops it first).
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// mariadbd refuses to run as root without `--user`, and its files must belong to that user.
fn run_as() -> Option<&'static str> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    (String::from_utf8_lossy(&uid.stdout).trim() == "0").then_some("mysql")
}

/// Gives `dir` to the server's user, when it runs as one.
fn owned_by(user: Option<&str>, dir: &Path) {
    if let Some(u) = user {
        let ok = Command::new("chown")
            .arg(format!("{u}:"))
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown {u} {}", dir.display());
    }
}

fn log_tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

impl PrivateMariadb {
    /// Starts one, or returns None (after a `skipped:` line) when the MariaDB binaries are not
    /// installed and `RESHARD_REQUIRE_BACKENDS` is not `1`. Panics, naming its log, when they
    /// are installed and the server does not come up.
    pub fn start() -> Option<PrivateMariadb> {
        Self::start_with(&[])
    }

    /// A primary (binary log, server id 1) and a replica (server id 2) following it over a GTID
    /// channel as root: (primary, replica). Databases created on the primary appear on the
    /// replica.
    pub fn primary_with_replica() -> Option<(PrivateMariadb, PrivateMariadb)> {
        let primary = Self::start_with(&[
            "--server-id=1",
            "--log-bin=mariadb-bin",
            "--binlog-format=ROW",
        ])?;
        let replica = Self::start_with(&["--server-id=2", "--read-only=0"])?;
        let sql = format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='root', \
             MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos",
            primary.port
        );
        super::db::query_url(super::db::Kind::Mysql, &replica.url, &sql);
        super::db::query_url(super::db::Kind::Mysql, &replica.url, "START SLAVE");
        Some((primary, replica))
    }

    /// Starts one with extra server options.
    pub fn start_with(extra: &[&str]) -> Option<PrivateMariadb> {
        let installed = Command::new("mariadbd")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            assert!(
                std::env::var("RESHARD_REQUIRE_BACKENDS").as_deref() != Ok("1"),
                "mariadbd is not installed and RESHARD_REQUIRE_BACKENDS=1"
            );
            eprintln!("skipped: mariadbd not installed (a test's own MariaDB server)");
            return None;
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        let data: PathBuf = dir.path().join("data");
        let user = run_as();
        owned_by(user, dir.path());
        let mut install = Command::new("mariadb-install-db");
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db");
        if let Some(u) = user {
            install.arg(format!("--user={u}"));
        }
        let out = install.output().expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let err_log = dir.path().join("error.log");
        let mut cmd = Command::new("mariadbd");
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--log-error={}", err_log.display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg("--innodb-buffer-pool-size=32M")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if !extra.iter().any(|a| a.starts_with("--log-bin")) {
            cmd.arg("--skip-log-bin");
        }
        if let Some(u) = user {
            cmd.arg(format!("--user={u}"));
        }
        let child = cmd.spawn().expect("start mariadbd");
        let mut me = PrivateMariadb {
            url: format!("mysql://root@127.0.0.1:{port}/mysql"),
            port,
            child,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("mariadbd exited ({status}): {}", log_tail(&err_log));
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd did not listen on {port} within 30 s: {}",
                log_tail(&err_log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(me)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        // SIGTERM is a clean shutdown; the wait is bounded, then SIGKILL.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test's own PostgreSQL primary and streaming replica (`initdb`, `pg_basebackup -R`,
/// `pg_ctl`, as the postgres user when run as root), on free loopback ports, stopped (and their
/// files removed) when dropped.
pub struct PrivatePostgres {
    /// `postgres://postgres@127.0.0.1:PORT/postgres` of the primary: give it to
    /// `TestDb::create_on`; the database then appears on the replica too.
    pub primary_url: String,
    /// The replica's server URL (same form); see [`PrivatePostgres::on_replica`].
    pub replica_url: String,
    bin: PathBuf,
    user: Option<&'static str>,
    dirs: Vec<PathBuf>,
    dir: tempfile::TempDir,
}

fn pg_bindir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("PG_BINDIR") {
        return Some(PathBuf::from(d));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

impl PrivatePostgres {
    fn cmd(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        match self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    fn run(&self, what: &str, mut c: Command) {
        let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start_server(&self, data: &Path, port: u16) {
        let log = data.with_extension("log");
        let mut c = self.cmd("pg_ctl");
        c.arg("-D").arg(data).arg("-l").arg(&log).arg("-w").arg("-o").arg(format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c wal_receiver_status_interval=1s -c shared_preload_libraries=pg_stat_statements",
            self.dir.path().display()
        ));
        c.arg("start");
        self.run("pg_ctl start", c);
    }

    /// Starts both, or returns None (after a `skipped:` line) when PostgreSQL's server binaries
    /// are not installed and `RESHARD_REQUIRE_BACKENDS` is not `1`.
    pub fn primary_with_replica() -> Option<PrivatePostgres> {
        let Some(bin) = pg_bindir() else {
            assert!(
                std::env::var("RESHARD_REQUIRE_BACKENDS").as_deref() != Ok("1"),
                "PostgreSQL's initdb is not installed and RESHARD_REQUIRE_BACKENDS=1"
            );
            eprintln!("skipped: initdb not installed (a test's own PostgreSQL servers)");
            return None;
        };
        let user = run_as().map(|_| "postgres");
        let dir = tempfile::tempdir().expect("temporary directory");
        owned_by(user, dir.path());
        let (pp, rp) = (free_port(), free_port());
        let primary = dir.path().join("primary");
        let replica = dir.path().join("replica");
        let mut me = PrivatePostgres {
            primary_url: format!("postgres://postgres@127.0.0.1:{pp}/postgres"),
            replica_url: format!("postgres://postgres@127.0.0.1:{rp}/postgres"),
            bin,
            user,
            dirs: Vec::new(),
            dir,
        };
        let mut c = me.cmd("initdb");
        c.arg("-D")
            .arg(&primary)
            .args(["-A", "trust", "-U", "postgres", "--no-sync"]);
        me.run("initdb", c);
        me.start_server(&primary, pp);
        me.dirs.push(primary);
        let mut c = me.cmd("pg_basebackup");
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &pp.to_string(),
            "-U",
            "postgres",
            "-R",
            "-X",
            "stream",
        ])
        .arg("-D")
        .arg(&replica);
        me.run("pg_basebackup", c);
        me.start_server(&replica, rp);
        me.dirs.push(replica);
        Some(me)
    }

    /// `url` (a database on the primary) as the same database on the replica.
    pub fn on_replica(&self, url: &str) -> String {
        let db = url.rsplit('/').next().unwrap_or("postgres");
        super::db::with_database(&self.replica_url, db)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // Replica first; immediate: the files go with the directory anyway.
        for d in self.dirs.iter().rev() {
            let mut c = self.cmd("pg_ctl");
            c.arg("-D").arg(d).args(["-m", "immediate", "-w", "stop"]);
            let _ = c.output();
        }
    }
}
