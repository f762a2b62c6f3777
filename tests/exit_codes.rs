//! The README's exit-code table, true for every command (issue 17): each subcommand is run,
//! through the real binary on SQLite, into every code it can end with.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{stderr, Cluster};
use common::db::Kind;
use common::online::{applied, setup};

const BAD: i32 = 2;
const INTERRUPTED: i32 = 130;

/// Starts `args` in the background, writes `input` to its stdin, waits (bounded) until a line
/// of its stdout or stderr contains `ready`, sends SIGINT; its exit code and output.
fn interrupted(c: &Cluster, args: &[&str], input: &str, ready: &str) -> (Option<i32>, String) {
    let mut child: Child = c
        .cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, input.as_bytes()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let read = |r: Box<dyn std::io::Read + Send>, tx: std::sync::mpsc::Sender<String>| {
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()), tx.clone());
    let err = read(Box::new(child.stderr.take().unwrap()), tx);
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(ready) {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                panic!("{args:?} ended before printing {ready:?}:\n{seen}")
            }
        }
        assert!(
            Instant::now() < deadline,
            "{args:?} never printed {ready:?}:\n{seen}"
        );
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let st = child.wait().unwrap();
    drop(stdin);
    out.join().unwrap();
    err.join().unwrap();
    seen.extend(rx.try_iter().map(|l| l + "\n"));
    (st.code(), seen)
}

/// `throttle` of a job not in the catalog exited 1 ("failed, resumable") where every other
/// command exits 2 for an unknown job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_throttle_of_an_unknown_job_exited_1() {
    let s = setup(Kind::Sqlite, "xrt").unwrap();
    applied(&s).await;
    let out = common::online::run(&s.c, &["throttle", "j-nosuch", "--max-rows-per-sec", "5"]).await;
    assert_eq!(out.status.code(), Some(BAD), "{}", stderr(&out));
    assert!(stderr(&out).contains("j-nosuch"), "{}", stderr(&out));
}

/// `worker` stopped by SIGINT exited 0, as if its work were done (`sync` had the same bug).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_worker_exited_0_on_sigint() {
    let s = setup(Kind::Sqlite, "xrw").unwrap();
    applied(&s).await;
    let (code, seen) =
        tokio::task::block_in_place(|| interrupted(&s.c, &["worker"], "", "reverse sync running"));
    assert_eq!(code, Some(INTERRUPTED), "{seen}");
}

/// `log --follow` and `route --follow` had no signal handler: SIGINT killed them, so they had
/// no exit code (a shell showed 130 for SIGINT but 143 for SIGTERM).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_followers_were_killed_by_sigint() {
    let s = setup(Kind::Sqlite, "xrf").unwrap();
    let job = applied(&s).await;
    for (args, input, ready) in [
        (&["log", job.as_str(), "--follow"][..], "", "dual_write"),
        (&["route", "--follow"][..], "2\n", "s2"),
    ] {
        let (code, seen) = tokio::task::block_in_place(|| interrupted(&s.c, args, input, ready));
        assert_eq!(code, Some(INTERRUPTED), "{args:?}: {seen}");
    }
}
