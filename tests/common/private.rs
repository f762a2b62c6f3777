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
        if let Some(u) = user {
            let ok = Command::new("chown")
                .arg(format!("{u}:"))
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown {u} {}", dir.path().display());
        }
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
            .arg("--skip-log-bin")
            .arg("--innodb-buffer-pool-size=32M")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
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
