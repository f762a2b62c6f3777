//! `reshard route --catalog URL --follow`: one answer per stdin line, written before the next
//! line is read, from a router that follows the routing version, so a shell coprocess sees a
//! rollback and a re-cutover without restarting. A key that cannot be routed gets an error
//! line and the rest are still answered; the exit code then is 2.

#[macro_use]
mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::cluster::stderr;
use common::db::Kind;
use common::online::{applied, run, setup, Setup};

/// Identity modulo 2 -> 3: key 44 moves s0 -> s2, key 6 stays at s0.
const MOVED: &str = "44";
const STAYS: &str = "6";

struct Follower {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Follower {
    fn start(s: &Setup) -> Follower {
        let url = s.c.catalog_url();
        let mut child =
            s.c.cmd(&["route", "--catalog", &url, "--follow"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start route --follow");
        let out = BufReader::new(child.stdout.take().unwrap());
        Follower { child, out }
    }

    /// Sends one key and reads its answer while stdin stays open: the answer cannot be one
    /// written at end of input.
    fn ask(&mut self, key: &str) -> Vec<String> {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{key}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        assert!(self.out.read_line(&mut line).unwrap() > 0, "no answer");
        line.trim_end_matches('\n')
            .split('\t')
            .map(str::to_string)
            .collect()
    }

    /// Asks for `key` until its owner is `shard` (bounded); the version of that answer.
    fn until_owner(&mut self, key: &str, shard: &str, when: &str) -> i64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let a = self.ask(key);
            if a[1] == shard {
                return a[2].parse().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "{when}: --follow still answers {a:?}, never {shard}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(mut self) -> (Option<i32>, String) {
        drop(self.child.stdin.take());
        let out = self.child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

async fn follow_answers_each_line_and_follows_the_routing(kind: Kind) {
    let Some(s) = setup(kind, "rfw") else { return };
    let job = applied(&s).await;
    let mut f = Follower::start(&s);
    let a = f.ask(MOVED);
    assert_eq!(a[..2], [MOVED, "s2"], "dual write: {a:?}");
    let v1: i64 = a[2].parse().unwrap();
    assert_eq!(f.ask(STAYS)[..2], [STAYS, "s0"]);
    let bad = f.ask("not-a-number");
    assert_eq!(bad[0], "not-a-number");
    assert!(bad[1].starts_with("error: "), "an error line: {bad:?}");
    // Still answering after a refused line.
    assert_eq!(f.ask(STAYS)[1], "s0");

    let out = run(&s.c, &["rollback", &job]).await;
    assert!(out.status.success(), "rollback: {}", stderr(&out));
    let v2 = f.until_owner(MOVED, "s0", "after rollback");
    assert!(v2 > v1, "a new version after rollback: {v1} -> {v2}");
    let out = run(&s.c, &["resume", &job]).await;
    assert!(out.status.success(), "resume: {}", stderr(&out));
    let v3 = f.until_owner(MOVED, "s2", "after re-cutover");
    assert!(v3 > v2, "a new version after re-cutover: {v2} -> {v3}");

    let (code, err) = f.finish();
    assert_eq!(code, Some(2), "a refused line makes the exit code 2: {err}");
    assert!(err.contains("stdin line 3"), "names the line: {err}");

    let mut clean = Follower::start(&s);
    assert_eq!(clean.ask(MOVED)[1], "s2");
    let (code, err) = clean.finish();
    assert_eq!(code, Some(0), "every line answered: {err}");
}

per_backend_async!(follow_answers_each_line_and_follows_the_routing);

#[test]
fn follow_needs_a_catalog_and_no_key_arguments() {
    let bin = env!("CARGO_BIN_EXE_reshard");
    for args in [
        vec!["route", "--map", "plans/ring-add/new.json", "--follow"],
        vec![
            "route",
            "--catalog",
            "sqlite://nowhere.db",
            "--follow",
            "42",
        ],
    ] {
        let out = std::process::Command::new(bin)
            .args(&args)
            .env_remove("RESHARD_CATALOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}
